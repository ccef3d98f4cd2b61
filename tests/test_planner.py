"""The choice policy: applicability, accuracy budget, measured costs, tie-breaks, no mapping."""

import textwrap

import torch

from opmap.building.backend import profile
from opmap.loading.capture import capture_callable
from opmap.planning.collect import RuleSet, load_builtin, load_source
from opmap.planning.fixtures import Settings
from opmap.planning.planner import Cost, Planner

SRC = textwrap.dedent('''
    from opmap import strategy
    @strategy("p/direct", op="aten.relu.default", kind="direct")
    def rule_direct(node): pass
    @strategy("p/decomp", op="aten.relu.default", kind="decompose")
    def rule_decomp(node): pass
    @strategy("p/approx", op="aten.relu.default", kind="approximate")
    def rule_approx(node): pass
    @strategy("p/never", op="aten.relu.default", kind="direct")
    def rule_never(node):
        assert False, "never applies"
    @strategy("p/any", op="*", kind="decompose")
    def rule_any(node):
        assert node.op == "aten.relu.default", "only relu"
''')


def setup(costs=None, tolerance=1e-3, origin="builtin"):
    rs = RuleSet()
    rs.add(load_source(SRC, "/v/rule_p.py", origin=origin))
    candidates = {}
    for s in rs.strategies.values():
        for op in s.ops:
            candidates.setdefault(op, []).append(s.id)
    planner = Planner(rs, candidates, backend=profile("tensorrt_rtx"), settings=Settings(tolerance=tolerance), costs=costs or {})
    graph = capture_callable(lambda x: torch.relu(x) * 2, torch.randn(2, 3)).graph
    return planner.plan(graph)


def relu(plan):
    return next(n for n in plan.nodes if n.node.op == "aten.relu.default")


def test_unmeasured_tie_break_by_kind_and_every_candidate_judged():
    plan = setup()
    r = relu(plan)
    # direct ranks before decompose; two decompose strategies tie-break on their ids
    assert r.choice.strategy == "p/direct" and r.runner_up.strategy == "p/any"
    assert r.cost.value is None and str(r.cost) == "unmeasured"
    assert {v.strategy for v in r.verdicts} == {"p/direct", "p/decomp", "p/approx", "p/never", "p/any"}
    assert "p/approx" in r.set_aside and "unmeasured" in r.set_aside["p/approx"]
    assert "tie-break" in r.why


def test_measured_cost_beats_kind_and_unmeasured():
    plan = setup(costs={"p/decomp": Cost(0.5, provenance="estimated"), "p/direct": Cost(0.9, provenance="measured-runtime")})
    r = relu(plan)
    assert r.choice.strategy == "p/decomp" and r.runner_up.strategy == "p/direct"
    assert r.cost.provenance == "estimated" and "lowest cost" in r.why


def test_approximate_only_within_the_budget():
    costs = {"p/approx": Cost(0.01, max_rel_err=5e-4), "p/direct": Cost(0.9)}
    assert relu(setup(costs=costs, tolerance=1e-3)).choice.strategy == "p/approx"
    r = relu(setup(costs=costs, tolerance=1e-4))
    assert r.choice.strategy == "p/direct" and "exceeds the tolerance" in r.set_aside["p/approx"]


def test_no_mapping_names_every_reason():
    plan = setup()
    mul = next(n for n in plan.nodes if n.node.op == "aten.mul.Tensor")
    assert not mul.mapped and "p/any: only relu" in mul.why
    assert not plan.complete and plan.summary()["no mapping"] == 1
    assert plan.summary_line() == "2 nodes: 1 direct, 1 no mapping"


def test_user_rule_wins_a_tie_with_a_builtin():
    rs = load_builtin()
    rs.add(load_source(SRC, "/v/rule_p.py", origin="user"))
    candidates = {}
    for s in rs.strategies.values():
        for op in s.ops:
            candidates.setdefault(op, []).append(s.id)
    graph = capture_callable(lambda x: torch.relu(x), torch.randn(2, 3)).graph
    plan = Planner(rs, candidates, backend=profile("tensorrt_rtx")).plan(graph)
    r = plan.nodes[0]
    assert r.choice.strategy == "p/direct" and r.runner_up.strategy == "act/relu"
    assert "user rule" in r.why


def test_catalog_row_without_code_is_an_error_verdict():
    rs = RuleSet()
    planner = Planner(rs, {"aten.relu.default": ["gone/pack-rule"]}, backend=profile("tensorrt_rtx"))
    plan = planner.plan(capture_callable(torch.relu, torch.randn(2)).graph)
    v = plan.nodes[0].verdicts[0]
    assert v.outcome == "ERROR" and "code is not installed" in v.reason and not plan.nodes[0].mapped


def test_the_cost_of_the_bucket_nearest_the_node_size_decides():
    rs = RuleSet()
    rs.add(load_source(SRC, "/v/rule_p.py"))
    candidates = {"aten.relu.default": ["p/direct", "p/decomp"]}
    buckets = {"p/direct": [(10, Cost(1.0)), (100_000, Cost(9.0))], "p/decomp": [(10, Cost(2.0)), (100_000, Cost(3.0))]}
    chosen = {}
    for n in (8, 300):
        graph = capture_callable(torch.relu, torch.randn(n, n)).graph
        plan = Planner(rs, candidates, backend=profile("tensorrt_rtx"), bucket_costs=buckets).plan(graph)
        chosen[n] = plan.nodes[0].choice.strategy
        assert "lowest cost" in plan.nodes[0].why
    assert chosen == {8: "p/direct", 300: "p/decomp"}


def test_a_precision_whose_measurement_failed_keeps_fp32_and_says_so():
    rs = RuleSet()
    rs.add(load_source(SRC, "/v/rule_p.py"))
    graph = capture_callable(lambda x: torch.relu(x) * 2, torch.randn(2, 3)).graph
    failed = {("p/direct", "fp16"): [(6, float("inf"))]}  # how a failed build or check of the fp16 measurement is stored
    plan = Planner(rs, {"aten.relu.default": ["p/direct"]}, backend=profile("tensorrt_rtx"),
                   settings=Settings(precision="fp16", tolerance=1e-2), precision_errors=failed).plan(graph)
    assert relu(plan).precision is None
    assert "p/direct's fp16 measurement failed" in relu(plan).precision_why, relu(plan).precision_why


def test_a_precision_that_failed_at_any_measured_size_keeps_fp32():
    """A failure at one bucket vetoes the precision at every size: the nearest bucket's success says nothing about the
    shape that failed (a 3-D average pool's fp16 check failed while its 2-D buckets measured fine, and `build` placed
    it in fp16 anyway)."""
    rs = RuleSet()
    rs.add(load_source(SRC, "/v/rule_p.py"))
    graph = capture_callable(lambda x: torch.relu(x) * 2, torch.randn(2, 3)).graph
    mixed = {("p/direct", "fp16"): [(6, 1e-4), (100_000, float("inf"))]}
    plan = Planner(rs, {"aten.relu.default": ["p/direct"]}, backend=profile("tensorrt_rtx"),
                   settings=Settings(precision="fp16", tolerance=1e-2), precision_errors=mixed).plan(graph)
    assert relu(plan).precision is None
    assert "p/direct's fp16 measurement failed" in relu(plan).precision_why, relu(plan).precision_why
