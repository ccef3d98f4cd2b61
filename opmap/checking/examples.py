"""Running each rule's own accept/reject examples (``opmap rules test`` and the pytest plugin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from opmap.building.backend import profile
from opmap.loading.capture import capture_callable
from opmap.planning.collect import RuleSet
from opmap.planning.fixtures import Settings
from opmap.loading.graph import Graph, Node
from opmap.planning.judge import Judge, Verdict
from opmap.planning.strategy import WILDCARD, Example, Outcome, Strategy
from opmap.errors import OpmapError


@dataclass
class ExampleResult:
    strategy: str
    label: str  # "accept[0]", "reject[1]", "examples"
    passed: bool
    message: str
    verdict: Verdict | None = None


def find_node(graph: Graph, strat: Strategy, name: str | None = None) -> Node:
    if name is not None:
        if name not in graph.nodes:
            raise OpmapError(f"example names node {name!r}, but the exported graph has {', '.join(graph.nodes)}")
        return graph.nodes[name]
    for node in graph:
        if node.op in strat.ops:
            return node
    for node in graph:  # a wildcard strategy: the first op that is not plumbing
        if WILDCARD in strat.ops and not node.op.startswith(("operator.", "builtins.")):
            return node
    raise OpmapError(f"the example's exported graph has no {' or '.join(strat.ops)} node (it has {', '.join(sorted(graph.ops()))})")


def judge_example(strat: Strategy, ex: Example, ruleset: RuleSet, catalog_ops: frozenset) -> tuple[Verdict, Node]:
    graph = capture_example(ex).graph
    node = find_node(graph, strat, ex.node)
    settings = Settings(**ex.settings)
    judge = Judge(base={"settings": settings, "backend": profile(ex.backend), "catalog_ops": catalog_ops},
                  builtin_fixtures=ruleset.fixtures)
    try:
        with judge.graph_scope(graph):
            return judge.judge(strat, node), node
    finally:
        judge.close()


def check_example(strat: Strategy, ex: Example, verdict: Verdict) -> tuple[bool, str]:
    if ex.expect == "accept":
        if verdict.outcome is Outcome.APPLIES:
            return True, "applies"
        return False, f"expected APPLIES, got {verdict.outcome}: {verdict.reason}"
    if verdict.outcome not in (Outcome.REJECTED, Outcome.NOT_APPLICABLE):
        return False, f"expected a rejection, got {verdict.outcome}" + (f": {verdict.reason}" if verdict.reason else "")
    if ex.match and ex.match.lower() not in (verdict.reason or "").lower():
        return False, f"rejected, but the reason {verdict.reason!r} does not mention {ex.match!r}"
    return True, f"{verdict.outcome}: {verdict.reason}"


def run_examples(
    strategies: Iterable[Strategy],
    ruleset: RuleSet,
    catalog_ops: frozenset | None = None,
    on_done: Callable[[Strategy], None] | None = None,
) -> list[ExampleResult]:
    if catalog_ops is None:
        catalog_ops = frozenset(op for s in ruleset.strategies.values() for op in s.ops if op != WILDCARD)
    results: list[ExampleResult] = []
    for strat in strategies:
        accepts = [e for e in strat.examples if e.expect == "accept"]
        rejects = [e for e in strat.examples if e.expect == "reject"]
        if not accepts and not strat.no_accept:
            results.append(ExampleResult(strat.id, "examples", False, "no accept example (or a no_accept reason)"))
        if not rejects and not strat.no_reject:
            results.append(ExampleResult(strat.id, "examples", False, "no reject example (or a no_reject reason)"))
        counters = {"accept": 0, "reject": 0}
        for ex in strat.examples:
            label = f"{ex.expect}[{counters[ex.expect]}]"
            counters[ex.expect] += 1
            try:
                verdict, _ = judge_example(strat, ex, ruleset, catalog_ops)
            except OpmapError as exc:
                results.append(ExampleResult(strat.id, label, False, str(exc)))
                continue
            ok, message = check_example(strat, ex, verdict)
            results.append(ExampleResult(strat.id, label, ok, message, verdict))
        if on_done:
            on_done(strat)
    return results


def candidates_of(ruleset: RuleSet) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in ruleset.strategies.values():
        for op in s.ops:
            out.setdefault(op, []).append(s.id)
    return out


def conformance(strat: Strategy, ex: Example, ruleset: RuleSet, backend: str = "tensorrt_rtx", serialize_engine: bool = True,
                api_of: str | None = None, node_precision: str | None = None):
    """Build the example's graph with ``strat`` pinned on its node (a real build), interpret it and compare
    with PyTorch. Returns (verify Report, Built).

    ``api_of``/``serialize_engine=False``: judge for ``backend`` but define the network with another installed
    module's API and skip the engine build — for strategies only full TensorRT can build (the network API is
    shared), so at least their network definition is proven by the interpreter."""
    from opmap.building.builder import build_network, serialize
    from opmap.planning.planner import Planner
    from opmap.checking.verify import verify_built

    captured = capture_example(ex)
    graph = captured.graph
    node = find_node(graph, strat, ex.node)
    judged_as = profile(backend)
    planner = Planner(ruleset, candidates_of(ruleset), backend=judged_as, settings=Settings(**ex.settings),
                      pins={node.name: strat.id}, require_emit=True)
    plan = planner.plan(graph)
    planner.judge.close()
    if node_precision is not None:  # "fp16"/"bf16": the pinned node computes so (inputs and outputs stay as exported)
        for np_ in plan.nodes:
            if np_.node.name == node.name:
                np_.precision = node_precision
    if api_of is not None:
        from opmap.building.backend import BackendProfile, import_backend

        plan.backend = BackendProfile(name=judged_as.name, module=import_backend(api_of))
    built = build_network(plan, captured.program, ruleset.strategies)
    if serialize_engine:
        built = serialize(built)
    tensors = [x for x in ex.inputs if hasattr(x, "shape")]
    inputs = dict(zip(graph.inputs, tensors))
    return verify_built(built, captured.program, inputs), built


# -- every dim dynamic -------------------------------------------------------------------------------------------
def all_dynamic(ex: Example, scale: int = 4) -> Any:
    """dynamic_shapes making every dim of every tensor input of the example dynamic (:func:`every_dim_dynamic`)."""
    return every_dim_dynamic(ex.inputs, scale)


def every_dim_dynamic(inputs: Any, scale: int = 4) -> list:
    """dynamic_shapes making every dim of every tensor input dynamic (``Dim.AUTO``: torch.export keeps a dim static
    where the program needs it, e.g. sizes of 0/1 or dims tied to a weight), each bounded by ``scale`` × its size."""
    import torch

    return [{i: torch.export.Dim.AUTO(min=1, max=max(scale * n, 8)) for i, n in enumerate(x.shape)}
            if isinstance(x, torch.Tensor) and x.dim() else None for x in inputs]


@dataclass
class DynamicResult:
    strategy: str
    dynamic_dims: int  # how many input dims torch.export left dynamic
    verdict: Verdict | None = None  # the strategy's verdict on the dynamic node
    reports: dict[str, Any] | None = None  # profile point ("min", "opt", "max") -> verify Report; None when not built
    skipped: dict[str, str] | None = None  # profile points where PyTorch itself fails (the program is invalid there)
    unmapped: dict[str, str] | None = None  # other nodes of the example that no strategy serves under dynamic shapes


def dynamic_conformance(strat: Strategy, ex: Example, ruleset: RuleSet, backend: str = "tensorrt_rtx") -> DynamicResult:
    """The example exported with every dim dynamic: either the strategy's rule rejects the node (with its reason), or
    the network builds for real with an optimization profile from the export's ranges and agrees with PyTorch at the
    profile's minimum, an interior point and its maximum."""
    captured = capture_example(ex, all_dynamic(ex))
    tensors = dict(zip(captured.graph.inputs, [x for x in ex.inputs if hasattr(x, "shape")]))
    return judged_build(strat, captured, tensors, ruleset, backend, node_name=ex.node, settings=Settings(**ex.settings))


def judged_build(strat: Strategy, captured: Any, tensors: dict, ruleset: RuleSet, backend: str = "tensorrt_rtx",
                 node_name: str | None = None, settings: Settings | None = None, resize: bool = True) -> DynamicResult:
    """Judge the captured graph's node with ``strat``; where it applies, plan the graph with ``strat`` pinned there,
    build for real and compare with PyTorch: at the profile's min/opt/max (``tensors`` resized to each) for a dynamic
    graph, else at ``tensors`` themselves (also where ``resize`` is off: the given values are the point)."""
    from opmap.building.builder import build_network, serialize
    from opmap.planning.planner import Planner
    from opmap.checking.verify import ReferenceFailed, resize_inputs, verify_built
    from opmap.building.profile import profile_points

    graph = captured.graph
    node = find_node(graph, strat, node_name)
    n_dynamic = sum(1 for m in graph.inputs.values() for d in m.shape if isinstance(d, str))
    settings = settings or Settings()
    judge = Judge(base={"settings": settings, "backend": profile(backend), "catalog_ops": frozenset(candidates_of(ruleset))},
                  builtin_fixtures=ruleset.fixtures)
    try:
        with judge.graph_scope(graph):
            verdict = judge.judge(strat, node)
    finally:
        judge.close()
    result = DynamicResult(strat.id, n_dynamic, verdict)
    if not verdict.applies:
        return result
    planner = Planner(ruleset, candidates_of(ruleset), backend=profile(backend), settings=settings,
                      pins={node.name: strat.id}, require_emit=True)
    plan = planner.plan(graph)
    planner.judge.close()
    result.unmapped = {n.node.name: n.why for n in plan.nodes if not n.mapped}
    if result.unmapped:  # another node of the example cannot be served (its own rule says why)
        return result
    built = serialize(build_network(plan, captured.program, ruleset.strategies))
    points = (profile_points(graph) if resize else None) or {"static": {}}
    result.reports, result.skipped = {}, {}
    for label, point in points.items():
        values = resize_inputs(tensors, graph, point) if resize else tensors
        try:
            result.reports[label] = verify_built(built, captured.program, values, seed=0)
        except ReferenceFailed as exc:  # e.g. ``a.split(2)[1]`` at a length of 2: the export did not guard it
            result.skipped[label] = str(exc)
    return result


def capture_example(ex: Example, dynamic_shapes: Any = None):
    """The example exported (with its own dynamic shapes unless others are given), decomposed where it asks."""
    return capture_callable(ex.fn, *ex.inputs, dynamic_shapes=dynamic_shapes if dynamic_shapes is not None else _dynamic(ex),
                            decompose=ex.decompose)


def _dynamic(ex: Example):
    """An example's dynamic shapes; a callable makes them on demand (see ``opmap.rules.common``)."""
    return ex.dynamic_shapes() if callable(ex.dynamic_shapes) else ex.dynamic_shapes
