"""The emit context is public API: a rule pack that emits through the documented ctx helpers only (reduce, gather,
scatter, concat, where, const, elementwise, symbolic sizes) builds for real on TensorRT-RTX and agrees with PyTorch."""

import sys
import textwrap

import pytest
import torch

from opmap.planning.collect import load_builtin, load_packs
from opmap.checking.examples import conformance, dynamic_conformance, run_examples

PACK = '''
import torch
from opmap import accept, reject, strategy

def _sum(x):
    return x.sum(dim=(0, -1), keepdim=True)

@strategy("acme/sum", op="aten.sum.dim_IntList", kind="direct",
          examples=[accept(_sum, torch.randn(3, 4, 5)), reject(_sum, torch.randn(3, 4, 5, dtype=torch.float64), match="float64")])
def rule_sum(node):
    assert node.meta("self").dtype != "float64", "TensorRT has no float64"

@rule_sum.emit
def _(ctx, node):
    return ctx.reduce(ctx.input("self"), "SUM", node.arg("dim"), node.arg("keepdim", False))

def _select(x, i):
    return x.index_select(1, i)

@strategy("acme/index-select", op="aten.index_select.default", kind="direct",
          examples=[accept(_select, torch.randn(3, 6), torch.tensor([5, 0, 2]))], no_reject="every index_select maps")
def rule_index_select(node):
    pass

@rule_index_select.emit
def _(ctx, node):
    return ctx.gather(ctx.input("self"), ctx.input("index"), node.arg("dim"))

def _gather(x, i):
    return torch.gather(x, 1, i)

@strategy("acme/gather", op="aten.gather.default", kind="direct",
          examples=[accept(_gather, torch.randn(3, 4), torch.tensor([[0, 3], [1, 1], [2, 0]]))], no_reject="-")
def rule_gather(node):
    pass

@rule_gather.emit
def _(ctx, node):
    return ctx.gather(ctx.input("self"), ctx.input("index"), node.arg("dim"), mode="ELEMENT")

def _scatter(x, i, v):
    return x.scatter(1, i, v)

@strategy("acme/scatter", op="aten.scatter.src", kind="direct",
          examples=[accept(_scatter, torch.zeros(2, 4), torch.tensor([[3, 0], [1, 2]]), torch.randn(2, 2))], no_reject="-")
def rule_scatter(node):
    pass

@rule_scatter.emit
def _(ctx, node):
    return ctx.scatter(ctx.input("self"), ctx.input("index"), ctx.input("src"), node.arg("dim"))

def _cat(a, b):
    return torch.cat([a, b], -1)

@strategy("acme/cat", op="aten.cat.default", kind="direct",
          examples=[accept(_cat, torch.randn(2, 3), torch.randn(2, 5))], no_reject="-")
def rule_cat(node):
    pass

@rule_cat.emit
def _(ctx, node):
    return ctx.concat([ctx.tensor(r) for r in node.arg("tensors")], node.arg("dim", 0))

def _where(c, a):
    return torch.where(c, a, 0.5)

@strategy("acme/where", op="aten.where.ScalarOther", kind="direct",
          examples=[accept(_where, torch.rand(2, 3) > 0.5, torch.randn(2, 3))], no_reject="-")
def rule_where(node):
    pass

@rule_where.emit
def _(ctx, node):
    a = ctx.input("self")
    return ctx.where(ctx.input("condition"), a, ctx.const(node.arg("other"), ctx.dtype(a)))

def _arange_like(x):
    return x + torch.arange(x.shape[0], dtype=x.dtype).unsqueeze(-1)

@strategy("acme/add-arange", op="aten.add.Tensor", kind="direct",
          examples=[accept(_arange_like, torch.randn(4, 3))], no_reject="-")
def rule_add(node):
    pass

@rule_add.emit
def _(ctx, node):
    return ctx.elementwise(ctx.operand("self"), ctx.operand("other", like=ctx.input("self")), "SUM")
'''


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "acme_emit.py").write_text(textwrap.dedent(PACK))
    info = site / "acme-emit-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-emit\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[opmap.rules]\nacme-emit = acme_emit\n")
    sys.path.insert(0, str(site))
    try:
        rules = load_builtin()
        load_packs(rules)
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("acme_emit", None)
    assert not [p for p in rules.problems if "acme" in p], rules.problems
    return rules


def _pack(ruleset):
    return [s for s in ruleset.strategies.values() if s.origin == "pack:acme-emit"]


def test_pack_examples_pass(ruleset):
    strategies = _pack(ruleset)
    assert len(strategies) == 7
    results = run_examples(strategies, ruleset, frozenset(op for s in ruleset.strategies.values() for op in s.ops))
    assert results and all(r.passed for r in results), [r.message for r in results if not r.passed]


@pytest.mark.parametrize("sid", ["acme/sum", "acme/index-select", "acme/gather", "acme/scatter", "acme/cat", "acme/where",
                                 "acme/add-arange"])
def test_pack_strategy_builds_and_verifies(ruleset, sid):
    strat = ruleset.strategies[sid]
    (example,) = [e for e in strat.examples if e.expect == "accept"]
    report, built = conformance(strat, example, ruleset)
    assert built.engine and any(v["strategy"] == sid for v in built.layer_map.values())
    assert report.ok, [o.to_dict() for o in report.outputs]


@pytest.mark.parametrize("sid", ["acme/sum", "acme/cat", "acme/where"])
def test_pack_strategy_under_dynamic_shapes(ruleset, sid):
    strat = ruleset.strategies[sid]
    (example,) = [e for e in strat.examples if e.expect == "accept"]
    result = dynamic_conformance(strat, example, ruleset)
    assert result.dynamic_dims > 0 and result.reports, (result.verdict, result.unmapped)
    assert all(r.ok for r in result.reports.values()), {k: [o.to_dict() for o in r.outputs] for k, r in result.reports.items()}


def test_an_emitter_adding_an_unshapeable_layer_is_named_at_its_own_node():
    """A layer TensorRT cannot shape (LESS on bools) used to surface at the next node ('Could not get tensor shape' in
    a transpose after attention); the builder names the node whose strategy added it, as an internal error (exit 3)."""
    import dataclasses

    import torch

    from opmap.service import load_rules
    from opmap.loading.capture import capture_callable

    from opmap.errors import EmitterBug
    from opmap.checking.examples import judged_build
    from opmap.planning.strategy import accept, strategy

    @strategy("planted/lt-on-bool", op="aten.lt.Tensor", kind="direct", examples=[accept(torch.lt, torch.randn(2), torch.randn(2))])
    def rule_planted(node):
        """Accepts every lt."""

    rule_planted.emit(lambda ctx, node: ctx.out(ctx.net.add_elementwise(ctx.input("self"), ctx.input("other"),
                                                                         ctx.trt.ElementWiseOperation.LESS)))
    rules = load_rules(None)
    ruleset = dataclasses.replace(rules, strategies={**rules.strategies, rule_planted.id: rule_planted})
    a, b = torch.rand(2, 3) > 0.5, torch.rand(2, 3) > 0.5
    captured = capture_callable(lambda a, b: (a < b).transpose(0, 1), a, b)
    with pytest.raises(EmitterBug, match=r"node lt .* via planted/lt-on-bool: TensorRT cannot infer the shape") as info:
        judged_build(rule_planted, captured, dict(zip(captured.graph.inputs, (a, b))), ruleset)
    assert info.value.exit_code == 3
    assert "ElementWise" in str(info.value) or "elementwise" in str(info.value).lower(), info.value  # TensorRT's own reason
