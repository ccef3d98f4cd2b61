"""examples/custom_op: a torch.library op TensorRT cannot know, a user rule that decomposes it, from a fresh catalog —
`rules test`, `rules add`, `suggest`, `build`, `verify` (CLI and API), as the README walks through it."""

import json
import os
import subprocess
import sys

import opmap
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "custom_op"
RULE = EXAMPLE / "rule_soft_clip.py"


def _fresh_process(db_url, *args):
    """The CLI in a new process: nothing imported before opmap loads the model (as a user runs it)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPMAP_DB": db_url}
    return subprocess.run([sys.executable, "-m", "opmap.cli", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_custom_op_walkthrough(cli, db_url, squash, tmp_path):
    tested = cli("rules", "test", RULE, "--json")
    assert tested.code == 0
    assert [(r["example"], r["passed"]) for r in json.loads(tested.out)] == [
        ("accept[0]", True), ("accept[1]", True), ("reject[0]", True), ("reject[1]", True)]

    before = _fresh_process(db_url, "suggest", squash)  # the op is unknown to a process that has not imported it
    assert before.returncode == 2 and "mylib.soft_clip" in before.stderr and "a rule file in the catalog" in before.stderr

    added = cli("rules", "add", RULE)
    assert added.code == 0 and "mine/soft-clip" in added.out and "4 of 4 example builds succeeded" in added.out

    after = _fresh_process(db_url, "suggest", squash, "--json")  # the stored rule imports the op's module
    assert after.returncode == 0, after.stderr
    (node,) = [n for n in json.loads(after.stdout)["nodes"] if n["op"] == "mylib.soft_clip.default"]
    assert node["choice"]["strategy"] == "mine/soft-clip" and node["choice"]["kind"] == "decompose"
    plugin = next(v for v in node["verdicts"] if v["strategy"] == "custom/plugin")
    assert plugin["outcome"] == "REJECTED" and "cannot add plugin layers" in plugin["reason"]

    built = cli("build", squash, "-o", tmp_path / "squash.engine", "--json")
    assert built.code == 0, built.err
    sidecar = json.loads(built.out)
    assert sidecar["backend"]["name"] == "tensorrt_rtx" and (tmp_path / "squash.engine").stat().st_size > 0
    layers = [name for name, where in sidecar["layers"].items() if where["strategy"] == "mine/soft-clip"]
    assert any("/div" in n for n in layers) and any("/tanh" in n for n in layers) and any("/prod" in n for n in layers)

    verified = cli("verify", squash, "--json")
    assert verified.code == 0 and json.loads(verified.out)["ok"]

    report = opmap.verify(squash, db=db_url)  # the API: at the dynamic batch's min, an interior point and its max
    assert report.ok and [(p.point, p.shape) for p in report.points] == [("min", "x=1x16"), ("opt", "x=8x16"), ("max", "x=64x16")]
