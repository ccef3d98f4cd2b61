"""``aten.sym_storage_offset``: torch.export keeps it for an input that is a view with an offset, exported with
``Dim.AUTO``; the engine answers 0 (its inputs are dense buffers), and verification feeds PyTorch the same buffer."""

import torch

from opmap.app import load_rules
from opmap.building.backend import profile
from opmap.building.builder import build_network, serialize
from opmap.loading.capture import capture_callable, graph_from_program
from opmap.checking.examples import candidates_of
from opmap.planning.planner import Planner
from opmap.checking.verify import engine_buffer, verify_built

RULESET = load_rules()
OP = "aten.sym_storage_offset.default"


def _export_offset_of_view_input():
    base = torch.randn(7, 4)
    auto = torch.export.Dim.AUTO(max=64)
    return capture_callable(lambda a: a * 2 + a.storage_offset(), base[1:], dynamic_shapes=({0: auto, 1: auto},)), base[1:]


def _plan(graph):
    planner = Planner(RULESET, candidates_of(RULESET), backend=profile("tensorrt_rtx"), require_emit=True)
    plan = planner.plan(graph)
    planner.judge.close()
    return plan, {p.node.op: p for p in plan.nodes}


def test_a_real_export_keeps_the_query_and_the_engine_answers_the_dense_buffers_offset():
    captured, view = _export_offset_of_view_input()
    assert OP in captured.graph.ops(), "torch.export leaves the query on a view input's symbolic offset"
    plan, by_op = _plan(captured.graph)
    assert by_op[OP].choice.strategy == "shape/storage-offset"
    built = serialize(build_network(plan, captured.program, RULESET.strategies))
    assert built.engine
    report = verify_built(built, captured.program, {next(iter(captured.graph.inputs)): view})
    assert report.ok and report.compared == report.expected == 1


def test_verification_feeds_the_buffer_an_engine_receives():
    base = torch.arange(12.0).reshape(3, 4)
    assert engine_buffer(base) is base
    for view in (base[1:], base.t()):
        dense = engine_buffer(view)
        assert dense.storage_offset() == 0 and dense.is_contiguous() and torch.equal(dense, view)


def test_the_offset_of_a_tensor_computed_in_the_graph_is_refused():
    """torch.export never emits this (a view's offset inside the graph is computed from sizes), so the graph is the
    real export edited with torch.fx: the query reads a slice of the input instead of the input."""
    captured, _ = _export_offset_of_view_input()
    fx_graph = captured.program.graph
    query = next(n for n in fx_graph.nodes if n.target == torch.ops.aten.sym_storage_offset.default)
    source = query.args[0]
    with fx_graph.inserting_before(query):
        sliced = fx_graph.call_function(torch.ops.aten.slice.Tensor, (source, 0, 1))
    sliced.meta["val"] = source.meta["val"][1:]
    query.args = (sliced,)
    plan, by_op = _plan(graph_from_program(captured.program))
    offset = by_op[OP]
    assert offset.choice is None
    assert "computed inside the graph" in offset.why and "slice" in offset.why
