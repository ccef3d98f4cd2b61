"""In-place and out= overloads are planned as their functional op, by one rule (opmap/loading/inplace.py), whenever the
mutated tensor is an intermediate nobody reads again; a real export, a real build, the interpreter against PyTorch."""

import torch

from opmap.app import load_rules
from opmap.building.backend import profile
from opmap.building.builder import build_network, serialize
from opmap.loading.capture import capture_callable
from opmap.checking.examples import candidates_of
from opmap.loading.inplace import functional_op
from opmap.planning.planner import Planner
from opmap.checking.verify import verify_built

RULESET = load_rules(None)


class Router(torch.nn.Module):
    """A mixture-of-experts router: top-2 gates renormalised in place (``w /= w.sum(...)``)."""

    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(8, 4)

    def forward(self, x):
        w, idx = torch.topk(self.gate(x).softmax(-1), 2, -1)
        w /= w.sum(-1, keepdim=True)
        y = x * 2
        y.add_(1)
        y.mul_(w[:, :1])
        return w, idx, y


def _plan(fn, *inputs):
    captured = capture_callable(fn, *inputs)
    planner = Planner(RULESET, candidates_of(RULESET), backend=profile("tensorrt_rtx"), require_emit=True)
    plan = planner.plan(captured.graph)
    planner.judge.close()
    return captured, plan


def test_functional_twins():
    assert functional_op("aten.div_.Tensor") == ("aten.div.Tensor", ("self",))
    assert functional_op("aten.add.out") == ("aten.add.Tensor", ("out",))
    assert functional_op("aten.index_put_.default") == ("aten.index_put.default", ("self",))
    assert functional_op("aten.div.Tensor") is None


def test_router_with_inplace_div_builds_and_verifies():
    model = Router().eval()
    x = torch.randn(5, 8)
    captured, plan = _plan(model, x)
    by_op = {n.node.op: n for n in plan.nodes}
    assert {"aten.div_.Tensor", "aten.add_.Tensor", "aten.mul_.Tensor"} <= set(by_op), "torch.export keeps the in-place ops"
    div = by_op["aten.div_.Tensor"]
    assert div.choice.strategy == "ew/div" and div.as_node.op == "aten.div.Tensor"
    assert "planned as aten.div.Tensor" in div.why
    built = serialize(build_network(plan, captured.program, RULESET.strategies))
    assert built.engine
    assert any(v["node"] == div.node.name for v in built.layer_map.values()), "the div_ node emitted layers"
    report = verify_built(built, captured.program, {next(iter(captured.graph.inputs)): x})
    assert report.ok and len(report.outputs) == 3, [o.to_dict() for o in report.outputs]


def test_out_overload_builds_and_verifies():
    def fn(a):
        out = torch.empty(2, 3)
        torch.add(a, 1, out=out)
        return out * 2

    a = torch.randn(2, 3)
    captured, plan = _plan(fn, a)
    add = next(n for n in plan.nodes if n.node.op == "aten.add.out")
    assert add.choice.strategy == "ew/add" and add.as_node.op == "aten.add.Tensor" and "out" not in add.as_node.args
    built = serialize(build_network(plan, captured.program, RULESET.strategies))
    assert verify_built(built, captured.program, {next(iter(captured.graph.inputs)): a}).ok


def test_mutating_an_input_or_a_view_is_functionalized_at_capture():
    """Issue 19: instead of a refusal, capture functionalizes the program: the input becomes state in, state out
    (tests/test_state.py builds and verifies such programs), the write into a view a select_scatter."""
    def on_input(a):
        return a.add_(1)

    def on_view(a):
        y = a * 2
        y[:, 0].mul_(3)
        return y

    for fn, op in ((on_input, "aten.add.Tensor"), (on_view, "aten.select_scatter.default")):
        captured, plan = _plan(fn, torch.randn(2, 3))
        assert not any(n.node.op.split(".")[1].endswith("_") for n in plan.nodes)
        assert any(n.node.op == op and n.choice is not None for n in plan.nodes)
    assert [s.kind for s in capture_callable(on_input, torch.randn(2, 3)).graph.state] == ["USER_INPUT_MUTATION"]


def test_a_tensor_read_after_its_mutation_is_refused():
    """torch.export rebinds later reads to the mutating node; a graph that still reads the old name is refused."""
    from opmap.loading.graph import Graph, Node, Ref, TensorMeta
    from opmap.loading.inplace import as_functional

    m = TensorMeta((2, 3), "float32")
    nodes = {"mul": Node("mul", "aten.mul.Tensor", {"self": Ref("x"), "other": 2}, [m], users=["add_", "neg"]),
             "add_": Node("add_", "aten.add_.Tensor", {"self": Ref("mul"), "other": 1, "alpha": 1}, [m]),
             "neg": Node("neg", "aten.neg.default", {"self": Ref("mul")}, [m])}
    graph = Graph("g", nodes, {"x": m}, {}, [Ref("add_"), Ref("neg")], {})
    node, why = as_functional(graph["add_"], graph)
    assert node is None and "neg read(s) again" in why
    del nodes["neg"], graph.outputs[1]
    nodes["mul"].users.remove("neg")
    node, why = as_functional(graph["add_"], graph)
    assert node.op == "aten.add.Tensor" and node.arg("self") == Ref("mul")
