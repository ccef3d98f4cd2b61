"""Mixture-of-experts models as transformers exports them: their experts run through transformers' own custom op
``transformers::grouped_mm_fallback``, which opmap loads (by importing the installed provider it knows) and maps."""

import json
import subprocess
import sys

import pytest
import torch

from examples.zoo import export_arch
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def mixtral_pt2(tmp_path_factory):
    program, _ = export_arch("mixtral", keyword=True, dynamic=True)
    path = tmp_path_factory.mktemp("moe") / "mixtral.pt2"
    torch.export.save(program, str(path))
    return path


def test_a_fresh_process_loads_the_archive_through_the_known_provider(mixtral_pt2):
    """Nothing of transformers is imported up front; the archive's namespace picks the provider from opmap's table."""
    code = ("import sys; from opmap.loading.capture import capture; g = capture(sys.argv[1]).graph; "
            "print(sum(n.op == 'transformers.grouped_mm_fallback.default' for n in g))")
    r = subprocess.run([sys.executable, "-c", code, str(mixtral_pt2)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[-1]) > 0


def test_mixtral_by_keyword_with_dynamic_dims_verifies_at_three_points(cli, mixtral_pt2):
    r = cli("suggest", mixtral_pt2, "--json", "--no-record")
    plan = json.loads(r.out)
    assert r.code == 0, [n["why"] for n in plan["nodes"] if n["choice"] is None]
    grouped = [n for n in plan["nodes"] if n["op"] == "transformers.grouped_mm_fallback.default"]
    assert grouped and all(n["choice"]["strategy"] == "moe/grouped-mm" for n in grouped)
    r = cli("verify", mixtral_pt2, "--json")
    assert r.code == 0, r.err or r.out[-2000:]
    report = json.loads(r.out)
    assert [p["point"] for p in report["points"]] == ["min", "opt", "max"]
    assert all(p["ok"] and p["compared"] == p["expected"] > 0 for p in report["points"])
