"""The coverage table (bench/COVERAGE.md): every overload of PyTorch's Core ATen inference opset, of Torch-TensorRT's
converter list and of opmap's catalog, with what serves it — proven by the conformance machinery, not a kept list.

Each strategy's accept examples (its own, plus the extra cases of tests/test_conformance.py) are built for real on
tensorrt_rtx and verified against PyTorch (``opmap.checking.examples.conformance``), then exported with every dim dynamic
and checked at the profile's min/opt/max (``dynamic_conformance``). A rule that can only refuse (no TensorRT network
computes its op) is judged on its reject examples, and its reason is the table's. In-place and ``out=`` overloads are
covered through the one in-place rule where their functional op is. Results are cached per strategy source and
example (``$OPMAP_CACHE_DIR``), so a rerun only redoes what changed. Run: ``make coverage``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from opmap.planning import diskcache  # noqa: E402
from opmap.checking.examples import capture_example, conformance, dynamic_conformance, find_node, judge_example  # noqa: E402
from opmap.loading.inplace import functional_op  # noqa: E402
from opmap.planning.strategy import WILDCARD# noqa: E402
from opmap.planning.sourcetext import function_source# noqa: E402
from tests.test_conformance import EXTRA, FULL_TENSORRT_ONLY, RULESET  # noqa: E402

TORCH_TRT = ROOT / "bench" / "data" / "torch-tensorrt-converters.txt"
OUT = ROOT / "bench" / "COVERAGE.md"
ENGINE_SOURCES = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((ROOT / "opmap" / "engine").glob("*.py")))).hexdigest()


def core_aten() -> set[str]:
    """Overloads tagged ``torch.Tag.core`` in this torch, less the ``*_backward`` ones (training only). Every aten
    schema is walked: ``dir(torch.ops.aten)`` lists only the packets loaded so far, so it varied with what ran first."""
    out = set()
    names = {s.name.split("::", 1)[1].split(".")[0] for s in torch._C._jit_get_all_schemas() if s.name.startswith("aten::")}
    for name in sorted(names):
        packet = getattr(torch.ops.aten, name, None)
        if not hasattr(packet, "overloads") or "backward" in name:
            continue
        for over in packet.overloads():
            if torch.Tag.core in getattr(packet, over).tags:
                out.add(f"aten.{name}.{over}")
    return out


def torch_trt() -> set[str]:
    return {line.strip() for line in TORCH_TRT.read_text().splitlines() if line.strip() and not line.startswith("#")}


@functools.lru_cache(maxsize=None)
def _module_source(module: str) -> str:
    """A hash of the rule module and the shared emit helpers: an emit function's helpers are not in its source hash."""
    path = getattr(sys.modules.get(module), "__file__", None)
    files = [p for p in (path, ROOT / "opmap" / "rules" / "common.py") if p]
    return hashlib.sha256(b"".join(Path(p).read_bytes() for p in files)).hexdigest()


def _key(strat, i: int, ex, what: str) -> str:
    try:
        src = function_source(ex.fn) if not isinstance(ex.fn, torch.nn.Module) else repr(ex.fn)
    except (OSError, TypeError):
        src = repr(ex.fn)
    shapes = repr([(tuple(x.shape), str(x.dtype)) if hasattr(x, "shape") else repr(x) for x in ex.inputs])
    return diskcache.key("coverage", what, torch.__version__, ENGINE_SOURCES, strat.id, strat.source_hash,
                         _module_source(getattr(strat.rule, "__module__", "")), str(i), src, shapes,
                         repr(ex.node), repr(ex.dynamic_shapes is None), repr(ex.decompose))


def _cached(key: str, compute):
    hit = diskcache.load("coverage", key)
    if hit is not None:
        return json.loads(hit)
    value = compute()
    diskcache.store("coverage", key, json.dumps(value).encode())
    return value


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def run_accept(strat, i, ex) -> dict:
    """One accept example: the node's op, and whether it built and verified (static), and under all-dynamic dims."""
    def static():
        try:
            graph = capture_example(ex).graph
            op = find_node(graph, strat, ex.node).op
        except Exception as exc:  # noqa: BLE001 - an example that does not export is a failed row
            return {"op": None, "built": False, "verified": False, "why": _short(exc)}
        row = {"op": op, "built": False, "verified": False, "why": ""}
        try:
            kwargs = {}
            if strat.id in FULL_TENSORRT_ONLY:
                kwargs = {"backend": "tensorrt", "serialize_engine": False, "api_of": "tensorrt_rtx"}
            report, built = conformance(strat, ex, RULESET, **kwargs)
            row["built"] = bool(built.engine) or strat.id in FULL_TENSORRT_ONLY
            row["verified"] = bool(report.ok)
            if not report.ok:
                row["why"] = _short(f"compared {report.compared} of {report.expected}: "
                                    + "; ".join(str(o.to_dict()) for o in report.outputs if not o.ok))
        except Exception as exc:  # noqa: BLE001
            row["why"] = _short(f"{type(exc).__name__}: {exc}")
        return row

    def dynamic():
        if ex.dynamic_shapes is not None or strat.id in FULL_TENSORRT_ONLY:
            return None
        try:
            res = dynamic_conformance(strat, ex, RULESET)
        except Exception as exc:  # noqa: BLE001
            return {"ready": False, "why": _short(f"{type(exc).__name__}: {exc}")}
        if res.reports is None:
            why = res.verdict.reason if not res.verdict.applies else "; ".join(f"{k}: {v}" for k, v in (res.unmapped or {}).items())
            return {"ready": False, "rejected": True, "why": _short(why)}
        ok = bool(res.reports) and all(r.ok for r in res.reports.values())
        if strat.kind == "approximate":
            ok = bool(res.reports)
        return {"ready": ok, "dims": res.dynamic_dims, "why": "" if ok else _short(
            {k: f"compared {r.compared} of {r.expected}" for k, r in res.reports.items() if not r.ok} or res.skipped)}

    row = _cached(_key(strat, i, ex, "static"), static)
    row["dynamic"] = _cached(_key(strat, i, ex, "dynamic"), dynamic) if row["verified"] else None
    return row


def run_reject(strat, i, ex) -> dict:
    """A refusing rule's reject example: the node's op and the reason the rule gives."""
    def judge():
        try:
            verdict, node = judge_example(strat, ex, RULESET, frozenset())
        except Exception as exc:  # noqa: BLE001
            return {"op": None, "why": _short(exc)}
        return {"op": node.op, "outcome": str(verdict.outcome), "why": _short(verdict.reason or "", 400)}

    return _cached(_key(strat, i, ex, "reject"), judge)


def collect(strategies, progress: bool) -> tuple[dict, dict]:
    """op -> strategy id -> aggregated result; op -> [(strategy id, reason)] for refusing rules."""
    served: dict[str, dict[str, dict]] = defaultdict(dict)
    reasons: dict[str, list[tuple[str, str]]] = defaultdict(list)
    start = time.time()
    for n, strat in enumerate(strategies, 1):
        emits = strat.emit_fn is not None or strat.expand_fn is not None
        examples = [e for e in strat.examples if e.expect == "accept"] + EXTRA.get(strat.id, [])
        if emits:
            for i, ex in enumerate(examples):
                row = run_accept(strat, i, ex)
                op = row["op"] or "?"
                agg = served[op].setdefault(strat.id, {"examples": 0, "built": 0, "verified": 0, "dynamic": None, "why": ""})
                agg["examples"] += 1
                agg["built"] += row["built"]
                agg["verified"] += row["verified"]
                if not row["verified"] and not agg["why"]:
                    agg["why"] = row["why"]
                dyn = row.get("dynamic")
                if dyn is not None and agg["dynamic"] is not False:
                    agg["dynamic"] = dyn["ready"]
                    if not dyn["ready"]:
                        agg["dynamic_why"] = dyn["why"]
        elif strat.no_accept:  # a rule that only refuses: its reject examples carry the reason
            rejects = [e for e in strat.examples if e.expect == "reject"]
            for i, ex in enumerate(rejects):
                row = run_reject(strat, i, ex)
                if row["op"] and row.get("outcome") in ("REJECTED", "NOT_APPLICABLE") and row["why"]:
                    reasons[row["op"]].append((strat.id, row["why"]))
        if progress:
            print(f"[{n}/{len(strategies)} {time.time() - start:5.0f}s] {strat.id}", file=sys.stderr, flush=True)
    return served, reasons


def status_of(op: str, served, reasons, ops_of) -> tuple[str, str]:
    """(status, detail): covered / in-place / reason / gap."""
    mine = served.get(op, {})
    if any(a["verified"] for a in mine.values()):
        return "covered", ""
    twin = functional_op(op)
    if twin is not None and any(a["verified"] for a in served.get(twin[0], {}).values()):
        return "in-place", f"through `inplace` as `{twin[0]}`"
    if op in reasons:
        return "reason", reasons[op][0][1]
    if mine:
        first = next(iter(mine.values()))
        return "gap", f"not verified: {first['why']}"
    listed = ops_of.get(op)
    return "gap", (f"listed by {', '.join(listed)}, but no accept example exercises it" if listed else "no strategy")


def render(core: set[str], trt: set[str], served, reasons, ops_of, seconds: float) -> str:
    catalog = {op for op in ops_of if op != WILDCARD}
    union = sorted(core | trt | catalog | set(served) - {"?"})
    rows, totals = [], {"core": defaultdict(int), "trt": defaultdict(int), "all": defaultdict(int)}
    for op in union:
        status, detail = status_of(op, served, reasons, ops_of)
        mine = served.get(op, {})
        strategies = ", ".join(f"`{sid}` ({RULESET.strategies[sid].kind})" for sid in mine) or \
            ", ".join(f"`{sid}`" for sid, _ in reasons.get(op, [])) or "—"
        built = "yes" if any(a["built"] for a in mine.values()) else ("via in-place" if status == "in-place" else "no")
        verified = "yes" if status == "covered" else ("via in-place" if status == "in-place" else "no")
        dyn_values = [a["dynamic"] for a in mine.values() if a["verified"] and a["dynamic"] is not None]
        dynamic = "yes" if any(dyn_values) else ("no" if dyn_values else "—")
        if dynamic == "no" and not detail:
            detail = "dynamic: " + next(a.get("dynamic_why", "") for a in mine.values() if a["dynamic"] is False)
        tags = ("core" if op in core else "") + (" trt" if op in trt else "")
        rows.append(f"| `{op}` | {tags.strip() or '—'} | {strategies} | {built} | {verified} | {dynamic} | {_short(detail, 220)} |")
        for name, members in (("core", core), ("trt", trt), ("all", set(union))):
            if op in members:
                totals[name][status] += 1
                totals[name]["n"] += 1
    def line(label, t):
        ok = t["covered"] + t["in-place"] + t["reason"]
        return (f"| {label} | {t['n']} | {t['covered']} | {t['in-place']} | {t['reason']} | {t['gap']} | "
                f"{100 * ok / max(t['n'], 1):.0f}% |")

    head = [
        "# Coverage",
        "",
        "Generated by `make coverage` (`python bench/coverage.py`); do not edit by hand. "
        f"torch {torch.__version__}; {len(RULESET.strategies)} strategies; {seconds:.0f} s (cached results reused).",
        "",
        "Every overload of PyTorch's Core ATen inference opset (`torch.Tag.core`, less `*_backward`), of Torch-TensorRT's "
        "converter list (`bench/data/torch-tensorrt-converters.txt`) and of opmap's catalog. The source of truth is the "
        "conformance machinery: a strategy *covers* an overload only when one of its accept examples (its own, or the "
        "extra cases of `tests/test_conformance.py`) has that op, **builds** an engine on tensorrt_rtx and **verifies** "
        "against PyTorch. *Dynamic* is the same example exported with every dim dynamic, verified at the profile's "
        "min/opt/max (`—`: not checked, e.g. an example that already pins its own dynamic dims). *In-place* overloads "
        "(`op_`, `out=`) are covered through the one in-place rule where their functional op is. *Reason*: a rule "
        "refuses the op and says why no TensorRT network computes it, and what the user can do. *Gap*: none of these.",
        "",
        "| reference | overloads | covered | in-place | reason | gap | covered or reasoned |",
        "|---|---:|---:|---:|---:|---:|---:|",
        line("Core ATen (inference)", totals["core"]),
        line("Torch-TensorRT converters", totals["trt"]),
        line("union (with opmap's catalog)", totals["all"]),
        "",
        "| overload | in | strategies (kind) | built | verified | dynamic | note |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="strategy ids containing this text (a partial table, for debugging)")
    parser.add_argument("-o", "--output", default=str(OUT))
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    start = time.time()
    strategies = [s for s in RULESET.strategies.values() if not args.only or args.only in s.id]
    served, reasons = collect(strategies, progress=not args.quiet)
    ops_of: dict[str, list[str]] = defaultdict(list)
    for s in RULESET.strategies.values():
        for op in s.ops:
            ops_of[op].append(s.id)
    text = render(core_aten(), torch_trt(), served, reasons, ops_of, time.time() - start)
    Path(args.output).write_text(text)
    print(text.split("\n| overload")[0].split("\n\n")[-1])


if __name__ == "__main__":
    main()
