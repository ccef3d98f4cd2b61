"""The non-zero family's decisions: the four strategies on each backend, and the masked rewrite's pattern rule."""

import torch

from opmap.app import load_rules
from opmap.building.backend import profile
from opmap.loading.capture import capture_callable
from opmap.checking.examples import candidates_of
from opmap.planning.planner import Planner

RULESET = load_rules(None)


def plan(fn, *inputs, backend="tensorrt_rtx"):
    graph = capture_callable(fn, *inputs).graph
    planner = Planner(RULESET, candidates_of(RULESET), backend=profile(backend))
    return {n.node.name: n for n in planner.plan(graph).nodes}


def verdicts(node_plan):
    return {v.strategy: v for v in node_plan.verdicts}


def test_four_strategies_judged_on_each_backend():
    for backend, direct_outcome in (("tensorrt_rtx", "REJECTED"), ("tensorrt", "APPLIES")):
        v = verdicts(plan(torch.nonzero, torch.rand(3, 4) > 0.5, backend=backend)["nonzero"])
        assert {"nonzero/direct", "nonzero/static-bound", "nonzero/plugin", "mask/masked-reduce"} <= set(v)
        assert v["nonzero/direct"].outcome == direct_outcome
        assert v["nonzero/static-bound"].outcome == "APPLIES"
        assert v["nonzero/plugin"].outcome == "REJECTED"
        assert v["mask/masked-reduce"].outcome == "REJECTED"  # the indices themselves are the output
    rtx = verdicts(plan(torch.nonzero, torch.rand(3, 4) > 0.5)["nonzero"])
    assert "no runners" in rtx["nonzero/direct"].reason and "probe.ok" in rtx["nonzero/direct"].evidence


def test_masked_rewrite_chosen_when_every_consumer_reduces():
    p = plan(lambda x, m: x[m].sum() + x[m].amax(), torch.randn(3, 4), torch.rand(3, 4) > 0.5)
    index = next(n for name, n in p.items() if n.node.op == "aten.index.Tensor")
    assert index.choice.strategy == "mask/masked-reduce"
    summed = next(n for n in p.values() if n.node.op == "aten.sum.default")
    assert summed.choice.strategy == "reduce/sum", "the reduction accepts a masked producer"


def test_masked_rewrite_refused_where_a_consumer_is_not_a_reduction():
    p = plan(lambda x, m: (x[m] * 2).sum(), torch.randn(3, 4), torch.rand(3, 4) > 0.5)
    index = next(n for n in p.values() if n.node.op == "aten.index.Tensor")
    v = verdicts(index)["mask/masked-reduce"]
    assert v.outcome == "REJECTED" and "is not a reduction" in v.reason
    assert index.choice.strategy == "mask/static-bound"
    total = next(n for n in p.values() if n.node.op == "aten.sum.default")
    assert not total.mapped, "a sum over a padded layout would count the padding"
    assert "not as the masked rewrite" in total.why


def test_masked_rewrite_refused_when_a_reduction_keeps_the_selected_dim():
    p = plan(lambda x, m: x[m].sum(-1), torch.randn(3, 4, 2), torch.rand(3, 4) > 0.5)
    index = next(n for n in p.values() if n.node.op == "aten.index.Tensor")
    assert "keeps the selected dim" in verdicts(index)["mask/masked-reduce"].reason
