"""`opmap measure`, shipped measurements, staleness, and the planner choosing by measured/estimated cost."""

import json
import textwrap

from opmap.service import load_rules
from opmap.checking.costmodel import DeviceProfile


def test_measure_records_build_accuracy_and_estimated_latency(cli):
    r = cli("measure", "-k", "act/gelu", "--json", "--seeds", "3")
    every = json.loads(r.out)
    rows = {row["strategy_id"]: row for row in every if row["dtype"] == "float32"}
    reduced = {(row["strategy_id"], row["dtype"]): row for row in every if row["dtype"].startswith("compute:")}
    assert reduced[("act/gelu-erf", "compute:fp16")]["max_rel_err"] > 1e-5, "computed in fp16: a real, measured error"
    assert r.code == 0 and set(rows) == {"act/gelu-erf", "act/gelu-tanh", "act/gelu-erf-formula", "act/gelu-erf-as-tanh"}
    for row in rows.values():
        assert row["build_ok"] and row["engine_bytes"] > 0 and row["build_seconds"] > 0
        assert row["latency_ms"] > 0 and row["provenance"] == "estimated" and "H200" in row["device"]
    assert rows["act/gelu-erf"]["max_abs_err"] < 1e-6
    assert 1e-5 < rows["act/gelu-erf-as-tanh"]["max_abs_err"] < 1e-2, "an approximation's error is measured, not assumed"
    assert rows["act/gelu-erf-formula"]["latency_ms"] > rows["act/gelu-erf"]["latency_ms"], "more layers, more launches"


def test_unbuildable_strategies_are_recorded_as_such(cli):
    rows = json.loads(cli("measure", "--strategy", "nonzero/direct", "--backend", "tensorrt_rtx", "--json").out)
    assert rows and not rows[0]["build_ok"] and "no runners" in rows[0]["build_error"] and rows[0]["latency_ms"] is None


def test_shipped_measurements_cover_every_buildable_builtin_with_its_current_source():
    """Run `make measurements` after changing a rule: this fails while the shipped numbers are stale."""
    from importlib import resources

    shipped = json.loads(resources.files("opmap.data").joinpath("measurements.json").read_text())
    fresh = {(m["strategy_id"], m["source_hash"]) for m in shipped}
    ruleset = load_rules(None)
    stale = sorted(s.id for s in ruleset.strategies.values() if s.origin == "builtin" and (s.id, s.source_hash) not in fresh)
    assert not stale, stale


def test_fresh_catalog_plans_with_costs_none_unmeasured(cli, detector_pt2):
    data = json.loads(cli("suggest", detector_pt2, "--json").out)
    chosen = [n["choice"] for n in data["nodes"] if n["choice"]]
    assert chosen and all(c["cost"]["provenance"] == "estimated" and c["cost"]["value"] >= 0 for c in chosen)
    free = {n["choice"]["strategy"] for n in data["nodes"] if n["choice"] and n["choice"]["cost"]["value"] == 0}
    # no layer, or only shape arithmetic TensorRT computes on the host (a size, a sum of sizes): no GPU kernel, no cost
    assert free and free <= {"core/getitem", "core/proven-range", "shape/identity", "core/build-time-check",
                             "shape/sym-size", "shape/sym-arith"}, free
    cost = data["summary"]["cost"]
    assert cost["total"] > 0 and cost["unmeasured"] == 0 and cost["provenance"] == ["estimated"]
    size = json.loads(cli("suggest", detector_pt2, "--json", "--objective", "size").out)
    assert size["summary"]["cost"]["unit"] == "bytes"


def test_measured_cost_decides_and_stale_measurements_are_ignored(cli, tmp_path, detector_pt2):
    rule = tmp_path / "rule_mine.py"
    src = textwrap.dedent('''
        from opmap import strategy, accept, reject
        import torch
        from opmap.rules.activations import _emit_silu

        @strategy("mine/sigmoid-slow", op="aten.sigmoid.default", kind="direct",
                  examples=[accept(torch.sigmoid, torch.randn(64, 64)), reject(torch.sigmoid, torch.randn(2).double())])
        def rule_sigmoid_slow(node):
            assert node.meta("self").dtype == "float32", "float32 only"

        @rule_sigmoid_slow.emit
        def _(ctx, node):  # a deliberately wasteful emission: three layers where one would do (two are copies)
            y = ctx.activation(ctx.input("self"), "SIGMOID")
            for _ in range(2):  # transposed and back: TensorRT fuses a pointwise chain, but a transpose moves data
                layer = ctx.net.add_shuffle(y)
                layer.first_transpose = list(reversed(range(ctx.rank(y))))
                y = ctx.out(layer, "transpose")
            return y
    ''')
    rule.write_text(src)
    assert cli("rules", "add", rule, "--no-measure").code == 0
    unmeasured = json.loads(cli("suggest", detector_pt2, "--json").out)
    sig = next(n for n in unmeasured["nodes"] if n["name"] == "sigmoid")
    assert sig["choice"]["strategy"] == "act/sigmoid", "an unmeasured strategy never beats a measured one"
    assert cli("measure", "--strategy", "mine/sigmoid-slow").code == 0
    measured = json.loads(cli("suggest", detector_pt2, "--json").out)
    sig = next(n for n in measured["nodes"] if n["name"] == "sigmoid")
    assert sig["choice"]["strategy"] == "act/sigmoid" and sig["runner_up"] == "mine/sigmoid-slow"
    assert "lowest cost" in sig["why"]
    rule.write_text(src.replace("three layers", "3 layers"))  # the rule's source changes: its numbers go stale
    assert cli("rules", "add", rule, "--no-measure").code == 0
    costs = json.loads(cli("suggest", detector_pt2, "--json").out)
    sig = next(n for n in costs["nodes"] if n["name"] == "sigmoid")
    assert sig["choice"]["strategy"] == "act/sigmoid" and sig["runner_up"] == "mine/sigmoid-slow"
    assert "vs mine/sigmoid-slow (unmeasured)" in sig["why"], "the edited rule's old numbers are stale, so ignored"


def test_cost_model_uses_the_profile():
    profile = DeviceProfile.load()
    assert "H200" in profile.card  # the shipped default: measured with the precision and fusion terms
    small = profile.predict("ELEMENTWISE", 0, 1e3)
    big = profile.predict("ELEMENTWISE", 0, 1e9)
    assert small >= profile.launch_ms and big > 10 * small
    assert profile.predict("MATRIX", 2e12, 1e6) > profile.predict("MATRIX", 2e11, 1e6)


def test_bad_measure_input(cli, tmp_path):
    assert "no strategy matches" in cli("measure", "-k", "no-such-strategy").err
    bad = tmp_path / "profile.json"
    bad.write_text("{}")
    r = cli("measure", "--profile", bad, "-k", "act/relu")
    assert r.code == 2 and "not a device profile" in r.err


def test_an_expansion_costs_its_planned_sub_graph(cli, tmp_path):
    """PyTorch's decomposition is costed as the sum of its sub-plan, so a fused layer with a lower total wins."""
    import torch
    import torch.nn.functional as F

    from tests.conftest import export_to

    class Attn(torch.nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    x = torch.randn(1, 2, 8, 16)
    model = export_to(tmp_path / "attn.pt2", Attn(), x, x, x)
    data = json.loads(cli("suggest", model, "--json").out)
    (node,) = data["nodes"]
    assert node["choice"]["strategy"] == "attn/fused"
    costs = {v["strategy"]: v for v in node["verdicts"]}
    assert costs["torch/decomposition"]["outcome"] == "APPLIES"
    assert "lowest cost" in node["why"]


def test_dtype_bucket(cli):
    rows = json.loads(cli("measure", "--strategy", "act/relu", "--dtype", "float16", "--json").out)
    assert rows and all(r["dtype"] == "float16" and r["build_ok"] for r in rows)
    assert cli("measure", "--strategy", "act/relu", "--dtype", "float64").code == 2


def test_measure_at_a_models_own_shapes(cli, detector_pt2):
    rows = json.loads(cli("measure", "--model", detector_pt2, "-k", "conv/conv or mask/static-bound", "--json").out)
    buckets = {(r["strategy_id"], r["shape_bucket"]) for r in rows if r["dtype"] == "float32" and r["build_ok"]}
    assert ("conv/conv", "1x3x32x32,16x3x3x3,16") in buckets, buckets  # the detector's first convolution
    assert any(s == "mask/static-bound" and b.startswith("1x16x16x4") for s, b in buckets)
    assert all(r["build_ok"] is not False for r in rows if r["dtype"] == "float32"), "a rule rejecting a node is skipped, not failed"
