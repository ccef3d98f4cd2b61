"""Application services: wires capture, rules, catalog and planner. The CLI is a thin layer on top."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import opmap
from opmap.db import Catalog
from opmap.db.models import Decision, Run, VerdictRow
from opmap.planning import diskcache
from opmap.building.backend import BackendProfile
from opmap.loading.capture import Captured
from opmap.planning.collect import RuleSet, load_builtin, load_packs, load_source
from opmap.planning.fixtures import Settings
from opmap.loading.graph import Node
from opmap.planning.planner import Cost, Plan, Planner, heap_frozen
from opmap.errors import OpmapError, first_line


def load_rules(catalog: Catalog | None = None, sources: list[tuple[str, str]] | None = None) -> RuleSet:
    """Built-ins, installed rule packs and the user rules stored in the catalog (or ``sources``, ``(path, text)``)."""
    ruleset = load_builtin()
    load_packs(ruleset)
    if sources is None and catalog is not None:
        sources = catalog.user_sources()
    for path, text in sources or ():
        try:
            strategies = load_source(text, path, origin="user")
            ruleset.add(strategies)
        except OpmapError as exc:
            ruleset.problems.append(f"stored user rule file {path} failed to load: {exc}")
    return ruleset


def open_catalog(url: str | None, ruleset: RuleSet | None = None, write: bool = True) -> tuple[Catalog, RuleSet]:
    """Open (and migrate) the catalog, sync shipped strategies and measurements, load every rule. ``write``: the
    command will write, so a read-only catalog fails here, in one line, before any work."""
    from opmap.measure import shipped_measurements

    catalog = Catalog(url)
    try:
        shipped = ruleset or load_rules(None)
        catalog.sync(shipped.strategies.values(), *shipped_measurements(shipped))
        if write:
            catalog.check_writable()
        loaded = load_rules(catalog)
        loaded.problems[:0] = [p for p in shipped.problems if p not in loaded.problems]
    except BaseException:
        catalog.close()
        raise
    return catalog, loaded


OBJECTIVES = {"latency": ("latency_ms", "ms"), "build-time": ("build_seconds", "s"), "size": ("engine_bytes", "bytes")}


def fresh_measurements(catalog: Catalog, backend: str, ruleset: RuleSet, objective: str = "latency") -> list[Any]:
    """A backend's measurements, oldest first, as rows of the columns planning reads, without the stale ones: those of
    another rule source than the loaded one (the rule changed since they were taken)."""
    loaded = {sid: strat.source_hash for sid, strat in ruleset.strategies.items()}
    rows = catalog.measurement_rows(backend, _PLANNING_COLUMNS + (OBJECTIVES[objective][0],))
    return [m for m in rows if loaded.get(m[0], m[1]) == m[1]]


# the columns fresh_measurements reads, in this order (planning_tables unpacks them), then the objective's
_PLANNING_COLUMNS = ("strategy_id", "source_hash", "shape_bucket", "dtype", "build_ok", "max_rel_err", "provenance")


def planning_tables(rows: list[Any], objective: str = "latency") -> tuple[dict, dict, dict]:
    """What planning reads of fresh measurements (:func:`fresh_measurements`), in one pass:

    - costs: strategy -> :class:`Cost`, the median over shape buckets of its latest float32 measurement per bucket, for
      the objective, with provenance and the worst measured error;
    - precision errors: (strategy, "fp16"/"bf16") -> [(bucket size, error computed in that precision, relative to the
      output's range)]; a failed build in that precision counts as an infinite error;
    - bucket costs: strategy -> [(elements in the bucket, cost)] from the latest *successful* measurement per bucket
      (a node takes the bucket nearest its own size).
    """
    import statistics

    unit = OBJECTIVES[objective][1]
    latest: dict[tuple, Any] = {}  # (strategy, bucket, dtype) -> latest row
    latest_ok: dict[tuple, Any] = {}  # the same, among rows that built and have the objective
    reduced: dict[tuple, float] = {}  # (strategy, precision, bucket) -> error
    for m in rows:
        sid, _, bucket, dtype, ok, error, _, value = m
        if dtype.startswith("compute:"):
            reduced[(sid, dtype[8:], bucket)] = error if ok and error is not None else float("inf")
            continue
        latest[(sid, bucket, dtype)] = m
        if ok and value is not None:
            latest_ok[(sid, bucket, dtype)] = m
    grouped: dict[str, list[Any]] = {}
    for (sid, _, _), m in latest.items():
        grouped.setdefault(sid, []).append(m)
    costs: dict[str, Cost] = {}
    for sid, group in grouped.items():
        values = [value for _, _, _, _, ok, _, _, value in group if ok and value is not None]
        errors = [error for _, _, _, _, _, error, _, _ in group if error is not None]
        provenance = group[-1][6] if objective == "latency" else "measured-build"
        costs[sid] = Cost(value=float(statistics.median(values)) if values else None, unit=unit,
                          provenance=provenance if values else "unmeasured", max_rel_err=_worst(errors))
    buckets: dict[str, list[tuple[int, Cost]]] = {}
    for (sid, bucket, _), (_, _, _, _, _, error, provenance, value) in latest_ok.items():
        prov = provenance if objective == "latency" else "measured-build"
        buckets.setdefault(sid, []).append((bucket_numel(bucket), Cost(float(value), unit, prov, error)))
    precision: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for (sid, prec, bucket), error in reduced.items():
        precision.setdefault((sid, prec), []).append((bucket_numel(bucket), error))
    return costs, precision, buckets


def _worst(errors: list[float]) -> float | None:
    """The largest error; NaN (one side produced NaN, the other did not) beats every number."""
    if not errors:
        return None
    return float("nan") if any(e != e for e in errors) else max(errors)


@lru_cache(maxsize=None)  # planning asks for each of a few thousand buckets, several times
def bucket_numel(bucket: str) -> int:
    """Elements in a shape bucket ("2x3,4" -> 10)."""
    total = 0
    for shape in bucket.split(","):
        n = 1
        for d in shape.split("x"):
            n *= int(d) if d.isdigit() else 1
        total += n
    return total


def make_plan(
    captured: Captured,
    catalog: Catalog,
    ruleset: RuleSet,
    backend: BackendProfile,
    settings: Settings,
    on_node: Callable[[Node], None] | None = None,
    for_build: bool = False,
    objective: str = "latency",
    cache: bool = True,
    int8_budget: float = 2e-2,
    protect: bool = True,
) -> Plan:
    with heap_frozen():
        return _make_plan(captured, catalog, ruleset, backend, settings, on_node, for_build, objective, cache, int8_budget, protect)


def _make_plan(captured, catalog, ruleset, backend, settings, on_node, for_build, objective, cache, int8_budget, protect) -> Plan:
    costs, errors, buckets = planning_tables(fresh_measurements(catalog, backend.name, ruleset, objective), objective)
    batches, label, quantizer = [], "", None
    if settings.precision != "fp32" and captured.program is not None:
        batches, label, ranges = precision_batches(captured, catalog, settings.precision)
        if settings.precision == "int8":
            from opmap.checking.int8 import Quantizer

            quantizer = Quantizer(captured.program, captured.graph, backend, ruleset.strategies, ranges, batches, int8_budget)
    planner = Planner(
        ruleset, catalog.candidates_by_op(), backend=backend, settings=settings,
        costs=costs, require_emit=for_build, precision_errors=errors, bucket_costs=buckets,
        memo=cache and diskcache.enabled(), quantizer=quantizer,
    )
    try:
        plan = planner.plan(captured.graph, on_node=on_node)
    finally:
        planner.judge.close()
        catalog.record_probes(backend.name, backend.version, backend.probed)
    if quantizer is not None and batches:
        residual = quantizer.residuals(plan)
        plan.precision_notes = residual + fit_int8(plan, captured, ruleset, batches[:FIT_BATCHES], quantizer.errors, label)
    if batches and protect:
        plan.precision_notes += protect_discrete(plan, captured, ruleset, batches[:PROTECT_BATCHES], label)
    return plan


FIT_BATCHES = 2


def fit_int8(plan: Plan, captured: Captured, ruleset: RuleSet, batches: list, errors: dict, label: str) -> list[str]:
    """check/int8.py's end-to-end check; where the network cannot be run to measure, INT8 goes back to fp32."""
    from opmap.checking import discrete, int8

    try:
        return int8.fit_outputs(plan, captured.program, ruleset.strategies, batches, errors, label)
    except OpmapError as exc:
        for np_ in plan.nodes:
            if np_.precision == "int8" or np_.quant:
                discrete.demote(np_, f"fp32 (INT8 end to end): the network could not be measured ({first_line(exc)})")
        return [f"INT8 end to end could not measure ({first_line(exc)}): INT8 nodes kept fp32"]


PROTECT_BATCHES = 4


def precision_batches(captured: Captured, catalog: Catalog, precision: str) -> tuple[list, str, dict]:
    """The batches reduced precision is measured on, what they are, and the calibrated ranges: the model's latest
    calibration (required for int8), else two verification batches drawn as verify draws (seeds 0 and 1)."""
    from opmap.calibrate import batches_of, generate_batches, latest

    calib = latest(catalog, captured.sha256)
    if calib is None:
        if precision == "int8":
            raise OpmapError(f"--precision int8 needs a calibration of this model (sha256 {(captured.sha256 or '?')[:12]}): "
                             "run `opmap calibrate MODEL --data FILE|DIR`, or `--generate N` to draw N batches")
        return generate_batches(captured.graph, 2, 0), "verification (generated)", {}
    label = "calibration (generated)" if calib.generated else "calibration"
    return batches_of(calib, captured.graph), label, calib.ranges


def protect_discrete(plan: Plan, captured: Captured, ruleset: RuleSet, batches: list, label: str) -> list[str]:
    """check/discrete.py's rule; where the network cannot be built to measure, every reduced-precision producer of a
    discrete result goes back to fp32 (unmeasured is not proven safe)."""
    from opmap.checking import discrete

    try:
        return discrete.protect(plan, captured.program, ruleset.strategies, batches, label)
    except OpmapError as exc:
        by_name = {np_.node.name: np_ for np_ in plan.nodes}
        for d in discrete.discrete_nodes(plan.graph):
            for name in discrete.float_cone(plan.graph, d):
                if by_name[name].precision:
                    discrete.demote(by_name[name], f"fp32 (discrete protection): feeds {d.name} ({d.op}), and the "
                                                    f"network could not be measured ({first_line(exc)})")
        return [f"discrete protection could not measure ({first_line(exc)}): producers of discrete results kept fp32"]


def signature(node: Node) -> str:
    ins = ", ".join(f"{k}: {v}" for k, v in node.tensor_args().items())
    outs = ", ".join(str(o) for o in node.outputs if o is not None) or ", ".join(node.scalar_outputs)
    return f"({ins}) -> {outs}"


def record(catalog: Catalog, plan: Plan, captured: Captured, model_path: str,
           before_commit: Callable[[int], None] | None = None) -> int:
    """Store the run; ``before_commit(run_id)`` is the rest of the command's work: if it fails, nothing is recorded."""
    run = Run(
        model_path=str(Path(model_path).resolve()) if model_path else captured.graph.name,
        model_sha256=captured.sha256,
        model_kind=captured.kind,
        opmap_version=opmap.__version__,
        catalog_version=0,
        backend=plan.backend.name,
        backend_version=plan.backend.version,
        settings={"tolerance": plan.settings.tolerance, "precision": plan.settings.precision},
        summary=plan.summary(),
    )
    for seq, np_ in enumerate(plan.nodes):
        d = Decision(
            seq=seq, node=np_.node.name, op=np_.node.op, signature=signature(np_.node),
            choice=np_.choice.strategy if np_.choice else None,
            choice_kind=np_.choice.kind if np_.choice else None,
            cost=np_.cost.to_dict() if np_.choice else None,
            runner_up=np_.runner_up.strategy if np_.runner_up else None,
            why=np_.why, precision=np_.precision, precision_why=np_.precision_why or None,
        )
        for vseq, v in enumerate(np_.verdicts):
            reason = v.reason
            if v.applies and v.strategy in np_.set_aside:
                reason = np_.set_aside[v.strategy]
            d.verdicts.append(
                VerdictRow(
                    seq=vseq, strategy=v.strategy, rule=v.rule, kind=v.kind, source_hash=v.source_hash,
                    outcome=v.outcome.value, reason=reason, expression=v.expression, evidence=dict(v.evidence), location=v.location,
                )
            )
        run.decisions.append(d)
    return catalog.record_run(run, before_commit)


def plan_json(plan: Plan, run_id: int | None, model: str) -> dict[str, Any]:
    """The stable ``suggest --json`` schema (documented in the README)."""
    nodes = []
    for np_ in plan.nodes:
        verdicts = []
        for v in np_.verdicts:
            item = {"strategy": v.strategy, "rule": v.rule, "outcome": v.outcome.value, "reason": v.reason}
            if v.applies and v.strategy in np_.set_aside:
                item["reason"] = np_.set_aside[v.strategy]
            if v.expression:
                item["expression"] = v.expression
                item["evidence"] = v.evidence
            verdicts.append(item)
        nodes.append(
            {
                "name": np_.node.name,
                "op": np_.node.op,
                "choice": (
                    {"strategy": np_.choice.strategy, "kind": np_.choice.kind, "cost": np_.cost.to_dict(), "contract": np_.contract,
                     "precision": np_.precision, "precision_why": np_.precision_why}
                    if np_.choice
                    else None
                ),
                "runner_up": np_.runner_up.strategy if np_.runner_up else None,
                "why": np_.why,
                "verdicts": verdicts,
            }
        )
    return {
        "model": model,
        "backend": {"name": plan.backend.name, "version": plan.backend.version},
        "run_id": run_id,
        "summary": {**plan.summary(), "cost": plan.total_cost()},
        "nodes": nodes,
        "problems": plan.problems,
        "precision_notes": plan.precision_notes,
        "state": [s.describe() for s in plan.graph.state],  # the engine's state in, state out contract
    }


def load_user_files(files: list[Path], ruleset: RuleSet) -> list[tuple[Path, str, list[Any]]]:
    """Load rule files for `rules add`, all before anything is stored: each must load and define strategies, and
    every id must be new to ``ruleset`` (the loaded catalog) or already belong to the same file (a re-add), and
    unique within the call. Errors name the file, and for a clash the other file too."""
    paths = {str(f.resolve()) for f in files}
    owner = {sid: s.source_path or s.origin for sid, s in ruleset.strategies.items() if not (s.origin == "user" and s.source_path in paths)}
    loaded = []
    for file in files:
        text = read_rule_file(file)
        strategies = load_source(text, str(file.resolve()), origin="user")
        if not strategies:
            raise OpmapError(f"{file}: no rule_* functions with @strategy found")
        for s in strategies:
            other = ruleset.strategies.get(s.id)
            if other is not None and other.origin != "user":
                raise OpmapError(f"{file}: strategy id {s.id} is already a {other.origin} strategy; use your own pack name")
            if s.id in owner:
                raise OpmapError(f"{file}: strategy id {s.id} is already defined in {owner[s.id]}; ids must be unique, rename one of them")
            owner[s.id] = str(file)
        loaded.append((file, text, strategies))
    return loaded


def add_user_files(catalog: Catalog, files: list[Path], ruleset: RuleSet) -> tuple[list[tuple[Path, str, list[Any]]], list[str], RuleSet]:
    """`rules add`, all or nothing: every file loads (:func:`load_user_files`), then, inside the catalog's write
    transaction and before it commits, every stored user rule loads again from the text as stored (a file that
    imports once but not twice is caught here, not at the next command), and the added strategies' own examples run.
    Returns what was loaded, the added ids, and the rules as the catalog now holds them (loaded once, from it)."""
    from opmap.checking.examples import run_examples

    loaded = load_user_files(files, ruleset)  # every file loads and every id is unique, or nothing is stored
    back: list[RuleSet] = []

    def check(sources: list[tuple[str, str]]) -> None:
        reloaded = load_rules(sources=sources)
        missing = [(str(file), s.id) for file, _, strategies in loaded for s in strategies if s.id not in reloaded.strategies]
        if missing:
            why = "; ".join(reloaded.problems) or "they were not defined the second time"
            raise OpmapError(f"{missing[0][0]}: the rules {', '.join(i for _, i in missing)} did not load back from the text "
                             f"stored in the catalog ({why}); nothing was stored")
        ops = frozenset(op for s in reloaded.strategies.values() for op in s.ops if op != "*")
        for file, _, strategies in loaded:
            try:
                run_examples([reloaded.strategies[s.id] for s in strategies], reloaded, ops)
            except Exception as exc:  # a failed example is a result (`rules test`); an exception here is not
                raise OpmapError(f"{file}: running the examples failed: {type(exc).__name__}: {first_line(exc)}; "
                                 f"nothing was stored") from None
        back.append(reloaded)

    ids = catalog.add_user_rules([(str(file.resolve()), text, strategies) for file, text, strategies in loaded], check=check)
    return loaded, ids, back[0]


def read_rule_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OpmapError(f"{path}: cannot read: {first_line(exc)}") from None


def diff_runs(a: Run, b: Run) -> dict[str, Any]:
    """What changed between two runs, node by node, with the verdicts that explain it."""
    da = {d.node: d for d in a.decisions}
    db = {d.node: d for d in b.decisions}
    order = list(da) + [n for n in db if n not in da]
    changes: list[dict[str, Any]] = []
    for name in order:
        x, y = da.get(name), db.get(name)
        if x is None or y is None:
            only = a.id if y is None else b.id
            changes.append({"node": name, "op": (x or y).op, "change": f"only in run {only}", "choice": [x and x.choice, y and y.choice], "verdicts": []})
            continue
        vx = {v.strategy: v for v in x.verdicts}
        vy = {v.strategy: v for v in y.verdicts}
        notes: list[str] = []
        for sid in list(vx) + [s for s in vy if s not in vx]:
            p, q = vx.get(sid), vy.get(sid)
            if p is None:
                notes.append(f"+ {sid} ({q.rule}): {q.outcome}" + (f": {q.reason}" if q.reason else ""))
            elif q is None:
                notes.append(f"- {sid} ({p.rule}) is no longer a candidate")
            elif (p.outcome, p.rule, p.source_hash, p.reason) != (q.outcome, q.rule, q.source_hash, q.reason):
                what = f"{p.outcome} -> {q.outcome}" if p.outcome != q.outcome else q.outcome
                rule = f" ({p.rule} -> {q.rule})" if p.rule != q.rule else (" (rule source changed)" if p.source_hash != q.source_hash else "")
                notes.append(f"~ {sid}{rule}: {what}" + (f": {q.reason}" if q.reason else ""))
        if x.choice != y.choice or notes:
            changes.append({"node": name, "op": y.op, "change": "choice" if x.choice != y.choice else "verdicts",
                            "choice": [x.choice, y.choice], "why": y.why, "verdicts": notes})
    return {
        "from": a.id, "to": b.id,
        "catalog_version": [a.catalog_version, b.catalog_version],
        "model_changed": a.model_sha256 != b.model_sha256,
        "backend": [a.backend, b.backend],
        "changes": changes,
    }


def run_json(run: Run, node: str | None = None) -> dict[str, Any]:
    decisions = [d for d in run.decisions if node is None or d.node == node]
    return {
        "run_id": run.id,
        "created_at": run.created_at.isoformat(),
        "model": run.model_path, "model_sha256": run.model_sha256, "model_kind": run.model_kind,
        "opmap_version": run.opmap_version, "catalog_version": run.catalog_version,
        "backend": {"name": run.backend, "version": run.backend_version},
        "settings": run.settings, "summary": run.summary,
        "nodes": [
            {
                "name": d.node, "op": d.op, "signature": d.signature,
                "choice": {"strategy": d.choice, "kind": d.choice_kind, "cost": d.cost} if d.choice else None,
                "runner_up": d.runner_up, "why": d.why, "precision": d.precision, "precision_why": d.precision_why,
                "verdicts": [
                    {"strategy": v.strategy, "rule": v.rule, "source_hash": v.source_hash, "outcome": v.outcome, "reason": v.reason,
                     "expression": v.expression, "evidence": v.evidence, "location": v.location}
                    for v in d.verdicts
                ],
            }
            for d in decisions
        ],
    }


def build(
    captured: Captured,
    catalog: Catalog,
    ruleset: RuleSet,
    backend: BackendProfile,
    settings: Settings,
    precision: str = "fp32",
    shapes: dict | None = None,
    on_node: Callable[[Node], None] | None = None,
    int8_budget: float = 2e-2,
    protect: bool = True,
):
    """Plan, then emit every node into one network and build the engine for real. Returns (plan, built)."""
    from opmap.building.builder import build_network, serialize

    plan = make_plan(captured, catalog, ruleset, backend, settings, on_node=on_node, for_build=True, int8_budget=int8_budget,
                     protect=protect)
    if not plan.complete:
        reasons = "; ".join(f"{n.node.name} ({n.node.op}): {n.why}" for n in plan.nodes if not n.mapped)
        raise OpmapError(f"cannot build: {reasons}", exit_code=1)
    built = serialize(build_network(plan, captured.program, ruleset.strategies, shapes=shapes, precision=precision))
    return plan, built


class CheckFailed(OpmapError):
    """``build``'s reference check found the network computing something else than PyTorch: no engine is written.
    ``checked`` is what the sidecar would have said (with the located node)."""

    def __init__(self, message: str, checked: dict[str, Any]) -> None:
        super().__init__(message, exit_code=1)
        self.checked = checked


CHECK_ORDER = ("opt", "min", "max")  # build checks at the profile's interior point; an end where PyTorch cannot run there


def check_built(plan: Plan, built: Any, program: Any, shapes: dict | None = None, seed: int = 0,
                precision: str = "fp32") -> dict[str, Any]:
    """``build``'s check: the built network through the reference interpreter against PyTorch at one drawn point (a
    static model's shape, else the profile's opt point). Returns the sidecar's ``checked`` object and sets it on
    ``built``; raises :class:`CheckFailed`, naming the located node, on a mismatch. Where the check cannot run (PyTorch
    itself fails at every profile point, or the interpreter cannot execute a layer) it says so and does not refuse."""
    import time

    from opmap.checking.verify import ReferenceFailed, draw_inputs, locate, verify_built
    from opmap.building.profile import profile_points

    graph = built.graph
    points = profile_points(graph, shapes) or {"static": {}}
    start = time.perf_counter()
    notes = []
    for label in [x for x in CHECK_ORDER if x in points] or list(points):
        values, drawn = draw_inputs(graph, seed, point=points[label])
        try:
            report = verify_built(built, program, values, "reference", seed=seed, precision=precision, drawn=drawn)
        except ReferenceFailed as exc:
            notes.append(f"{label}: {exc}")
            continue
        except OpmapError as exc:  # the interpreter cannot run the network: unchecked, not known wrong
            notes.append(f"{label}: the reference interpreter cannot run the network ({first_line(exc)})")
            break
        checked: dict[str, Any] = {"point": label, "shape": report.shape, "ok": report.ok, "runtime": "reference",
                                   "seed": seed, "outputs": report.compared, "seconds": round(time.perf_counter() - start, 3)}
        bad = [o for o in report.outputs if not o.ok]
        if bad and report.compared == report.expected and all(o.truncated for o in bad):
            # the drawn values exceed a bound the padded layout was built to (a declared --bound, say): the engine
            # cuts off as built and its count output carries the true count; not known wrong, not checked there either
            checked.update(ok=None, note="inconclusive: at the drawn point " + "; ".join(f"{o.name}: {o.note}" for o in bad)
                           + f"; {report.compared - len(bad)} other output(s) agree")
            built.checked = checked
            return checked
        if not report.ok:
            found = locate(built, plan, program, values, seed=seed, precision=precision, point=label)
            checked["locate"] = found.to_dict()
            built.checked = checked
            what = ", ".join(f"{o.name} max abs {o.max_abs:.3g}" + (f" ({o.note})" if o.note else "") for o in bad) or \
                f"compared {report.compared} of {report.expected} outputs"
            node = found.node
            where = (f"; diverging node {node.name} ({node.op}) via {node.strategy}, max abs {node.max_abs:.3g}: {found.why}"
                     if node is not None else f"; {found.why}")
            raise CheckFailed(f"engine not written: at {label} ({report.shape}) the network differs from PyTorch ({what})"
                              f"{where}. `opmap verify MODEL --locate` shows the node's arguments; --no-check writes the "
                              "engine anyway", checked)
        built.checked = checked
        return checked
    built.checked = {"point": None, "ok": None, "runtime": "reference", "note": "not checked: " + "; ".join(notes)}
    return built.checked


def locate_point(reports: dict[str, Any], runs: list[tuple[str, Any, Any]]) -> tuple[str, Any]:
    """Where ``verify --locate`` looks: the first point that mismatches, else the first point (where it shows that no
    node diverges)."""
    values = {label: v for label, v, _ in runs if label in reports}
    label = next((k for k, r in reports.items() if not r.ok), next(iter(reports)))
    return label, values[label]


def parse_shapes(specs: list[str]) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """``--shape NAME=1x3x224x224:4x3x224x224:8x3x224x224`` (min:opt:max)."""
    from opmap.grammar import bounded, dims as parse_dims, shown

    shapes = {}
    for spec in specs:
        name, _, rest = bounded(spec, "--shape").partition("=")
        parts = rest.split(":")
        if not name or len(parts) != 3:
            raise OpmapError(f"bad --shape {shown(spec)}: expected NAME=MIN:OPT:MAX with dims like 1x3x224x224")
        dims = [parse_dims(p, "--shape", spec) for p in parts]
        if len({len(d) for d in dims}) != 1:
            raise OpmapError(f"bad --shape {shown(spec)}: MIN, OPT and MAX have different numbers of dims")
        shapes[name] = (dims[0], dims[1], dims[2])
    return shapes


def check_shapes(graph: Any, shapes: dict) -> None:
    """``--shape`` profiles against the export: known input names, the input's rank, 1 <= min <= opt <= max, static dims
    equal to the export's, dynamic dims inside the export's proven range."""
    for name, (lo, opt, hi) in shapes.items():
        meta = graph.inputs.get(name)
        if meta is None:
            raise OpmapError(f"--shape names {name}, but the model's inputs are {', '.join(graph.inputs) or 'none'}")
        if len(lo) != meta.rank:
            raise OpmapError(f"--shape {name}: {len(lo)} dims given, the input {meta} has {meta.rank}")
        for axis, (d, a, b, c) in enumerate(zip(meta.shape, lo, opt, hi)):
            if not 1 <= a <= b <= c:
                raise OpmapError(f"--shape {name} dim {axis}: needs 1 <= MIN <= OPT <= MAX, got {a}:{b}:{c}")
            if isinstance(d, int):
                if (a, b, c) != (d, d, d):
                    raise OpmapError(f"--shape {name} dim {axis} is static ({d}) in the export; it cannot range over {a}..{c}")
                continue
            low, high = graph.dim_range(d)
            if a < low or (high is not None and c > high):
                raise OpmapError(f"--shape {name} dim {axis}: {a}..{c} is outside the export's range for {d}, "
                                 f"[{low}, {high if high is not None else 'inf'}]")


def verify_points(graph: Any, shapes: dict, labels: str | None, point: list[str]) -> dict[str, dict[str, int]]:
    """Where ``verify`` runs: the profile's min/opt/max (``--shapes`` picks some), one explicit ``--point``, or the
    one shape of a static model. Returns label -> {symbol: value}."""
    from opmap.building.profile import profile_points
    from opmap.grammar import bounded, dims as parse_dims, shown

    if point:
        values: dict[str, int] = {}
        for spec in point:
            name, _, dims = bounded(spec, "--point").partition("=")
            meta = graph.inputs.get(name)
            given = parse_dims(dims, "--point", spec) if meta is not None else []
            if meta is None or len(given) != meta.rank:
                raise OpmapError(f"bad --point {shown(spec)}: expected NAME=DIMS for an input of the model ({', '.join(graph.inputs)})")
            for axis, (d, n) in enumerate(zip(meta.shape, given)):
                if isinstance(d, int) and d != n:
                    raise OpmapError(f"--point {name} dim {axis} is {n}, the export has it static at {d}")
                if isinstance(d, str):
                    if values.setdefault(d, n) != n:
                        raise OpmapError(f"--point gives {d} = {values[d]} and {n}; the export ties these dims")
                    low, high = graph.dim_range(d)
                    if n < low or (high is not None and n > high):
                        raise OpmapError(f"--point {name} dim {axis} is {n}, outside the export's range [{low}, {high}]")
        return {"point": values}
    points = profile_points(graph, shapes)
    if not points:
        return {"static": {}}
    chosen = [x.strip() for x in labels.split(",")] if labels else list(points)
    unknown = [x for x in chosen if x not in points]
    if unknown or not chosen:
        raise OpmapError(f"bad --shapes {labels!r}: choose among {', '.join(points)}")
    return {label: points[label] for label in chosen}


def verify_json(reports: dict, built, model: str, runtime: str, skipped: dict | None = None, located: Any = None) -> dict[str, Any]:
    """The ``verify --json`` object: every point's outputs (each tagged with its point), and the points themselves;
    with ``--locate``, the ``locate`` object."""
    first = next(iter(reports.values()))
    return {
        "model": model,
        "runtime": runtime,
        "backend": {"name": built.trt.__name__, "version": getattr(built.trt, "__version__", None)},
        "engine_bytes": len(built.engine) if built.engine else None,
        "build_seconds": built.build_seconds,
        "ok": all(r.ok for r in reports.values()),
        "compared": sum(r.compared for r in reports.values()),
        "expected": sum(r.expected for r in reports.values()),
        "inputs": first.inputs,
        "points": [{"point": label, "shape": r.shape, "ok": r.ok, "compared": r.compared, "expected": r.expected,
                    "inputs": r.inputs} for label, r in reports.items()],
        "skipped": skipped or {},
        "outputs": [{**o.to_dict(), "point": label} for label, r in reports.items() for o in r.outputs],
        "discrete": {  # every point's discrete outputs together: they must agree exactly at each
            "outputs": sum(r.discrete_summary()["outputs"] for r in reports.values()),
            "agree": sum(r.discrete_summary()["agree"] for r in reports.values()),
            "items": [{**d, "point": label} for label, r in reports.items() for d in r.discrete],
        },
        **({"locate": located.to_dict()} if located is not None else {}),
    }
