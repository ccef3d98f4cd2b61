"""The service layer: what both front ends call, the ``opmap`` command line (opmap/cli.py) and the Python API
(opmap/api.py).

One function per command (:func:`suggest`, :func:`build_model`, :func:`verify`, :func:`calibrate`, :func:`measure`,
:func:`audit`, :func:`rules_list` ...) checks its options once, in the CLI's words, wires loading, the catalog, the
rules, planning, building and checking, and returns plain results; the CLI prints them, the API wraps them in its
dataclasses. Below them, the steps the commands share (opening the catalog, planning, recording a run, the JSON
schemas)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import opmap
from opmap.planning import diskcache
from opmap.building.backend import BackendProfile
from opmap.loading.capture import Captured
from opmap.planning.collect import RuleSet, load_builtin, load_packs, load_source
from opmap.planning.fixtures import Settings
from opmap.loading.graph import Node
from opmap.planning.planner import Cost, Plan, Planner, heap_frozen
from opmap.errors import OpmapError, first_line

if TYPE_CHECKING:  # the catalog's ORM loads SQLAlchemy: imported where a command uses it
    from opmap.db import Catalog
    from opmap.db.models import Run


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
    from opmap.db import Catalog
    from opmap.measuring import shipped_measurements

    catalog = Catalog(url)
    try:
        shipped = ruleset or load_rules(None)
        catalog.sync(shipped.strategies.values(), *shipped_measurements(shipped))
        if write:
            catalog.check_writable()
        loaded = _with_user_rules(shipped, catalog.user_sources())
    except BaseException:
        catalog.close()
        raise
    return catalog, loaded


def _with_user_rules(shipped: RuleSet, sources: list[tuple[str, str]]) -> RuleSet:
    """The rules as the catalog holds them: ``shipped`` itself where it stores no user rule, else loaded again with
    them (the shipped rules' problems first)."""
    if not sources:
        return shipped
    loaded = load_rules(sources=sources)
    loaded.problems[:0] = [p for p in shipped.problems if p not in loaded.problems]
    return loaded


def open_catalog_to_plan(url: str | None) -> tuple[Any, RuleSet]:
    """:func:`open_catalog` for a command that only plans (``suggest --no-record`` in fp32): where the catalog is an
    up-to-date SQLite file, it is read without SQLAlchemy (:class:`opmap.db.reader.CatalogReader`: the same rows);
    otherwise, or where anything is unusual, the full catalog opens as for any command."""
    from opmap.db.reader import CatalogReader, shipped_fingerprint, shipped_measurements_text

    shipped = load_rules(None)
    reader = CatalogReader.open(url, shipped_fingerprint([s for s in shipped.strategies.values() if s.origin != "user"],
                                                         shipped_measurements_text()[1]))
    if reader is None:
        return open_catalog(url, shipped)
    try:
        return reader, _with_user_rules(shipped, reader.user_sources())
    except BaseException:
        reader.close()
        raise


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
    from opmap.calibration import batches_of, generate_batches, latest

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


def record_run(catalog: Catalog, plan: Plan, captured: Captured, model_path: str,
           before_commit: Callable[[int], None] | None = None) -> int:
    """Store the run; ``before_commit(run_id)`` is the rest of the command's work: if it fails, nothing is recorded."""
    from opmap.db.models import Decision, Run, VerdictRow

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


# == the commands: what `opmap CMD` and `opmap.CMD(...)` both call ==================================================
# Each front end only turns its own input into these arguments and renders the result: the CLI parses options and
# prints, the Python API (opmap/api.py) wraps the result in dataclasses. Options are checked here once, in the CLI's
# words, so that both refuse the same input the same way. Spec arguments (input shapes, dynamic dims, bounds, profile
# shapes, points) take the CLI's strings ("x=1x3x224x224"); the API turns its mappings into the same strings
# (:func:`specs`), so one grammar parses both.

def _no_stage(description: str, total: int | None = None) -> None:
    """A front end's progress hook: a stage begins (``total`` steps, or unknown). The API shows none."""


def specs(value: Any, render: Callable[[str, Any], str] = lambda k, v: f"{k}={v}") -> list[str]:
    """An option's values as the CLI's strings: None -> [], one string -> [it], a mapping -> ``render(key, value)``
    per item, a sequence -> its strings."""
    from collections.abc import Mapping

    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [render(str(k), v) for k, v in value.items()]
    return [str(v) for v in value]


def dims_text(dims: Any) -> str:
    """(1, 3, 224) -> "1x3x224"; a string is kept."""
    return dims if isinstance(dims, str) else "x".join(str(d) for d in dims)


def check_backend_and_precision(backend: str | None, precision: str) -> None:
    from opmap.building.backend import BACKENDS
    from opmap.building.builder import PRECISIONS
    from opmap.checking.int8 import refuse_unplaced

    if backend is not None and backend not in BACKENDS:
        raise OpmapError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    refuse_unplaced(precision)
    if precision not in PRECISIONS:
        raise OpmapError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")


def check_plan_options(tolerance: float, objective: str) -> None:
    if not tolerance >= 0:
        raise OpmapError(f"--tolerance must be a non-negative number, got {tolerance}")
    if objective not in OBJECTIVES:
        raise OpmapError(f"unknown objective {objective!r}: choose {', '.join(OBJECTIVES)}")


def check_target(path: Path, flag: str) -> None:
    """Fail before any work if ``path`` cannot be written: a directory, or a parent that is missing or read-only."""
    import os

    parent = path.parent
    if path.is_dir():
        raise OpmapError(f"cannot write {flag} {path}: it is a directory; give a file name")
    if not parent.is_dir():
        raise OpmapError(f"cannot write {flag} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OpmapError(f"cannot write {flag} {path}: the directory {parent} is not writable")


def parse_bounds(values: Any) -> tuple[tuple[str, int], ...]:
    """``--bound NODE=N`` / ``--bound u0=N`` (or ``{"nonzero": 64}``): user-declared upper bounds of data-dependent
    sizes."""
    from opmap.grammar import bounded, natural, shown

    out = []
    for spec in specs(values):
        name, _, value = bounded(spec, "--bound").partition("=")
        if not name or not value:
            raise OpmapError(f"bad --bound {shown(spec)}: expected NODE=N or SYMBOL=N with N >= 1 (e.g. --bound nonzero=64)")
        out.append((name, natural(value, "--bound", spec, low=1)))
    return tuple(out)


def input_specs(values: Any) -> list[Any]:
    """``--input-shape NAME=1x3x224x224[:dtype]`` (or ``{"x": (1, 3, 224, 224)}``, ``{"x": ((1, 8), "int64")}``)."""
    from opmap.loading.capture import InputSpec

    def render(name: str, value: Any) -> str:
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
            return f"{name}={dims_text(value[0])}:{value[1]}"
        return f"{name}={dims_text(value)}"

    return [InputSpec.parse(s) for s in specs(values, render)]


def dynamic_specs(values: Any) -> list[Any]:
    """``--dynamic NAME:DIM=MIN..MAX`` (or ``{"x": {0: (1, 32)}}``): dynamic dims of a TorchScript input."""
    from opmap.loading.capture import DynamicSpec

    def render(name: str, axes: Any) -> str:
        return ",".join(f"{name}:{axis}={lo}..{hi}" for axis, (lo, hi) in axes.items()) if isinstance(axes, dict) else f"{name}:{axes}"

    return [DynamicSpec.parse(s) for spec in specs(values, render) for s in spec.split(",")]


def profile_shapes(values: Any) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """``--shape NAME=MIN:OPT:MAX`` (or ``{"x": ((1, 8), (4, 8), (16, 8))}``): an optimization profile."""
    return parse_shapes(specs(values, lambda k, v: v if isinstance(v, str) else f"{k}=" + ":".join(dims_text(d) for d in v)))


def _model_name(model: Any) -> str:
    import os

    return str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__


def capture_model(model: Any, example_inputs: Any = None, dynamic_shapes: Any = None, *, trust_model: bool = False,
                  input_shapes: list | tuple = (), dynamic: list | tuple = ()) -> tuple[Captured, str]:
    """A Captured and the model's name: a model file (``trust_model``, ``input_shapes`` and ``dynamic`` as
    ``--trust-model``, ``--input-shape`` and ``--dynamic``), an ``ExportedProgram``, or an ``nn.Module`` exported here
    on ``example_inputs`` (a tensor, a tuple of positional inputs or a dict of keyword inputs) with ``dynamic_shapes``
    as ``torch.export.export`` takes them."""
    import os
    from collections.abc import Mapping

    from opmap.errors import CaptureError
    from opmap.loading.capture import capture

    if isinstance(model, (str, os.PathLike)):
        if example_inputs is not None or dynamic_shapes is not None:
            raise OpmapError("example_inputs and dynamic_shapes are for an nn.Module; a model file carries its own")
        return capture(Path(model), unsafe_pickle=trust_model, input_shapes=input_shapes, dynamic=dynamic), str(model)
    if input_shapes or dynamic:
        raise OpmapError("input_shapes and dynamic are for a TorchScript or pickled model file; an nn.Module takes "
                         "example_inputs and dynamic_shapes")
    import torch

    from opmap.loading.capture import _quiet, captured_from

    if isinstance(model, torch.export.ExportedProgram):
        if example_inputs is not None or dynamic_shapes is not None:
            raise OpmapError("example_inputs and dynamic_shapes are for an nn.Module; an ExportedProgram was exported already")
        program = model
    elif isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise OpmapError(f"{type(model).__name__}: an nn.Module needs example_inputs (a tensor, a tuple of "
                             "positional inputs, or a dict of keyword inputs) to be exported")
        if isinstance(example_inputs, Mapping):
            args, kwargs = (), dict(example_inputs)
        elif isinstance(example_inputs, (tuple, list)):
            args, kwargs = tuple(example_inputs), None
        else:
            args, kwargs = (example_inputs,), None
        try:
            with _quiet():
                program = torch.export.export(model, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as exc:  # torch.export raises many kinds; all mean "could not export"
            raise CaptureError(f"torch.export failed: {first_line(exc)}") from None
    else:
        raise OpmapError(f"cannot plan a value of type {type(model).__name__}: pass an nn.Module (with example_inputs), "
                         "a torch.export.ExportedProgram, or the path of a model file")
    name = type(model).__name__ if isinstance(model, torch.nn.Module) else "ExportedProgram"
    return captured_from(program, name, "export", sha256=program_sha256(program)), name


def program_sha256(program: Any) -> str:
    """The hash of an in-memory program (what a model file's sha256 is for a file): its archive as ``torch.export.save``
    writes it, so that a calibration of a module is found again when the same module is planned in int8."""
    import hashlib
    import io

    import torch

    from opmap.loading.capture import _quiet

    buffer = io.BytesIO()
    with _quiet():
        torch.export.save(program, buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _open_and_capture(db: str | None, model: Any, example_inputs: Any, dynamic_shapes: Any, trust_model: bool,
                      input_shapes: list, dynamic: list, stage: Callable, read_only: bool = False):
    stage("opening catalog")
    # first: user rules may import the custom ops the model calls
    catalog, ruleset = open_catalog_to_plan(db) if read_only else open_catalog(db)
    try:
        stage("capturing")
        captured, name = capture_model(model, example_inputs, dynamic_shapes, trust_model=trust_model,
                                       input_shapes=input_shapes, dynamic=dynamic)
    except BaseException:
        catalog.close()
        raise
    return catalog, ruleset, captured, name


@dataclass
class Suggested:
    """``suggest``'s result: the plan, the recorded run's id (None: not recorded), the model's name and capture."""

    plan: Plan
    run_id: int | None
    model: str
    captured: Captured
    catalog: Catalog


def suggest(model: Any, example_inputs: Any = None, *, db: str | None = None, backend: str | None = None,
            precision: str = "fp32", tolerance: float = 1e-3, int8_budget: float = 2e-2, protect_discrete: bool = True,
            trust_model: bool = False, input_shapes: Any = None, dynamic: Any = None, dynamic_shapes: Any = None,
            bounds: Any = None, objective: str = "latency", record: bool = True, html: Path | None = None,
            stage: Callable = _no_stage, on_node: Callable[[Node], None] | None = None) -> Suggested:
    """Judge every node and choose its strategy; record the run (and write the HTML page) unless ``record`` is off."""
    from opmap.building.backend import profile

    check_backend_and_precision(backend, precision)
    check_plan_options(tolerance, objective)
    shapes_in, dynamics = input_specs(input_shapes), dynamic_specs(dynamic)
    declared = parse_bounds(bounds)
    if html is not None:
        html = Path(html)
        check_target(html, "--html")
    catalog, ruleset, captured, name = _open_and_capture(db, model, example_inputs, dynamic_shapes, trust_model,
                                                         shapes_in, dynamics, stage, read_only=not record and precision == "fp32")
    stage("planning", len(captured.graph))
    plan = make_plan(captured, catalog, ruleset, profile(backend),
                     Settings(tolerance=tolerance, precision=precision, declared_bounds=declared),
                     on_node=on_node, objective=objective, int8_budget=int8_budget, protect=protect_discrete)

    def write_html(run_id: int | None) -> None:
        if html is not None:
            from opmap.atomic import write_atomic
            from opmap.report import plan_html

            try:
                write_atomic({html: plan_html(plan, run_id, name).encode("utf-8")})
            except OSError as exc:
                raise OpmapError(f"cannot write {html}: {exc.strerror or exc}") from None

    # The run is recorded only if the HTML page could be written too (one transaction).
    path = name if name == str(model) else ""
    run_id = record_run(catalog, plan, captured, path, before_commit=write_html) if record else None
    if not record:
        write_html(None)
    return Suggested(plan, run_id, name, captured, catalog)


@dataclass
class BuiltModel:
    """``build``'s result: the plan, the built network and engine (``built.checked``: the reference check), the capture
    and the profile shapes it was built for."""

    plan: Plan
    built: Any
    captured: Captured
    model: str
    precision: str
    shapes: dict


def build_model(model: Any, example_inputs: Any = None, *, db: str | None = None, backend: str | None = None,
                precision: str = "fp32", tolerance: float = 1e-3, int8_budget: float = 2e-2, protect_discrete: bool = True, shapes: Any = None,
                trust_model: bool = False, input_shapes: Any = None, dynamic: Any = None, dynamic_shapes: Any = None,
                bounds: Any = None, check: bool = True, output: Path | None = None, stage: Callable = _no_stage,
                on_node: Callable[[Node], None] | None = None,
                _before: Callable[[], None] = lambda: None, _captured: Callable[[Any], None] = lambda _: None) -> BuiltModel:
    """Plan with strategies that can emit, build the engine for real and (``check``) compare the network with PyTorch
    at one drawn point. ``output`` is only checked to be writable here (before any work); the front end writes."""
    from opmap.building.backend import profile

    check_backend_and_precision(backend, precision)
    profile_ = profile_shapes(shapes)
    _before()
    if output is not None:
        check_target(Path(output), "-o")
    shapes_in, dynamics = input_specs(input_shapes), dynamic_specs(dynamic)
    declared = parse_bounds(bounds)
    catalog, ruleset, captured, name = _open_and_capture(db, model, example_inputs, dynamic_shapes, trust_model,
                                                         shapes_in, dynamics, stage)
    stage("planning and building", len(captured.graph))
    check_shapes(captured.graph, profile_)
    result = BuiltModel(None, None, captured, name, precision, profile_)
    _captured(result)
    result.plan, result.built = build(captured, catalog, ruleset, profile(backend), Settings(precision=precision, tolerance=tolerance,
                                      declared_bounds=declared), precision, profile_, on_node=on_node, int8_budget=int8_budget, protect=protect_discrete)
    if check:
        stage("checking against PyTorch", 1)
        check_built(result.plan, result.built, captured.program, profile_, precision=precision)
    return result


@dataclass
class Verified:
    """``verify``'s result: one report per point that compared, the points PyTorch itself cannot run (point -> why), and
    with ``locate`` the located node."""

    engine: BuiltModel
    reports: dict[str, Any]
    skipped: dict[str, str]
    located: Any
    runs: int

    @property
    def ok(self) -> bool:
        return bool(self.reports) and all(r.ok for r in self.reports.values())


RUNTIMES = ("reference", "trt")


def verify(model: Any, example_inputs: Any = None, *, engine: BuiltModel | None = None, inputs: Any = None, seed: int = 0,
           runtime: str = "reference", backend: str | None = None, precision: str = "fp32", int8_budget: float = 2e-2,
           protect_discrete: bool = True, trust_model: bool = False, input_shapes: Any = None, dynamic: Any = None,
           dynamic_shapes: Any = None, bounds: Any = None, shapes: Any = None, points: Any = None, point: Any = None,
           locate: bool = False, db: str | None = None, distinct: bool = False, stage: Callable = _no_stage,
           on_node: Callable[[Any], None] | None = None) -> Verified:
    """Build (or take ``engine``, a :class:`BuiltModel` built with ``check=False`` or not) and compare every output
    with PyTorch: at the profile's min/opt/max (``points`` picks some: "min,max"), at one ``point`` (input name ->
    dims), or at given ``inputs`` (a file of ``torch.save``'d {name: tensor}, or such a dict). ``distinct``: a point
    equal to an earlier one is left out. ``on_node`` is called per node planned and per point verified."""
    from collections.abc import Mapping

    from opmap.building.backend import profile
    from opmap.checking.verify import ReferenceFailed, check_inputs, draw_inputs, load_inputs, locate as locate_node, verify_built

    labels = ",".join(specs(points)) if points is not None and not isinstance(points, str) else points
    point_specs = specs(point, lambda k, v: f"{k}={dims_text(v)}")
    check_backend_and_precision(backend, precision)
    if runtime not in RUNTIMES:
        raise OpmapError(f"unknown runtime {runtime!r}: choose reference or trt")
    rtx = engine.built.trt.__name__ == "tensorrt_rtx" if engine is not None else profile(backend).is_rtx
    if runtime == "trt" and rtx:
        raise OpmapError("--runtime trt needs full TensorRT (tensorrt) and a supported GPU; here the backend is tensorrt_rtx, "
                         "whose engines are built ahead-of-time but cannot run on this machine")

    def one_place() -> None:
        if sum(bool(x) for x in (inputs is not None, labels, point_specs)) > 1:
            raise OpmapError("--inputs, --shapes and --point each choose where to verify: give one of them")

    where: dict[str, dict[str, int]] = {}

    def places(result: BuiltModel) -> None:
        where.update(verify_points(result.captured.graph, result.shapes, labels, point_specs))

    if engine is None:
        engine = build_model(model, example_inputs, db=db, backend=backend, precision=precision, int8_budget=int8_budget,
                             protect_discrete=protect_discrete, shapes=shapes, trust_model=trust_model, input_shapes=input_shapes,
                             dynamic=dynamic, dynamic_shapes=dynamic_shapes, bounds=bounds, check=False, stage=stage,
                             on_node=on_node, _before=one_place, _captured=places)
    else:
        one_place()
        places(engine)
    graph, program = engine.captured.graph, engine.captured.program
    if distinct:
        where = {label: p for i, (label, p) in enumerate(where.items()) if p not in list(where.values())[:i]}
    if inputs is None:
        runs = [(label, *draw_inputs(graph, seed, values)) for label, values in where.items()]
    elif isinstance(inputs, Mapping):
        values = check_inputs(dict(inputs), graph, "inputs")
        runs = [("given", values, {k: f"{graph.inputs[k].dtype} {list(v.shape)}: given" for k, v in values.items()})]
    else:
        runs = [("given", *load_inputs(str(inputs), graph))]
    stage("verifying", len(runs))
    reports, skipped = {}, {}
    for label, values, drawn in runs:
        try:
            reports[label] = verify_built(engine.built, program, values, runtime, seed=seed, precision=engine.precision, drawn=drawn)
        except ReferenceFailed as exc:  # the exported program itself is not valid at this point
            skipped[label] = str(exc)
        if on_node is not None:
            on_node(None)
    located = None
    if locate and reports:
        stage("locating", 1)
        at, values = locate_point(reports, runs)
        located = locate_node(engine.built, engine.plan, program, values, seed=seed, precision=engine.precision, point=at)
    return Verified(engine, reports, skipped, located, len(runs))


def calibrate(model: Any, example_inputs: Any = None, *, db: str | None = None, data: Path | None = None,
              generate: int | None = None, seed: int = 0, percentile: float = 99.99, trust_model: bool = False,
              input_shapes: Any = None, dynamic_shapes: Any = None) -> Any:
    """Run calibration batches through PyTorch and store the ranges ``--precision int8`` places by; returns the row."""
    from opmap import calibration

    captured, name = capture_model(model, example_inputs, dynamic_shapes, trust_model=trust_model,
                                   input_shapes=input_specs(input_shapes))
    catalog, _ = open_catalog(db)
    return calibration.calibrate(catalog, captured, name, data=Path(data) if data is not None else None, generate=generate,
                                 seed=seed, percentile=percentile)


def calibration_json(row: Any) -> dict[str, Any]:
    """``calibrate --json``'s summary of a stored calibration (without its ranges)."""
    return {"calibration_id": row.id, "model_sha256": row.model_sha256, "source": row.source, "generated": row.generated,
            "batches": row.batches, "percentile": row.percentile, "activations": len(row.ranges["activations"]),
            "weights": len(row.ranges["weights"])}


MEASURE_DTYPES = (None, "float32", "float16", "bfloat16")


@dataclass
class Measured:
    rows: list[Any]
    strategies: int
    card: str


def measure(*, db: str | None = None, op: str | None = None, strategy: str | None = None, k: str | None = None,
            backend: str | None = None, device_profile: Path | None = None, seeds: int = 8, dtype: str | None = None,
            model: Any = None, trust_model: bool = False, on_done: Callable[[Any], None] | None = None,
            stage: Callable = _no_stage) -> Measured:
    """Measure the selected strategies (real builds, interpreter accuracy, estimated latency) and store the rows."""
    from opmap import measuring
    from opmap.building.backend import BACKENDS, default_backend
    from opmap.checking.costmodel import DeviceProfile
    from opmap.planning.collect import select

    if backend is not None and backend not in BACKENDS:
        raise OpmapError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if seeds < 1:
        raise OpmapError("--seeds must be at least 1")
    if dtype not in MEASURE_DTYPES:
        raise OpmapError(f"unknown --dtype {dtype!r}: choose float32, float16 or bfloat16")
    device_profile = Path(device_profile) if device_profile is not None else None
    if device_profile is not None and not device_profile.is_file():
        raise OpmapError(f"{device_profile}: no such device profile")
    try:
        prof = DeviceProfile.load(str(device_profile) if device_profile else None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OpmapError(f"{device_profile}: not a device profile ({type(exc).__name__}: {first_line(exc)})") from None
    catalog, ruleset = open_catalog(db)
    chosen = [s for s in select(ruleset.strategies.values(), k, None)
              if (op is None or op in s.ops) and (strategy is None or s.id == strategy)]
    examples = None
    if model is not None:
        captured, _ = capture_model(model, trust_model=trust_model)
        examples = measuring.node_examples(captured.graph, ruleset.strategies)
        chosen = [s for s in chosen if s.id in examples]
    if not chosen:
        raise OpmapError("no strategy matches the selection (see `opmap rules list`)")
    stage("measuring", len(chosen))
    rows = measuring.run(catalog, ruleset, chosen, backend or default_backend(), prof, seeds, on_done=on_done, dtype=dtype,
                         examples=examples)
    return Measured(rows, len(chosen), prof.card)


# -- audit -----------------------------------------------------------------------------------------
@dataclass
class Audit:
    """``audit``'s result, one of: the latest ``runs``; one ``run`` (with ``decision``: one node of it); a ``diff``."""

    display_url: str
    runs: list[Any] | None = None
    run: Any = None
    decision: Any = None
    diff: dict[str, Any] | None = None

    def to_json(self) -> Any:
        """``audit --json``'s object."""
        if self.diff is not None:
            return self.diff
        if self.run is not None:
            return run_json(self.run, self.decision.node if self.decision is not None else None)
        return [{"run_id": r.id, "created_at": r.created_at.isoformat(), "model": r.model_path, "backend": r.backend,
                 "catalog_version": r.catalog_version, "summary": r.summary} for r in self.runs]


def audit(run: int | None = None, *, db: str | None = None, node: str | None = None, diff: int | None = None,
          limit: int = 50, html: Path | None = None) -> Audit:
    """Past runs (newest first, at most ``limit``); one run's decisions; one ``node``'s verdicts; what changed between
    ``run`` and ``diff``. ``html``: write the run's graph page (the model file is read again for the graph's edges)."""
    from opmap.db import Catalog

    catalog = Catalog(db)
    if run is None:
        if node or diff is not None:
            raise OpmapError("--node and --diff need a RUN id (see `opmap audit`)")
        return Audit(catalog.display_url, runs=catalog.runs(limit))
    the_run = catalog.run(run)
    if html is not None:
        from opmap.graphpage import run_graph, write_run_page

        write_run_page(Path(html), the_run, run_graph(the_run))
    if diff is not None:
        return Audit(catalog.display_url, diff=diff_runs(the_run, catalog.run(diff)))
    decision = None
    if node is not None:
        decision = next((d for d in the_run.decisions if d.node == node), None)
        if decision is None:
            raise OpmapError(f"run {run} has no node {node!r}")
    return Audit(catalog.display_url, run=the_run, decision=decision)


# -- rules -----------------------------------------------------------------------------------------
@dataclass
class RulesListed:
    strategies: list[Any]
    enabled: int
    problems: list[str]
    display_url: str
    version: int


def rule_json(s: Any) -> dict[str, Any]:
    return {"id": s.id, "kind": s.kind, "version": s.version, "origin": s.origin, "ops": list(s.ops), "tags": list(s.tags),
            "source": s.source_path, "source_hash": s.source_hash, "doc": s.doc, "contract": s.contract}


def rules_list(*, db: str | None = None, k: str | None = None, m: str | None = None) -> RulesListed:
    """The enabled strategies (``k``/``m``: select by id/name/op substring, by tag/kind/origin)."""
    from opmap.planning.collect import select

    catalog, ruleset = open_catalog(db, write=False)
    enabled = {row.id for row in catalog.strategy_rows()}
    chosen = [s for s in select(ruleset.strategies.values(), k, m) if s.id in enabled]
    return RulesListed(chosen, len(enabled), list(ruleset.problems), catalog.display_url, catalog.version)


@dataclass
class RulesAdded:
    loaded: list[tuple[Path, str, list[Any]]]  # (file, text, strategies)
    ids: list[str]
    measured: list[Any] | None  # the measurement rows, when measured
    display_url: str
    version: int


def rules_add(path: Path, *, db: str | None = None, measure: bool = True) -> RulesAdded:
    """Register a rule file (or a directory of them), all or nothing (:func:`add_user_files`); ``measure``: measure the
    added strategies at once, so they compete on cost."""
    from opmap import measuring
    from opmap.building.backend import default_backend
    from opmap.checking.costmodel import DeviceProfile
    from opmap.planning.collect import rule_files

    files = rule_files(Path(path))
    catalog, ruleset = open_catalog(db)
    loaded, ids, ruleset = add_user_files(catalog, files, ruleset)
    rows = None
    if measure:
        rows = measuring.run(catalog, ruleset, [ruleset.strategies[i] for i in ids], default_backend(), DeviceProfile.load(), seeds=3)
    return RulesAdded(loaded, ids, rows, catalog.display_url, catalog.version)


def rules_remove(strategy_id: str, *, db: str | None = None) -> int:
    """Remove a user strategy (past runs keep their verdicts); returns the catalog's new version."""
    catalog, _ = open_catalog(db)
    catalog.remove_user_rule(strategy_id)
    return catalog.version


def rules_test(path: Path | None = None, *, db: str | None = None, k: str | None = None, m: str | None = None,
               stage: Callable = _no_stage, on_done: Callable[[Any], None] | None = None) -> list[Any]:
    """Run the rules' own accept/reject examples: of the rule file(s) at ``path``, else of every rule in the catalog."""
    from opmap.checking.examples import run_examples
    from opmap.planning.collect import RuleSet, rule_files, select

    if path is not None:
        base = load_rules(None)
        ruleset = RuleSet(fixtures=base.fixtures)
        for file in rule_files(Path(path)):
            ruleset.add(load_source(read_rule_file(file), str(file.resolve()), origin="user"))
        ops = frozenset(op for s in list(base.strategies.values()) + list(ruleset.strategies.values()) for op in s.ops if op != "*")
    else:
        catalog, ruleset = open_catalog(db, write=False)
        ops = frozenset(op for op in catalog.candidates_by_op() if op != "*")
    chosen = select(ruleset.strategies.values(), k, m)
    stage("rule examples", len(chosen))
    return run_examples(chosen, ruleset, ops, on_done=on_done)


def example_json(r: Any) -> dict[str, Any]:
    return {"strategy": r.strategy, "example": r.label, "passed": r.passed, "message": r.message}


def compare(model: Any, example_inputs: Any = None, *, db: str | None = None, backend: str | None = None, check: bool = False,
            seed: int = 0, trust_model: bool = False, input_shapes: Any = None, dynamic_shapes: Any = None,
            stage: Callable = _no_stage, on_node: Callable[[Node], None] | None = None, estimate: bool = False) -> tuple[Any, str]:
    """opmap beside the ONNX route, node by node (opmap/onnxroute.py); returns its result and the model's name.
    ``estimate``: both networks' estimated latency, fp32 and fp16, at the export's and served sizes."""
    from opmap.building.backend import profile
    from opmap.onnxroute import compare as run_compare, require_onnx

    check_backend_and_precision(backend, "fp32")
    require_onnx()
    catalog, ruleset, captured, name = _open_and_capture(db, model, example_inputs, dynamic_shapes, trust_model,
                                                         input_specs(input_shapes), [], stage)
    stage("planning and building", len(captured.graph))
    return run_compare(captured, catalog, ruleset, profile(backend), Settings(), check=check, seed=seed, on_node=on_node,
                       estimate=estimate), name
