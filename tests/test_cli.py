"""The CLI end to end on real exported models, with a real SQLite catalog per test."""

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import export_to
from tests.helpers import TwoLayer

PREFER_DECOMPOSED_SIGMOID = textwrap.dedent('''
    from opmap import strategy, accept, reject
    import torch

    @strategy("mine/sigmoid-exp", op="aten.sigmoid.default", kind="direct",
              examples=[accept(torch.sigmoid, torch.randn(2, 3)), reject(torch.sigmoid, torch.randn(2, 3).half())])
    def rule_sigmoid_exp(node):
        """1 / (1 + exp(-x)) in one fused layer of my own."""
        meta = node.meta("self")
        assert meta.dtype == "float32", f"only float32, got {meta.dtype}"

    @rule_sigmoid_exp.emit
    def _(ctx, node):
        return ctx.activation(ctx.input("self"), "SIGMOID")
''')

BROKEN = textwrap.dedent('''
    from opmap import strategy

    @strategy("mine/broken", op="aten.relu.default", kind="direct")
    def rule_broken(node):
        return node.args["no-such-arg"]
''')


def test_suggest_table_summary_and_exit(cli, detector_pt2):
    r = cli("suggest", detector_pt2)
    assert r.code == 0, r.err
    assert "nonzero/static-bound" in r.out and "mask/static-bound" in r.out and "fmp/exact-samples" in r.out
    assert "27 nodes: 21 direct, 6 decompose" in r.out
    assert "changed output contracts" in r.out and "padded to the static bound" in r.out
    assert r.err == ""


def test_suggest_json_schema(cli, detector_pt2):
    r = cli("suggest", detector_pt2, "--json")
    data = json.loads(r.out)
    assert set(data) >= {"model", "backend", "run_id", "summary", "nodes"}
    assert data["summary"]["nodes"] == len(data["nodes"]) == 27
    for node in data["nodes"]:
        assert set(node) >= {"name", "op", "choice", "verdicts"}
        assert node["choice"] is None or set(node["choice"]) >= {"strategy", "kind", "cost"}
        for v in node["verdicts"]:
            assert set(v) >= {"strategy", "rule", "outcome", "reason"}
    nz = next(n for n in data["nodes"] if n["name"] == "nonzero")
    outcomes = {v["strategy"]: v["outcome"] for v in nz["verdicts"]}
    assert outcomes["nonzero/direct"] == "REJECTED" and outcomes["nonzero/plugin"] == "REJECTED"
    assert outcomes["nonzero/static-bound"] == "APPLIES"
    assert nz["choice"]["cost"]["provenance"] == "estimated" and nz["choice"]["cost"]["value"] > 0  # shipped measurements


def test_suggest_reasons_per_backend(cli, detector_pt2):
    rtx = cli("suggest", detector_pt2, "-r", "--backend", "tensorrt_rtx")
    assert "nonzero/direct: tensorrt_rtx cannot build non_zero" in rtx.out and "no runners" in rtx.out
    assert "cannot add plugin layers" in rtx.out
    trt = json.loads(cli("suggest", detector_pt2, "--json", "--backend", "tensorrt").out)
    nz = next(n for n in trt["nodes"] if n["name"] == "nonzero")
    assert nz["choice"]["strategy"] == "nonzero/direct", "full TensorRT has a NonZero runner (unverified here, not refused)"
    plugin = next(v for v in nz["verdicts"] if v["strategy"] == "nonzero/plugin")
    assert "no NonZero IPluginV3" in plugin["reason"]


def test_no_mapping_exits_1_with_every_reason(cli, tmp_path):
    model = export_to(tmp_path / "det.pt2", _Unmapped(), torch.randn(4, 4))
    r = cli("suggest", model)
    assert r.code == 1 and "1 nodes: 1 no mapping" in r.out
    data = json.loads(cli("suggest", model, "--json").out)
    (node,) = data["nodes"]
    assert node["choice"] is None
    assert "the decomposition yields aten._linalg_det.default, which no catalog strategy maps" in node["why"]


class _Unmapped(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.det(x)


def test_user_rule_changes_the_decision_and_audit_diff_explains(cli, detector_pt2, tmp_path):
    first = json.loads(cli("suggest", detector_pt2, "--json").out)
    rule = tmp_path / "rule_mine.py"
    rule.write_text(PREFER_DECOMPOSED_SIGMOID)
    added = cli("rules", "add", rule)
    assert added.code == 0 and "mine/sigmoid-exp" in added.out
    assert "measured 1 strateg" in added.out  # so that it competes on cost at once
    listed = cli("rules", "list", "-m", "user")
    assert "mine/sigmoid-exp" in listed.out and "1 strategies selected" in listed.out
    second = json.loads(cli("suggest", detector_pt2, "--json").out)
    sig = next(n for n in second["nodes"] if n["name"] == "sigmoid")
    assert sig["choice"]["strategy"] == "mine/sigmoid-exp" and sig["runner_up"] == "act/sigmoid"
    diff = cli("audit", first["run_id"], "--diff", second["run_id"])
    assert diff.code == 0
    assert "sigmoid (aten.sigmoid.default): act/sigmoid -> mine/sigmoid-exp" in diff.out
    assert "+ mine/sigmoid-exp (mine/sigmoid-exp@1): APPLIES" in diff.out
    assert "user rule" in diff.out
    djson = json.loads(cli("audit", first["run_id"], "--diff", second["run_id"], "--json").out)
    assert [c["node"] for c in djson["changes"] if c["change"] == "choice"] == ["sigmoid"]
    assert djson["catalog_version"][1] == djson["catalog_version"][0] + 1


def test_raising_rule_is_an_error_and_the_run_completes(cli, detector_pt2, tmp_path):
    rule = tmp_path / "rule_broken.py"
    rule.write_text(BROKEN)
    assert cli("rules", "add", rule).code == 0
    r = cli("suggest", detector_pt2, "-r")
    assert r.code == 0, "the broken rule is isolated; relu still maps through act/relu"
    assert "ERROR mine/broken: KeyError" in r.out and "(2 rule errors)" in r.out
    run = json.loads(cli("audit", "--json").out)[0]["run_id"]
    node = cli("audit", run, "--node", "relu")
    assert "mine/broken" in node.out and "ERROR" in node.out and "rule_broken.py:6" in node.out


def test_audit_node_shows_expression_and_evidence(cli, detector_pt2):
    data = json.loads(cli("suggest", detector_pt2, "--json").out)
    out = cli("audit", data["run_id"], "--node", "index_1").out
    assert "consumer argmax (aten.argmax.default) is not a reduction" in out
    assert "assert user.op in REDUCTIONS" in out and "user.op = 'aten.argmax.default'" in out
    as_json = json.loads(cli("audit", data["run_id"], "--node", "index_1", "--json").out)
    assert as_json["nodes"][0]["name"] == "index_1"
    listing = cli("audit")
    assert str(data["run_id"]) in listing.out and "detector.pt2" in listing.out


def test_rules_test_runs_examples(cli, tmp_path):
    rule = tmp_path / "rule_mine.py"
    rule.write_text(PREFER_DECOMPOSED_SIGMOID)
    ok = cli("rules", "test", rule)
    assert ok.code == 0 and "2 passed, 0 failed" in ok.out
    rule.write_text(PREFER_DECOMPOSED_SIGMOID.replace('reject(torch.sigmoid, torch.randn(2, 3).half())',
                                                      'reject(torch.sigmoid, torch.randn(2, 3))'))
    bad = cli("rules", "test", rule)
    assert bad.code == 1 and "FAILED mine/sigmoid-exp reject[0]: expected a rejection, got APPLIES" in bad.out
    builtin = cli("rules", "test", "-k", "nonzero")
    assert builtin.code == 0 and "0 failed" in builtin.out


@pytest.mark.parametrize(
    "args, message",
    [
        (("suggest", "{missing}"), "no such file"),
        (("suggest", "{garbage}"), "not a model file"),
        (("suggest", "{weights}"), "state dict"),
        (("suggest", "{pickled}"), "--unsafe-pickle"),
        (("suggest", "{model}", "--backend", "onnx"), "unknown backend 'onnx'"),
        (("suggest", "{model}", "--input-shape", "x"), "bad --input-shape"),
        (("suggest", "{model}", "--tolerance", "-1"), "--tolerance must be"),
        (("rules", "add", "{garbage}"), "rule files are Python files"),
        (("rules", "add", "{syntax}"), "syntax error"),
        (("rules", "add", "{clash}"), "already a builtin strategy"),
        (("rules", "remove", "act/relu"), "only user strategies can be removed"),
        (("audit", "999"), "no run 999"),
        (("audit", "--node", "x"), "need a RUN id"),
        (("rules", "list", "-k", "a and ("), "bad -k expression"),
        (("suggest",), "Missing argument"),
        (("frobnicate",), "No such command"),
    ],
)
def test_bad_input_one_line_exit_2_catalog_intact(cli, tmp_path, db_url, args, message):
    files = {
        "missing": tmp_path / "missing.pt2",
        "garbage": tmp_path / "garbage.pt2",
        "weights": tmp_path / "weights.pt",
        "pickled": tmp_path / "pickled.pt",
        "model": export_to(tmp_path / "model.pt2", TwoLayer(), torch.randn(2, 4)),
        "syntax": tmp_path / "rule_syntax.py",
        "clash": tmp_path / "rule_clash.py",
    }
    files["garbage"].write_bytes(b"\x00garbage" * 50)
    torch.save(TwoLayer().state_dict(), files["weights"])
    torch.save(TwoLayer(), files["pickled"])
    files["syntax"].write_text("def rule_x(:\n")
    files["clash"].write_text(PREFER_DECOMPOSED_SIGMOID.replace("mine/sigmoid-exp", "act/relu"))
    assert cli("suggest", files["model"]).code == 0
    db = db_url.removeprefix("sqlite:///")
    before = sqlite3.connect(db).execute("select count(*) from strategies").fetchone()[0]
    r = cli(*[a.format(**files) for a in args])
    assert r.code == 2, (r.out, r.err)
    assert message in r.err
    assert r.err.strip().count("\n") == 0 and "Traceback" not in r.err
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from strategies").fetchone()[0] == before
    assert con.execute("select count(*) from runs").fetchone()[0] == 1


def test_console_script_end_to_end(tmp_path, detector_pt2):
    """The installed `opmap` command, as a user runs it."""
    exe = sys.executable.replace("python", "opmap")
    proc = subprocess.run([exe, "--db", str(tmp_path / "c.db"), "suggest", str(detector_pt2)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "27 nodes: 21 direct, 6 decompose" in proc.stdout
    proc = subprocess.run([exe, "--db", str(tmp_path / "c.db"), "suggest", str(tmp_path / "nope.pt2")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and proc.stderr.count("\n") == 1


def test_suggest_html_picture(cli, detector_pt2, tmp_path):
    page = tmp_path / "plan.html"
    r = cli("suggest", detector_pt2, "--html", page)
    assert r.code == 0
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "21 direct" in html
    assert html.count("<tr>") == 28  # header + one row per node
    assert "nonzero/static-bound" in html and "no runners that implement it" in html
    bad = cli("suggest", detector_pt2, "--html", tmp_path / "missing-dir" / "plan.html")
    assert bad.code == 2 and "cannot write" in bad.err


class _WithCustomOp(torch.nn.Module):
    def forward(self, x):
        from opmap.rules.custom import custom_call

        return custom_call(x)


def test_custom_op_says_what_the_user_must_provide(cli, tmp_path):
    model = export_to(tmp_path / "custom.pt2", _WithCustomOp(), torch.randn(2, 3))
    for backend, words in (("tensorrt_rtx", "cannot add plugin layers"), ("tensorrt", "register_plugin('opmap_examples::scale'")):
        data = json.loads(cli("suggest", model, "--json", "--backend", backend).out)
        (node,) = [n for n in data["nodes"] if n["op"] == "opmap_examples.scale.default"]
        assert node["choice"] is None and words in node["why"]


def test_version(cli):
    import opmap

    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"opmap {opmap.__version__}"
