"""Judging once per equivalence class is sound: every verdict, choice and sub-plan is the same as judging every node.

A fixed sample of models (the whole zoo: ``make bench-speed`` sweeps it); each is planned twice, with the verdict
memo and without, and compared field by field, sub-plans of expansions included.
"""

import itertools
import json
import textwrap
import warnings

import pytest
import torch

from opmap.app import make_plan, open_catalog
from opmap.building.backend import profile
from opmap.loading.capture import Captured, capture_callable
from opmap.planning.collect import RuleSet, load_source
from opmap.planning.fixtures import Settings
from opmap.planning.equivalence import CONTEXT, NodeView, Watch, node_key
from opmap.loading.graph import Ref
from opmap.planning.planner import Planner


def plan_fields(plan) -> list:
    """Everything a plan says about its nodes, recursively (the audit trail and the choice)."""
    rows = []
    for np_ in plan.nodes:
        rows.append({
            "node": np_.node.name, "op": np_.node.op,
            "verdicts": [v.to_dict() for v in np_.verdicts],
            "choice": np_.choice.to_dict() if np_.choice else None,
            "runner_up": np_.runner_up.to_dict() if np_.runner_up else None,
            "cost": np_.cost.to_dict(), "why": np_.why, "set_aside": dict(np_.set_aside), "contract": np_.contract,
            "precision": (np_.precision, np_.precision_why),
            "sub": plan_fields(np_.subplan) if np_.subplan else None,
            "sub_inputs": [str(r) for r in np_.sub_inputs],
        })
    return rows


def _program(name):
    if name == "detector":
        from examples.detector import export_detector

        return export_detector()
    if name == "selector":
        from tests.helpers import Selector

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(Selector(), (torch.randn(4, 5),), strict=False)
    pytest.importorskip("transformers")
    from examples.zoo import export_transformer

    return export_transformer(name)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return open_catalog(f"sqlite:///{tmp_path_factory.mktemp('eq') / 'catalog.db'}")


@pytest.mark.parametrize("name", ["detector", "bert", "llama", "selector"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_memo_changes_no_verdict(name, precision, catalog):
    from opmap.loading.capture import graph_from_program

    cat, ruleset = catalog
    program = _program(name)
    captured = Captured(graph=graph_from_program(program), program=program, kind="export", sha256="-")
    settings = Settings(precision=precision)
    with_memo = make_plan(captured, cat, ruleset, profile("tensorrt_rtx"), settings, cache=True)
    without = make_plan(captured, cat, ruleset, profile("tensorrt_rtx"), settings, cache=False)
    a, b = plan_fields(with_memo), plan_fields(without)
    assert len(a) == len(b) == len(captured.graph)
    for x, y in zip(a, b):  # compared as JSON text: a NaN cost is equal to itself there
        assert json.dumps(x, sort_keys=True, default=str) == json.dumps(y, sort_keys=True, default=str), x["node"]


SRC = textwrap.dedent('''
    from opmap import strategy
    @strategy("q/local", op="aten.relu.default", kind="direct")
    def rule_local(node):
        assert node.out.dtype == "float32", "float only"
    @strategy("q/ctx", op="aten.relu.default", kind="decompose")
    def rule_ctx(node, graph):
        assert not graph.is_output(node), f"{node.name} is a graph output"
    @strategy("q/join", op="aten.relu.default", kind="plugin")
    def rule_join(node):  # text built in C: the watch does not see the name, the second judgement does
        assert False, ", ".join([node.arg("self").node])
''')


def _relu_chain(source, path, n):
    """The rules of ``source`` and the graph of ``n`` identical relu blocks."""
    rs = RuleSet()
    rs.add(load_source(source, path))

    def blocks(x):
        for _ in range(n):
            x = torch.relu(x * 2)
        return x

    return rs, capture_callable(blocks, torch.randn(2, 3)).graph


def test_repeated_blocks_are_judged_once_and_context_is_not_shared():
    """Six identical relus: a node-local rule is judged once; a rule that reads the graph is judged per node."""
    rs, graph = _relu_chain(SRC, "/v/rule_q.py", 6)
    planner = Planner(rs, {"aten.relu.default": ["q/local", "q/ctx", "q/join"]}, backend=profile("tensorrt_rtx"))
    plan = planner.plan(graph)
    memo = planner.memo.verdicts
    assert len(memo) == 3
    by_rule = {k[1]: v for k, v in memo.items()}
    assert by_rule["q/local"] is not CONTEXT and by_rule["q/local"][0].applies and by_rule["q/local"][1]
    assert by_rule["q/ctx"] is CONTEXT and by_rule["q/join"] is CONTEXT
    relus = [n for n in plan.nodes if n.node.op == "aten.relu.default"]
    ctx = [next(v for v in n.verdicts if v.strategy == "q/ctx") for n in relus]
    assert [v.applies for v in ctx] == [True] * 5 + [False]
    assert ctx[-1].reason == f"{relus[-1].node.name} is a graph output"
    assert len({id(n.verdicts[0]) for n in relus}) == 6  # a copy per node
    joined = [next(v for v in n.verdicts if v.strategy == "q/join").reason for n in relus]
    assert joined == [str(n.node.args["self"]) for n in relus] and len(set(joined)) == 6


def test_reading_context_marks_the_verdict():
    graph = capture_callable(lambda x: torch.relu(x) + x, torch.randn(2, 3)).graph
    node = next(n for n in graph if n.op == "aten.add.Tensor")
    watch = Watch()
    view = NodeView(node, watch)
    assert view.op == "aten.add.Tensor" and view.meta("self") is not None and isinstance(view, type(node))
    assert not watch.dirty
    ref = view.arg("self")
    assert isinstance(ref, Ref) and not watch.dirty  # holding a keyed argument reads nothing
    _ = f"{ref.node}"  # formatting its producer's name does
    assert watch.dirty
    watch.dirty = False
    _ = view.name
    assert watch.dirty
    assert node_key(node, graph) == node_key(node, graph) and CONTEXT is not None


LOCAL = textwrap.dedent('''
    from opmap import strategy
    @strategy("r/one", op="aten.relu.default", kind="direct")
    def rule_one(node):
        assert node.out.dtype == "float32", "float only"
    @strategy("r/two", op="aten.relu.default", kind="decompose")
    def rule_two(node):
        pass
''')


def test_a_class_of_served_verdicts_is_chosen_once(monkeypatch):
    """Ten identical relus with node-local rules: the first three are chosen in full, the rest reuse that
    choice with their own verdict copies; a node pinned by name is chosen in full and gets its pin."""
    rs, graph = _relu_chain(LOCAL, "/v/rule_r.py", 10)
    relus = [n.name for n in graph if n.op == "aten.relu.default"]
    calls = []
    choose = Planner.choose
    monkeypatch.setattr(Planner, "choose", lambda self, node, verdicts: calls.append(node.name) or choose(self, node, verdicts))
    planner = Planner(rs, {"aten.relu.default": ["r/one", "r/two"]}, backend=profile("tensorrt_rtx"), pins={relus[6]: "r/two"})
    plan = planner.plan(graph)
    chosen = [n for n in plan.nodes if n.node.op == "aten.relu.default"]
    # judged in full twice (the second confirms the memo), chosen in full once more (the class's template), then pinned
    assert [c for c in calls if c in relus] == relus[:3] + [relus[6]]
    assert [n.choice.strategy for n in chosen] == ["r/one"] * 6 + ["r/two"] + ["r/one"] * 3
    for n in chosen:  # each node's choice is its own verdict object, as the audit trail records it
        assert n.choice is next(v for v in n.verdicts if v.strategy == n.choice.strategy)
        assert n.node.op == "aten.relu.default" and n.why
    assert len({id(n.choice) for n in chosen}) == 10


REJECTING = textwrap.dedent('''
    from opmap import strategy
    @strategy("z/big", op="aten.relu.default", kind="direct")
    def rule_big(node):
        assert node.out.rank > 5 and node is not None, "needs rank > 5"
    @strategy("z/any", op="aten.relu.default", kind="decompose")
    def rule_any(node):
        pass
''')


def test_a_rejection_naming_the_node_is_still_judged_once_per_class():
    """A failed assert's evidence holds its sub-expressions' values but not the node (or graph) itself: the audit record
    names the node already, and its name would make every rejection that mentions ``node`` differ per node."""
    rs, graph = _relu_chain(REJECTING, "/v/rule_z.py", 6)
    planner = Planner(rs, {"aten.relu.default": ["z/big", "z/any"]}, backend=profile("tensorrt_rtx"))
    plan = planner.plan(graph)
    big = [v for n in plan.nodes if n.node.op == "aten.relu.default" for v in n.verdicts if v.strategy == "z/big"]
    assert len(big) == 6 and all(v.reason == "needs rank > 5" and v.evidence["node.out.rank"] == "2" and "node" not in v.evidence
                                 for v in big)
    assert CONTEXT not in planner.memo.verdicts.values()


def test_only_the_pinned_node_says_it_was_pinned():
    """A pin names one node; other nodes that choose the same strategy on their own merits say why they did."""
    rs, graph = _relu_chain(LOCAL, "/v/rule_r.py", 4)
    relus = [n.name for n in graph if n.op == "aten.relu.default"]
    plan = Planner(rs, {"aten.relu.default": ["r/one", "r/two"]}, backend=profile("tensorrt_rtx"), pins={relus[2]: "r/one"}).plan(graph)
    whys = {n.node.name: n.why for n in plan.nodes if n.node.op == "aten.relu.default"}
    assert whys.pop(relus[2]) == "pinned by the user"
    assert whys and all(w.startswith("tie-break") for w in whys.values()), whys


def test_planning_reads_the_catalog_as_the_mapped_objects_hold_it(catalog):
    """Plain rows for speed: the same candidates and measurements as the ORM objects, and the collector left as found."""
    import gc

    cat, ruleset = catalog
    mapped = {}
    for row in cat.strategy_rows():
        for link in row.ops:
            mapped.setdefault(link.op.name, []).append(row.id)
    assert cat.candidates_by_op() == mapped and "aten.relu.default" in mapped
    columns = [c.name for c in cat.measurements("tensorrt_rtx")[0].__table__.columns]
    as_rows = [tuple(getattr(m, c) for c in columns) for m in cat.measurement_rows("tensorrt_rtx")]
    as_objects = [tuple(getattr(m, c) for c in columns) for m in cat.measurements("tensorrt_rtx")]
    assert len(as_rows) > 100 and json.dumps(as_rows, default=str) == json.dumps(as_objects, default=str)
    captured = capture_callable(lambda x: torch.relu(x) * 2, torch.randn(2, 3))
    before = gc.get_freeze_count()
    plan = make_plan(captured, cat, ruleset, profile("tensorrt_rtx"), Settings())
    assert plan.complete and gc.get_freeze_count() == before


def test_in_place_nodes_of_one_class_keep_their_own_notes(catalog):
    """In-place ops on intermediates are planned as their functional op, with a note naming what each mutates: the
    class's shared choice must not carry one node's note to the next (Falcon's attention bias adds, found by the
    zoo sweep)."""
    cat, ruleset = catalog

    def blocks(x):
        for _ in range(4):
            x = torch.tanh((x * 2).add_(1))
        return x

    captured = capture_callable(blocks, torch.randn(2, 3))
    assert sum(n.op == "aten.add_.Tensor" for n in captured.graph) == 4
    with_memo, without = (plan_fields(make_plan(captured, cat, ruleset, profile("tensorrt_rtx"), Settings(), cache=c)) for c in (True, False))
    assert json.dumps(with_memo, sort_keys=True, default=str) == json.dumps(without, sort_keys=True, default=str)
    notes = [n["why"] for n in with_memo if n["op"] == "aten.add_.Tensor"]
    assert len(set(notes)) == 4 and all("planned as aten.add.Tensor" in w for w in notes)


class _Permuted(torch.nn.Module):
    """Six addcmuls of one class (same metas) fed by the same tensors in all six orders: only PyTorch's
    decomposition serves addcmul, so each is an expansion; the first three are judged and chosen in full, the
    rest take the class's choice (see test_a_class_of_served_verdicts_is_chosen_once)."""

    def forward(self, x, y, z):
        out = x
        for a, b, c in itertools.permutations((x, y, z)):
            out = out * torch.addcmul(a, b, c, value=0.5)
        return out


def test_a_keyed_expansion_is_planned_once_per_class_and_fed_by_each_nodes_own_arguments(catalog, cli, tmp_path):
    cat, ruleset = catalog
    inputs = tuple(torch.randn(3, 5) for _ in range(3))
    program = torch.export.export(_Permuted(), inputs)
    captured = Captured(graph=capture_callable(_Permuted(), *inputs).graph, program=program, kind="export", sha256="-")
    plans = {memo: make_plan(captured, cat, ruleset, profile("tensorrt_rtx"), Settings(), cache=memo) for memo in (True, False)}
    assert plan_fields(plans[True]) == plan_fields(plans[False])
    expanded = [n for n in plans[True].nodes if n.node.op == "aten.addcmul.default"]
    assert [n.choice.strategy for n in expanded] == ["torch/decomposition"] * 6
    assert len({id(n.subplan) for n in expanded}) == 1  # one class: one sub-graph, planned once
    orders = [[r.node for r in n.sub_inputs] for n in expanded]
    assert orders == [[r.node for r in n.node.tensor_refs()] for n in expanded] and len({tuple(o) for o in orders}) == 6
    path = tmp_path / "permuted.pt2"
    torch.export.save(program, str(path))
    r = cli("verify", path, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["ok"] and report["compared"] == report["expected"] == 1, report  # a wrong order changes the value
