"""The planner: for each node, candidates (catalog) -> verdicts (rules) -> choice (policy).

Policy, in order:
  1. only strategies whose rule APPLIES;
  2. within the accuracy budget: exact kinds (direct, decompose, plugin) always are;
     an ``approximate`` strategy only with a measured error <= ``--tolerance``;
  3. the lowest measured (or estimated, and labelled so) cost; an unmeasured strategy
     never beats one with a cost, and no number is ever invented for it;
  4. a stable tie-break: kind (direct, decompose, plugin, approximate), then origin
     (user rules before rule packs before built-ins: a rule a user added on purpose
     wins over a shipped one nothing else distinguishes), then strategy id.
"""

from __future__ import annotations

import copy
import gc
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from opmap.planning.collect import RuleSet
from opmap.planning.fixtures import Settings
from opmap.planning.equivalence import VerdictMemo, node_key
from opmap.loading.graph import Graph, Node
from opmap.loading.inplace import as_functional, functional_op
from opmap.planning.judge import Judge, Verdict
from opmap.planning.strategy import WILDCARD, Outcome, Strategy

if TYPE_CHECKING:  # the planner is given a backend's profile; it never builds
    from opmap.building.backend import BackendProfile

KIND_RANK = {"direct": 0, "decompose": 1, "plugin": 2, "approximate": 3}
COST_MARGIN = 0.05  # costs within 5% of each other do not distinguish strategies: estimates are not that precise
ORIGIN_RANK = {"user": 0, "pack": 1, "builtin": 2}


@dataclass(frozen=True)
class Cost:
    value: float | None  # None: unmeasured
    unit: str = "ms"
    provenance: str = "unmeasured"  # measured-runtime | measured-build | estimated | unmeasured
    max_rel_err: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "provenance": self.provenance, "max_rel_err": self.max_rel_err}

    def __str__(self) -> str:
        if self.value is None:
            return "unmeasured"
        mark = "~" if self.provenance == "estimated" else ""
        return f"{mark}{self.value:.3g} {self.unit} ({self.provenance})"


UNMEASURED = Cost(None)


_FROZEN = [0]  # nesting depth of heap_frozen


@contextmanager
def heap_frozen():
    """Planning allocates many short-lived objects over a heap it does not change (torch, the loaded program, ~10^6
    objects): frozen for the run, a full collection scans only what planning made (without it, one full collection
    while the catalog's rows load costs most of a small model's planning time)."""
    if _FROZEN[0] == 0:
        gc.freeze()
    _FROZEN[0] += 1
    try:
        yield
    finally:
        _FROZEN[0] -= 1
        if _FROZEN[0] == 0:
            gc.unfreeze()


@dataclass
class NodePlan:
    node: Node
    verdicts: list[Verdict]
    choice: Verdict | None = None
    runner_up: Verdict | None = None
    cost: Cost = UNMEASURED
    why: str = ""
    set_aside: dict[str, str] = field(default_factory=dict)  # applicable strategy -> why it was not eligible
    subplan: "Plan | None" = None  # for an expanding strategy: the plan of its sub-graph
    sub_inputs: list = field(default_factory=list)  # the node's tensor arguments feeding the sub-graph's inputs
    contract: str | None = None  # how the chosen strategy changes the node's outputs, if it does
    precision: str | None = None  # "fp16"/"bf16"/"int8" where the node computes below fp32; None: fp32
    precision_why: str = ""
    quant: dict[str, tuple] = field(default_factory=dict)  # int8: argument -> (scale, axis, dtype) of its Q/DQ pair
    as_node: Node | None = None  # an in-place / out= node as its strategy sees it: the functional op (engine/inplace.py)

    @property
    def mapped(self) -> bool:
        return self.choice is not None

    @property
    def rejected(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.applies]


@dataclass
class Plan:
    graph: Graph
    backend: BackendProfile
    settings: Settings
    nodes: list[NodePlan]
    problems: list[str] = field(default_factory=list)
    precision_notes: list[str] = field(default_factory=list)  # what the discrete-result protection measured and did

    def summary(self) -> dict[str, int]:
        counts = {"nodes": len(self.nodes)}
        for kind in KIND_RANK:
            counts[kind] = sum(1 for n in self.nodes if n.choice and n.choice.kind == kind)
        counts["no mapping"] = sum(1 for n in self.nodes if not n.mapped)
        counts["errors"] = sum(1 for n in self.nodes for v in n.verdicts if v.outcome is Outcome.ERROR)
        return counts

    def total_cost(self) -> dict[str, Any]:
        """The plan's cost: the sum over nodes with a cost, how many have none, and the provenances summed."""
        known = [n.cost for n in self.nodes if n.choice and n.cost.value is not None]
        return {"total": sum(c.value for c in known) if known else None, "unit": known[0].unit if known else None,
                "provenance": sorted({c.provenance for c in known}),
                "unmeasured": sum(1 for n in self.nodes if n.choice and n.cost.value is None)}

    def summary_line(self) -> str:
        c = self.summary()
        parts = [f"{c[k]} {k}" for k in (*KIND_RANK, "no mapping") if c[k]]
        line = f"{c['nodes']} nodes: " + (", ".join(parts) if parts else "nothing to plan")
        if c["errors"]:
            line += f" ({c['errors']} rule errors)"
        cost = self.total_cost()
        if cost["total"] is not None:
            line += f"; cost {'~' if 'estimated' in cost['provenance'] else ''}{cost['total']:.4g} {cost['unit']} ({', '.join(cost['provenance'])})"
            if cost["unmeasured"]:
                line += f", {cost['unmeasured']} nodes unmeasured"
        return line

    @property
    def complete(self) -> bool:
        return all(n.mapped for n in self.nodes)


def _band(value: float | None) -> float:
    """A cost quantised on a log scale in steps of COST_MARGIN, so that near-equal costs tie."""
    if value is None:
        return 0.0
    if value <= 0:
        return float("-inf")
    return float(round(math.log(value) / math.log1p(COST_MARGIN)))


class Planner:
    def __init__(
        self,
        ruleset: RuleSet,
        candidates: dict[str, list[str]],
        *,
        backend: BackendProfile,
        settings: Settings = Settings(),
        costs: dict[str, Cost] | None = None,
        pins: dict[str, str] | None = None,
        depth: int = 0,
        require_emit: bool = False,
        prefer: dict[str, str] | None = None,
        precision_errors: dict[tuple[str, str], list[tuple[int, float]]] | None = None,
        bucket_costs: dict[str, list[tuple[int, Cost]]] | None = None,
        memo: VerdictMemo | None | bool = True,
        quantizer: Callable[[Node, str], tuple[str | None, dict, str]] | None = None,
        parent: "Planner | None" = None,
    ) -> None:
        self.ruleset = ruleset
        self.candidates = candidates  # op -> strategy ids, from the catalog
        self.backend = backend
        self.settings = settings
        self.costs = costs or {}
        self.pins = pins or {}  # node name or op -> strategy id the user insists on
        self.depth = depth  # expansion nesting (a decomposition planned inside a decomposition...)
        self.require_emit = require_emit  # building: a strategy must be able to emit layers
        # op (or "*" for any op) -> strategy to take whenever it is eligible: a fixed-priority policy, the way
        # converters without costs choose; used to compare such policies with the cost-based choice (bench/choice.py)
        self.prefer = prefer or {}
        # (strategy, "fp16"/"bf16") -> [(bucket size, measured error in that precision vs fp32, relative to the output's range)]
        self.precision_errors = precision_errors or {}
        # strategy -> [(elements in the measured bucket, cost)]: a node takes the bucket nearest its own size
        self.bucket_costs = bucket_costs or {}
        # --precision int8: node, strategy -> ("int8" or None, Q/DQ scales, why), measured with the calibration (engine/int8.py)
        self.quantizer = quantizer
        self._node_numel: int | None = None
        self._nearest_seen: dict[tuple[int, int | None], Any] = {}
        self._graph: Graph | None = None
        # expanding strategy -> (the sub-graph it returned for the node being chosen, whether it is keyed: see _reuse)
        self._subs: dict[str, tuple[Graph | None, bool]] = {}
        # parent: the planner whose expansion this one plans (same catalog and rules): what they share is read once
        self._for_op: dict[str, list] = parent._for_op if parent else {}  # op -> strategies_for(op)
        self.catalog_ops = parent.catalog_ops if parent else frozenset(op for op in candidates if op != WILDCARD)
        # verdicts judged once per equivalence class of nodes, shared with the planners of sub-graphs; False: judge every node
        self.memo = VerdictMemo() if memo is True else (memo if isinstance(memo, VerdictMemo) else None)
        self.judge = Judge(
            base={"settings": settings, "backend": backend, "catalog_ops": self.catalog_ops}, builtin_fixtures=ruleset.fixtures,
            memo=self.memo, visible=parent.judge.visible if parent else None,
        )

    def strategies_for(self, op: str) -> list[Strategy | str]:
        """Catalog candidates for an op, as loaded strategies (or the bare id when its code is missing)."""
        found = self._for_op.get(op)
        if found is None:
            ids = self.candidates.get(op, []) + [i for i in self.candidates.get(WILDCARD, []) if i not in self.candidates.get(op, [])]
            found = self._for_op[op] = [self.ruleset.strategies.get(i, i) for i in ids]
        return found

    def plan(self, graph: Graph, on_node: Callable[[Node], None] | None = None) -> Plan:
        nodes: list[NodePlan] = []
        self._graph = graph
        upstream: dict[str, str] = {}  # node -> chosen strategy, for rules over patterns of nodes
        self.judge.set_value("upstream", upstream)
        with self.judge.graph_scope(graph):
            for node in graph:
                nodes.append(self.plan_node(node))
                if nodes[-1].choice is not None:
                    upstream[node.name] = nodes[-1].choice.strategy
                if on_node:
                    on_node(node)
        return Plan(graph=graph, backend=self.backend, settings=self.settings, nodes=nodes, problems=list(self.ruleset.problems))

    def plan_node(self, node: Node) -> NodePlan:
        if not self.candidates.get(node.op) and functional_op(node.op) is not None:
            functional, note = as_functional(node, self._graph or node._graph)
            if functional is None:
                return NodePlan(node=node, verdicts=[], why=note)
            result = self._plan_node(functional)
            result.node, result.as_node, result.why = node, functional, f"{note}; {result.why}"
            return result
        return self._plan_node(node)

    def _plan_node(self, node: Node) -> NodePlan:
        # The choice is a function of the verdicts, the node's class (sizes for costs, outputs for precision), the
        # planner's settings and the sub-graphs expansions return. A class's choice is kept only when every verdict of
        # the node that made it came from the memo, confirmed (judge.py): those verdicts are served for good, so a later
        # node of the class takes the same verdicts and choice without judging, if its expansions return the same
        # sub-graphs (checked in _reuse).
        key = None
        if self.memo is not None and self.quantizer is None and node.name not in self.pins:
            key = (self.depth, self.memo.intern(node_key(node, self._graph or node._graph)))
            reused = self._reuse(self.memo.choices.get(key), node)
            if reused is not None:
                return reused
        verdicts: list[Verdict] = []
        with self.judge.node_scope(node, key[1] if key else None):  # node-scoped fixtures serve every candidate
            for strat in self.strategies_for(node.op):
                if isinstance(strat, str):
                    verdicts.append(
                        Verdict(strategy=strat, rule=f"{strat}@?", kind="?", outcome=Outcome.ERROR,
                                reason="the catalog lists this strategy but its code is not installed (a removed rule pack?)")
                    )
                    continue
                verdicts.append(self.judge.judge(strat, node))
            served = self.judge.served
        self._subs = {}
        result = self.choose(node, verdicts)
        if key is not None and served:  # a copy: plan_node rewrites the result of an in-place node (its node, why) for that node only
            self.memo.choices[key] = (copy.copy(result), self._subs)
        return result

    def _reuse(self, known: tuple | None, node: Node) -> NodePlan | None:
        """The plan of an earlier node of this node's class, for this node (its own copies of the verdicts, its own
        sub-graph inputs), or None when there is none or an expansion returns another sub-graph for this node."""
        if known is None:
            return None
        template, subs = known
        refs = None
        for sid, (sub, keyed) in subs.items():
            if keyed:  # the same sub-graph for the whole class, fed by the node's tensor arguments in order
                got, got_refs = sub, node.tensor_refs()
            else:
                try:
                    got, got_refs = self.ruleset.strategies[sid].expand_fn(node, self._graph)
                except Exception:
                    return None
            if got is not sub:
                return None
            if template.choice is not None and sid == template.choice.strategy:
                refs = got_refs
        verdicts = [v.copy() for v in template.verdicts]
        by_id = {v.strategy: v for v in verdicts}
        pick = lambda v: by_id[v.strategy] if v is not None else None  # noqa: E731
        return NodePlan(node=node, verdicts=verdicts, choice=pick(template.choice), runner_up=pick(template.runner_up),
                        cost=template.cost, why=template.why, set_aside=dict(template.set_aside), subplan=template.subplan,
                        sub_inputs=list(refs) if template.subplan is not None else [], contract=template.contract,
                        precision=template.precision, precision_why=template.precision_why, quant=dict(template.quant))

    def choose(self, node: Node, verdicts: list[Verdict]) -> NodePlan:
        result = NodePlan(node=node, verdicts=verdicts)
        if not verdicts:
            result.why = f"no strategy in the catalog for {node.op}"
            return result
        eligible: list[Verdict] = []
        pin = self.pins.get(node.name) or self.pins.get(node.op)
        for v in verdicts:
            if not v.applies:
                continue
            cost = self.costs.get(v.strategy, UNMEASURED)
            strat = self.ruleset.strategies.get(v.strategy)
            if self.require_emit and strat is not None and strat.emit_fn is None and strat.expand_fn is None:
                result.set_aside[v.strategy] = "cannot be built yet: the strategy has no emit function"
                continue
            if v.kind == "approximate" and v.strategy != pin:  # a pin is the user's explicit choice
                if cost.max_rel_err is None:
                    result.set_aside[v.strategy] = "outside the accuracy budget: approximate, and its accuracy is unmeasured (run `opmap measure`)"
                    continue
                if not cost.max_rel_err <= self.settings.tolerance:  # NaN (an error that is not a number) is outside too
                    result.set_aside[v.strategy] = (
                        f"outside the accuracy budget: measured max rel error {cost.max_rel_err:.3g} exceeds the tolerance {self.settings.tolerance:g}"
                    )
                    continue
            eligible.append(v)
        # An expanding strategy is eligible only if its sub-graph plans completely; its cost is the sub-plan's total.
        self._local: dict[str, Cost] = {}
        self._node_numel = sum(math.prod(d if isinstance(d, int) else 1 for d in m.shape) for m in node.tensor_args().values())
        expansions: dict[str, tuple] = {}
        kept = []
        for v in eligible:
            planned = self._expand(node, v, result)
            if planned is False:
                continue
            if planned is not True:
                expansions[v.strategy] = planned
                total = planned[0].total_cost()
                self._local[v.strategy] = (
                    Cost(total["total"], total["unit"] or "ms", "+".join(total["provenance"]) or "unmeasured")
                    if total["total"] is not None and not total["unmeasured"] else UNMEASURED
                )
            kept.append(v)
        eligible = kept
        if not eligible:
            reasons = [f"{v.strategy}: {v.reason}" for v in verdicts if not v.applies]
            reasons += [f"{sid}: {why}" for sid, why in result.set_aside.items()]
            result.why = "no applicable strategy — " + "; ".join(reasons)
            return result
        eligible.sort(key=self._rank)
        for wanted in (self.prefer.get(node.op), self.prefer.get(WILDCARD)):
            if wanted is not None and any(v.strategy == wanted for v in eligible):
                eligible = [v for v in eligible if v.strategy == wanted] + [v for v in eligible if v.strategy != wanted]
                break
        if pin is not None:
            pinned = [v for v in eligible if v.strategy == pin]
            if not pinned:
                verdict = next((v for v in verdicts if v.strategy == pin), None)
                why = f"{verdict.outcome}: {verdict.reason}" if verdict else "not a candidate for this op"
                result.why = f"pinned to {pin}, which does not apply here ({why})"
                return result
            eligible = pinned + [v for v in eligible if v.strategy != pin]
        result.choice = eligible[0]
        result.runner_up = eligible[1] if len(eligible) > 1 else None
        if result.choice.strategy in expansions:
            result.subplan, result.sub_inputs = expansions[result.choice.strategy]
        result.cost = self._cost(result.choice.strategy)
        self._place(node, result)
        chosen = self.ruleset.strategies.get(result.choice.strategy)
        result.contract = chosen.contract if chosen else None
        result.why = self._why(result.choice, result.runner_up, pin)
        return result

    MAX_DEPTH = 3

    def _place(self, node: Node, result: NodePlan) -> None:
        """Per-node precision: below fp32 only where the chosen strategy's measured error in that precision fits."""
        wanted = self.settings.precision
        if wanted == "fp32" or not any(m is not None and m.dtype == "float32" for m in node.outputs):
            return
        lead = ""
        if wanted == "int8":  # INT8 where measured with the calibration; otherwise fp16 by the same rule as --precision fp16
            if self.quantizer is not None:
                precision, quant, why = self.quantizer(node, result.choice.strategy)
                if precision is not None:
                    result.precision, result.quant, result.precision_why = precision, quant, why
                    return
                lead = f"{why}; "
            wanted = "fp16"
        measured = self.precision_errors.get((result.choice.strategy, wanted))
        error = self._nearest(measured) if measured else None
        if measured and any(e == float("inf") for _, e in measured):  # a failure at any measured size vetoes it:
            error = float("inf")  # the nearest bucket's success says nothing about the shape that failed
        if error is None:
            result.precision_why = f"{lead}fp32: {result.choice.strategy} has no measured {wanted} accuracy"
        elif error == float("inf"):  # the measurement in that precision failed: the build, or its check against PyTorch
            result.precision_why = (f"{lead}fp32: {result.choice.strategy}'s {wanted} measurement failed (its build or "
                                    "the reference interpreter's run of it)")
        elif error > self.settings.tolerance:
            result.precision_why = f"{lead}fp32: in {wanted} its measured error {error:.3g} (of the output's range) exceeds the tolerance {self.settings.tolerance:g}"
        else:
            result.precision = wanted
            result.precision_why = f"{lead}{wanted}: measured error {error:.3g} (of the output's range) within the tolerance"

    def _expand(self, node: Node, v: Verdict, result: NodePlan):
        """True for a strategy that does not expand; for one that does, its (sub-plan, argument refs), or False
        (set aside, with the reason) when its sub-graph cannot be planned completely."""
        strat = self.ruleset.strategies.get(v.strategy)
        if strat is None or strat.expand_fn is None:
            return True
        if self.depth >= self.MAX_DEPTH:
            result.set_aside[v.strategy] = f"expansions nested deeper than {self.MAX_DEPTH} levels"
            return False
        try:
            sub, refs = strat.expand_fn(node, self._graph)
        except Exception as exc:  # an expansion that cannot be traced is not a crash of the run
            result.set_aside[v.strategy] = f"the expansion failed: {type(exc).__name__}: {exc}"
            self._subs[v.strategy] = (None, False)  # never the same sub-graph again: no reuse of this choice
            return False
        self._subs[v.strategy] = (sub, strat.expand_keyed and refs == node.tensor_refs())
        # the same sub-graph object (an expansion traced once per signature) plans the same way: plan it once
        key = (v.strategy, id(sub), self.depth)
        known = self.memo.subplans.get(key) if self.memo is not None else None
        if known is None:
            known = (sub, self._plan_expansion(sub))
            if self.memo is not None:
                self.memo.subplans[key] = known  # holds sub, so its id stays unique
        subplan = known[1]
        if isinstance(subplan, str):
            result.set_aside[v.strategy] = subplan
            return False
        return subplan, refs

    def _plan_expansion(self, sub: Graph) -> "Plan | str":
        """The plan of an expansion's sub-graph, or why it cannot be planned completely."""
        child = Planner(self.ruleset, self.candidates, backend=self.backend, settings=self.settings, costs=self.costs,
                        bucket_costs=self.bucket_costs, depth=self.depth + 1, require_emit=self.require_emit, prefer=self.prefer,
                        precision_errors=self.precision_errors, memo=self.memo if self.memo is not None else False,
                        parent=self)
        try:
            subplan = child.plan(sub)
        finally:
            child.judge.close()
        if not subplan.complete:
            missing = "; ".join(f"{n.node.op}: {n.why}" for n in subplan.nodes if not n.mapped)
            return f"its expansion has no mapping for {missing}"
        return subplan

    def _nearest(self, buckets: list[tuple[int, Any]]) -> Any:
        """The entry of the measured bucket nearest this node's size (by element count, on a log scale)."""
        key = (id(buckets), self._node_numel)  # nodes of a repeated block ask the same question
        if key not in self._nearest_seen:
            size = math.log1p(self._node_numel or 0)
            self._nearest_seen[key] = min(buckets, key=lambda b: (abs(math.log1p(b[0]) - size), b[0]))[1]
        return self._nearest_seen[key]

    def _cost(self, strategy_id: str) -> Cost:
        local = getattr(self, "_local", {})
        if strategy_id in local:
            return local[strategy_id]
        buckets = self.bucket_costs.get(strategy_id)
        if buckets and self._node_numel is not None:  # the measured shape nearest this node's size
            return self._nearest(buckets)
        return self.costs.get(strategy_id, UNMEASURED)

    def _rank(self, v: Verdict) -> tuple:
        cost = self._cost(v.strategy)
        strat = self.ruleset.strategies.get(v.strategy)
        origin = strat.origin.split(":")[0] if strat else "builtin"
        return (cost.value is None, _band(cost.value), KIND_RANK.get(v.kind, 9), ORIGIN_RANK.get(origin, 9), v.strategy)

    def _why(self, choice: Verdict, runner_up: Verdict | None, pin: str | None = None) -> str:
        if pin is not None and choice.strategy == pin:  # this node's pin (by name or op), not any pin of the run
            return "pinned by the user"
        if runner_up is None:
            return "the only applicable strategy"
        a, b = self._rank(choice), self._rank(runner_up)
        if not a[0] and (b[0] or a[1] < b[1]):  # a cost lower by more than the margin
            return f"lowest cost ({self._cost(choice.strategy)}) vs {runner_up.strategy} ({self._cost(runner_up.strategy)})"
        if a[2] != b[2]:
            return f"tie-break: {choice.kind} ranks before {runner_up.kind} (costs not distinguishing)"
        if a[3] != b[3]:
            return "tie-break: a user rule ranks before shipped ones (costs not distinguishing)"
        return "tie-break: strategy id order (costs not distinguishing)"
