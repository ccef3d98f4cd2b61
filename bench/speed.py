"""Planning at the speed of loading: `make bench-speed` writes bench/SPEED.md (and bench/speed.svg).

Models are generated from code: stacked blocks of three architectures (an MLP block, a self-attention block, a
conv block) from ~20 to ~10,000 nodes, and one graph with no repetition (every layer pads its input by one more
element and scales it by its own constant: no two nodes share an op, argument values and shapes). Measured:

* whole process: ``opmap suggest M --json --no-record`` against a bare ``python -c "import torch;
  torch.export.load(M)"`` of the same archive, paired (A B A B ...), median wall and CPU seconds, each child's peak RSS;
* planning proper (loading and catalog opening excluded): ``make_plan`` in a fresh process per model, first run
  (what one ``suggest`` pays) and again in the same process (the amortised cost), with RSS before and after;
* ``build`` against the ONNX route on zoo models, in one process from the same loaded archive: opmap's plan +
  network + engine against ``torch.onnx.export(dynamo=True)`` + TensorRT's ONNX parser + engine, each route run once
  to warm up, then paired (A B A B).

* cache soundness: every zoo model planned with the per-class memos and without, compared field by field.

``--quick`` measures a few small models (for development); ``--only plan,whole,build,soundness`` runs some sections;
``--models DIR`` keeps the generated archives there for the next run (exporting 10,000 nodes takes minutes). The
machine may be shared: the page records the load average before and after, so noisy numbers say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# -- models ------------------------------------------------------------------------------------------------------
def _model(arch: str, blocks: int):
    import torch
    from torch import nn

    d = 16

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

        def forward(self, x):
            return x + self.fc2(nn.functional.gelu(self.fc1(self.ln(x))))

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out, self.ln = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d)

        def forward(self, x):
            q, k, v = self.qkv(self.ln(x)).chunk(3, dim=-1)
            a = torch.softmax(q @ k.transpose(-1, -2) * d ** -0.5, dim=-1)
            return x + self.out(a @ v)

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            return x + torch.relu(self.bn(self.conv(x)))

    class Unique(nn.Module):  # no repetition: every layer sees a longer input and its own constant
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            for i in range(self.n):
                x = torch.tanh(nn.functional.pad(x, (0, 1)) * (1.0 + i / self.n))
            return x

    if arch == "unique":
        return Unique(blocks).eval(), (torch.randn(1, 8),)
    block = {"mlp": MLP, "attention": Attention, "conv": Conv}[arch]
    example = torch.randn(1, 4, 8, 8) if arch == "conv" else torch.randn(1, 8, d)
    return nn.Sequential(*[block() for _ in range(blocks)]).eval(), (example,)


# nodes per block (as exported): mlp 6, attention 13, conv 4, unique 3
SIZES = {
    "quick": [("mlp", 4), ("attention", 8), ("unique", 7)],
    "full": [("mlp", 4), ("attention", 8), ("conv", 5), ("unique", 7), ("mlp", 170), ("conv", 250), ("unique", 333),
             ("attention", 200), ("mlp", 1700), ("attention", 770), ("mlp", 2000), ("unique", 3333)],
}
PAIRS = {"quick": 2, "full": 2}  # A B pairs per model for the whole-process comparison
# which models get the (slow) whole-process comparison, and with how many pairs
WHOLE = {"quick": {("mlp", 4): 2, ("attention", 8): 2, ("unique", 7): 2},
         "full": {("mlp", 4): 2, ("unique", 7): 2, ("attention", 200): 1, ("mlp", 2000): 1, ("unique", 3333): 1}}
ZOO_BUILD = {"quick": ["bert"], "full": ["bert", "resnet"]}


def export(arch: str, blocks: int, folder: Path) -> tuple[Path, int]:
    """The archive of a generated model and its node count (both kept in ``folder``, reused when already there)."""
    import torch

    path = folder / f"{arch}-{blocks}-torch{torch.__version__}.pt2"
    count = path.with_suffix(".nodes")
    if not (path.exists() and count.exists()):
        model, args = _model(arch, blocks)
        with torch.no_grad():
            ep = torch.export.export(model, args)
        partial = path.with_name(f".{os.getpid()}.{path.name}")  # runs sharing the folder never write one file
        torch.export.save(ep, str(partial))
        os.replace(partial, path)
        count.write_text(str(sum(1 for n in ep.graph.nodes if n.op == "call_function")))
    return path, int(count.read_text())


# -- measurements -------------------------------------------------------------------------------------------------
def timed(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({code}): {err.strip()[-300:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


PLAN_ONE = """
import json, os, sys, time
cpu = time.process_time
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20  # current, MiB
phases, t = {}, cpu()
def mark(name):
    global t
    phases[name], t = cpu() - t, cpu()
import torch
mark("import torch")
import opmap.cli
opmap.cli._tune_gc()  # the collector as the opmap process sets it (the whole-process rows run the CLI itself)
from pathlib import Path
from opmap import app as svc
from opmap.building.backend import profile
from opmap.loading.capture import Captured, _load_export_safely, file_sha256, graph_from_program, inspect_file
from opmap.planning.fixtures import Settings
from opmap.nonfinite import dumps
mark("opmap imports")
catalog, ruleset = svc.open_catalog(None)
mark("catalog and rules")
path = Path(sys.argv[1])
insp = inspect_file(path)
mark("archive gate")
program = _load_export_safely(path, insp)
mark("load")
graph = graph_from_program(program, name=path.stem)
file_sha256(path)
mark("graph")
backend = profile("tensorrt_rtx")
mark("backend")
captured = Captured(graph=graph, program=program, kind="export", sha256="-")
before = rss()
walls = []
for name in ("plan", "plan again"):
    start = time.perf_counter()
    plan = svc.make_plan(captured, catalog, ruleset, backend, Settings())
    walls.append(time.perf_counter() - start)
    mark(name)
after = rss()
dumps(svc.plan_json(plan, None, str(path)), indent=2, default=str)
mark("json")
del plan, captured, program, graph
start = cpu()
torch.export.load(str(path))  # the bare load, in the same process (torch already imported)
bare = cpu() - start
print(json.dumps({"phases": phases, "bare_load": bare, "walls": walls,
                  "rss_before_mib": before, "rss_after_mib": after}))
"""


def plan_proper(path: Path, env: dict) -> dict:
    """CPU seconds per phase of what ``suggest`` does in a fresh process, planning twice (the second run: the amortised
    cost), and a bare ``torch.export.load`` of the same archive in the same process. Run twice over one disk cache that
    starts empty: the first process is a first ``suggest`` of a new model (rule bytecode rewritten, decomposition traces
    traced; its plan is the "cold" first run), the second the steady state every other row reports."""
    def one(cache: str) -> dict:
        out = subprocess.run([PY, "-c", PLAN_ONE, str(path)], env={**env, "OPMAP_CACHE_DIR": cache}, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"planning {path.name} failed: {out.stderr.strip()[-400:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory(prefix="opmap-cache-") as cache:
        cold, r = one(cache), one(cache)
    p = r["phases"]
    ours = sum(v for k, v in p.items() if k != "plan again")
    return {"phases": p, "first_s": p["plan"], "again_s": p["plan again"], "first_wall": r["walls"][0], "again_wall": r["walls"][1],
            "cold_s": cold["phases"]["plan"], "cold_start_s": cold["phases"]["catalog and rules"],
            "rss_before_mib": r["rss_before_mib"], "rss_mib": r["rss_after_mib"], "bare_cpu": p["import torch"] + r["bare_load"],
            "suggest_est_cpu": ours, "est_ratio": ours / (p["import torch"] + p["load"])}


def whole(path: Path, env: dict, pairs: int) -> dict:
    suggest = [PY, "-m", "opmap.cli", "suggest", str(path), "--json", "--no-record", "--backend", "tensorrt_rtx"]
    bare = [PY, "-c", f"import torch; torch.export.load({str(path)!r})"]
    timed(suggest, env)  # warm the disk caches once (the steady state of a user's machine)
    a, b = [], []
    for _ in range(pairs):  # paired, interleaved: A B A B
        a.append(timed(suggest, env))
        b.append(timed(bare, env))
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return {"suggest_s": med(a, 0), "suggest_cpu": med(a, 1), "suggest_mib": max(x[2] for x in a),
            "load_s": med(b, 0), "load_cpu": med(b, 1), "load_mib": max(x[2] for x in b),
            "ratio": med(a, 0) / med(b, 0), "cpu_ratio": med(a, 1) / med(b, 1), "pairs": pairs}


BUILD_ONE = """
import json, sys, time, tempfile, torch
sys.path.insert(0, sys.argv[2])
from examples.zoo import export_arch
from opmap import app as svc
from opmap.building.backend import profile
from opmap.building.builder import build_network, serialize
from opmap.loading.capture import capture
from opmap.planning.fixtures import Settings
from opmap.onnxroute import run_onnx_route
backend = profile("tensorrt_rtx")
with tempfile.TemporaryDirectory() as tmp:
    path = tmp + "/m.pt2"
    torch.export.save(export_arch(sys.argv[1], keyword=True, dynamic=False)[0], path)
    catalog, ruleset = svc.open_catalog(tmp + "/catalog.db")
    captured = capture(path)

    def ours():
        start = time.perf_counter()
        plan = svc.make_plan(captured, catalog, ruleset, backend, Settings(), for_build=True)
        serialize(build_network(plan, captured.program, ruleset.strategies))
        return time.perf_counter() - start

    def theirs():
        route = run_onnx_route(captured.program, backend.module, captured.graph)[0]
        if not route.ok:
            raise SystemExit(f"the ONNX route fails at {route.stage}: {route.message[:200]}")
        return route.seconds

    ours(), theirs()  # warm-up: imports and first-use costs of each route
    a, b = [], []
    for _ in range(int(sys.argv[3])):
        a.append(ours())
        b.append(theirs())
print(json.dumps({"nodes": len(captured.graph), "opmap": a, "onnx": b}))
"""


SOUND_ONE = """
import json, sys, tempfile
sys.path.insert(0, sys.argv[1])
from examples.zoo import ZOO, export_arch
from opmap.app import make_plan, open_catalog
from opmap.building.backend import profile
from opmap.loading.capture import Captured, graph_from_program
from opmap.planning.fixtures import Settings
from tests.test_equivalence import plan_fields
backend = profile("tensorrt_rtx")
with tempfile.TemporaryDirectory() as tmp:
    catalog, ruleset = open_catalog(tmp + "/catalog.db")
    for name in ZOO:
        try:
            program = export_arch(name, keyword=True, dynamic=False)[0]
        except Exception as exc:
            print(json.dumps({"model": name, "error": f"export failed: {type(exc).__name__}"}), flush=True)
            continue
        captured = Captured(graph=graph_from_program(program), program=program, kind="export", sha256="-")
        a, b = (plan_fields(make_plan(captured, catalog, ruleset, backend, Settings(), cache=c)) for c in (True, False))
        differ = [x["node"] for x, y in zip(a, b) if json.dumps(x, sort_keys=True, default=str) != json.dumps(y, sort_keys=True, default=str)]
        print(json.dumps({"model": name, "nodes": len(a), "same": len(a) == len(b) and not differ, "differ": differ[:5]}), flush=True)
"""


def soundness(env: dict, rows: list[dict], on_row) -> None:
    """Every zoo model planned with the per-class memos and without them, compared field by field (the audit trail,
    choices, costs, sub-plans): tests/test_equivalence.py's check over the whole zoo. Rows arrive as models finish."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([PY, "-c", SOUND_ONE, str(ROOT)], env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        for line in proc.stdout:
            if line.startswith("{"):
                rows.append(json.loads(line))
                on_row()
        if proc.wait():
            err.seek(0)
            rows.append({"model": "(the sweep)", "error": (err.read().strip().splitlines() or ["failed"])[-1][:200]})


def build_pairs(name: str, env: dict, pairs: int) -> dict:
    out = subprocess.run([PY, "-c", BUILD_ONE, name, str(ROOT), str(pairs)], env=env, capture_output=True, text=True)
    if out.returncode:
        return {"model": name, "error": (out.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"model": name, **r, "ratio": statistics.median(r["opmap"]) / statistics.median(r["onnx"])}


# -- the page -----------------------------------------------------------------------------------------------------
def svg(rows: list[dict]) -> str:
    """Planning CPU time against nodes, one colour per architecture (log-log): solid the amortised run, dotted the
    first run in a fresh process. Drawn by hand: no plotting dependency."""
    import math

    w, h, m = 640, 400, 60
    pts = [(r["nodes"], r[k] * 1e3, r["arch"], k) for r in rows for k in ("again_s", "first_s") if r.get(k, 0) > 0]
    xs = [math.log10(p[0]) for p in pts]
    ys = [math.log10(p[1]) for p in pts]
    x0, x1, y0, y1 = min(xs) - 0.1, max(xs) + 0.1, min(ys) - 0.2, max(ys) + 0.2
    X = lambda v: m + (math.log10(v) - x0) / (x1 - x0) * (w - 2 * m)  # noqa: E731
    Y = lambda v: h - m - (math.log10(v) - y0) / (y1 - y0) * (h - 2 * m)  # noqa: E731
    colors = {"mlp": "#1f77b4", "attention": "#ff7f0e", "conv": "#2ca02c", "unique": "#d62728"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/><line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
           f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">nodes (log)</text>',
           f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">planning CPU ms (log)</text>']
    for k in range(math.ceil(x0), math.floor(x1) + 1):
        out.append(f'<text x="{X(10 ** k):.0f}" y="{h - m + 15}" text-anchor="middle">{10 ** k}</text>')
    for k in range(math.ceil(y0), math.floor(y1) + 1):
        out.append(f'<text x="{m - 5}" y="{Y(10 ** k) + 4:.0f}" text-anchor="end">{10 ** k:g}</text>')
    # the target: 50 µs per node (a line of slope 1: linear in nodes)
    lo, hi = max(10 ** x0, 10 ** y0 / 0.05), min(10 ** x1, 10 ** y1 / 0.05)
    if lo < hi:
        out.append(f'<line x1="{X(lo):.0f}" y1="{Y(lo * 0.05):.0f}" x2="{X(hi):.0f}" y2="{Y(hi * 0.05):.0f}" stroke="gray" stroke-dasharray="4"/>')
    out.append(f'<text x="{w - m}" y="{m - 22}" text-anchor="end" fill="gray">dashed gray: 50 µs per node (the target)</text>')
    out.append(f'<text x="{w - m}" y="{m - 8}" text-anchor="end" fill="gray">solid: amortised run; dotted: first run of a process</text>')
    for i, (arch, color) in enumerate(colors.items()):
        for key, dash in (("again_s", ""), ("first_s", ' stroke-dasharray="2 3"')):
            series = sorted((n, ms) for n, ms, a, k in pts if a == arch and k == key)
            if not series:
                continue
            path = " ".join(f"{'M' if j == 0 else 'L'}{X(n):.1f},{Y(ms):.1f}" for j, (n, ms) in enumerate(series))
            out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            out += [f'<circle cx="{X(n):.1f}" cy="{Y(ms):.1f}" r="3" fill="{color}"/>' for n, ms in series]
        out.append(f'<text x="{m + 10}" y="{m + 14 * i}" fill="{color}">{arch}</text>')
    out.append("</svg>")
    return "\n".join(out)


def slope(rows: list[dict], key: str) -> float | None:
    """The exponent of planning time in nodes (least squares on log-log over the models above 500 nodes): 1 is linear."""
    import math

    pts = [(math.log(r["nodes"]), math.log(r[key])) for r in rows if r["nodes"] > 500 and r.get(key, 0) > 0]
    if len(pts) < 2:
        return None
    mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / var if var else None


def marginal(rows: list[dict], key: str) -> tuple[float, float] | None:
    """Planning time as fixed + per-node cost (least squares over every model of an architecture): the per-node cost is
    what each further node adds, the fixed part what a plan pays once (catalog read, sub-planners)."""
    pts = [(r["nodes"], r[key]) for r in rows if r.get(key, 0) > 0]
    if len(pts) < 2:
        return None
    mx, my = statistics.fmean(p[0] for p in pts), statistics.fmean(p[1] for p in pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    if not var:
        return None
    per = sum((x - mx) * (y - my) for x, y in pts) / var
    return my - per * mx, per


def sound_page(sound: list[dict], seconds: float, argv: list[str], commit: str) -> str:
    same = [r for r in sound if r.get("same")]
    cmd = "make bench-speed" if not argv else f"python bench/speed.py {' '.join(argv)}"
    lines = [
        "# Cache soundness over the zoo", "",
        f"Generated by `{cmd}` in {seconds:.0f} s at commit `{commit}`. Every zoo model (exported by keyword, static) "
        "planned with the per-class memos (verdicts, choices, sub-plans) and without them, compared field by field: "
        f"verdicts with their reasons and evidence, choices, runners-up, costs, sub-plans (tests/test_equivalence.py's "
        f"check). **{len(same)} of {len(sound)}** identical ({sum(r['nodes'] for r in same)} nodes).", "",
        "| model | nodes | with memos = without |", "|---|---:|---|",
    ]
    for r in sound:
        verdict = "yes" if r.get("same") else f"**no**: {', '.join(r['differ'])}" if "same" in r else f"not compared: {r['error']}"
        lines.append(f"| {r['model']} | {r.get('nodes', '-')} | {verdict} |")
    return "\n".join(lines + [""])


REPETITIVE = ("mlp", "attention", "conv")  # stacked blocks; "unique" is the graph with no repetition


def targets(rows: list[dict], builds: list[dict]) -> list[str]:
    """Issue 11's targets, each with what this run measured: met, or the gap."""
    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    out = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    whole = [r for r in rows if "ratio" in r]
    if whole:
        worst = max(whole, key=lambda r: r["ratio"])
        out.append(f"| `suggest` ≤ 1.1× a bare `torch.export.load`, 20 to 10,000 nodes | {min(r['ratio'] for r in whole):.2f}–"
                   f"{worst['ratio']:.2f}× wall over {len(whole)} models ({min(r['nodes'] for r in whole)}–"
                   f"{max(r['nodes'] for r in whole)} nodes; worst {worst['arch']} ×{worst['blocks']}) | {verdict(worst['ratio'] <= 1.1)} |")
    planned = [r for r in rows if "again_s" in r]
    for label, group in (("repetitive graphs", [r for r in planned if r["arch"] in REPETITIVE]),
                         ("the graph with no repetition", [r for r in planned if r["arch"] not in REPETITIVE])):
        fits = [(arch, marginal([r for r in group if r["arch"] == arch], "again_s")) for arch in dict.fromkeys(r["arch"] for r in group)]
        fits = [(a, f) for a, f in fits if f is not None]
        if fits:
            worst = max(f[1] for _, f in fits)
            big = [r for r in group if r["nodes"] >= 8000]
            per = "; ".join(f"{a} {f[1] * 1e6:.0f} µs" for a, f in fits)
            at = "; ".join(f"{r['arch']} ×{r['blocks']}: {r['again_s'] / r['nodes'] * 1e6:.0f} µs" for r in big)
            out.append(f"| planning ≤ 50 µs per node amortised ({label}) | per node (fit): {per}" + (f"; total ÷ nodes at ~10,000: {at}" if at else "")
                       + f" | {verdict(worst <= 50e-6)} |")
        for r in (r for r in group if r["nodes"] >= 9000):
            out.append(f"| planning < 1 s for a 10,000-node graph ({r['arch']} ×{r['blocks']}) | {r['again_s']:.2f} s amortised, "
                       f"{r['first_s']:.2f} s first run" + (f", {r['cold_s']:.1f} s with an empty disk cache" if "cold_s" in r else "")
                       + f" | {verdict(r['first_s'] < 1)} |")
    lone = [r for r in planned if r["arch"] not in REPETITIVE and r["nodes"] >= 9000]
    note = ""
    if any(r["first_s"] >= 1 for r in lone):  # the gap, and where its time goes (after the table)
        note = ("Where the no-repetition graph's time goes (from cProfile of its planning): every node is its own "
                "equivalence class, so nothing is served from the memos — each node's ~4 candidate rules are judged in full, "
                "and each padding node expands into PyTorch's decomposition, planned as a sub-graph by a planner of its own; "
                "with an empty disk cache each distinct decomposition is also traced (make_fx, ~10 ms each: the *cold* "
                "column). The stacks above are the same ops repeated and take 30–40 µs a node. The next step is tracing a "
                "decomposition once over symbolic sizes and instantiating it per size.")
    ok_builds = [b for b in builds if "ratio" in b]
    if ok_builds:
        worst = max(b["ratio"] for b in ok_builds)
        ratios = ", ".join(f"{b['model']} {b['ratio']:.2f}×" for b in ok_builds)
        out.append(f"| `build` ≤ 0.7× the ONNX route | {ratios} | {verdict(worst <= 0.7)} |")
    out.append("")
    return out + ([note, ""] if note else [])


def page(mode: str, rows: list[dict], builds: list[dict], load: tuple, seconds: float, argv: list[str], commit: str) -> str:
    cmd = "make bench-speed" if not argv else f"python bench/speed.py {' '.join(argv)}"
    lines = [
        "# Planning speed", "",
        f"Generated by `{cmd}` in {seconds:.0f} s at commit `{commit}`. Load average (1 min) before {load[0]:.1f}, after "
        f"{load[1]:.1f} on {os.cpu_count()} cores: when the machine is shared, absolute times are inflated and noisy; ratios "
        "are paired (A B A B, median) to cancel part of it, and CPU seconds (user + system) are less sensitive to load "
        "than wall seconds.", "",
        *targets(rows, builds),
    ]
    whole_rows = [r for r in rows if "ratio" in r]
    if whole_rows:
        lines += [
            "## Whole process", "",
            "`opmap suggest M --json --no-record` (disk caches warm, catalog as it is) against a bare "
            "`python -c \"import torch; torch.export.load(M)\"` of the same archive; median of the pairs, peak RSS of each process:", "",
            "| model | nodes | pairs | suggest wall / CPU | bare load wall / CPU | ratio wall (target ≤ 1.1) | ratio CPU | suggest peak | load peak |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in whole_rows:
            lines.append(f"| {r['arch']} ×{r['blocks']} | {r['nodes']} | {r['pairs']} | {r['suggest_s']:.2f} s / {r['suggest_cpu']:.2f} s | "
                         f"{r['load_s']:.2f} s / {r['load_cpu']:.2f} s | {r['ratio']:.2f}× | {r['cpu_ratio']:.2f}× | "
                         f"{r['suggest_mib']} MiB | {r['load_mib']} MiB |")
        lines.append("")
    if any("first_s" in r for r in rows):
        lines += [
            "## Planning proper", "",
            "`make_plan` (rules, catalog reads, costs; loading and catalog opening excluded) in a fresh process per model: "
            "the first run (what one `suggest` pays, one-off costs included) and a second run in the same process (the "
            "amortised cost per node), in CPU seconds of the process (wall seconds in brackets); the process's resident "
            "memory before planning (program loaded, catalog open) and after both plans. *Cold*: the same first run in "
            "a process whose disk cache starts empty (the first `suggest` of a model never seen: decomposition traces "
            "traced, not read), and that process's extra cost of opening the catalog (rule bytecode rewritten):", "",
            "| model | nodes | cold: plan, catalog | first run | per node | again | per node (target ≤ 50 µs) | RSS before → after |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in (r for r in rows if "first_s" in r):
            cold = (f"{r['cold_s'] * 1e3:.0f} ms, +{max(r['cold_start_s'] - r['phases']['catalog and rules'], 0):.2f} s"
                    if "cold_s" in r else "-")
            lines.append(f"| {r['arch']} ×{r['blocks']} | {r['nodes']} | {cold} | {r['first_s'] * 1e3:.0f} ms ({r['first_wall'] * 1e3:.0f}) | "
                         f"{r['first_s'] / r['nodes'] * 1e6:.0f} µs | {r['again_s'] * 1e3:.0f} ms ({r['again_wall'] * 1e3:.0f}) | "
                         f"{r['again_s'] / r['nodes'] * 1e6:.0f} µs | {r['rss_before_mib']} → {r['rss_mib']} MiB |")
        fits = []
        for arch in dict.fromkeys(r["arch"] for r in rows):
            mine = [r for r in rows if r["arch"] == arch and "first_s" in r]
            exp, lin = slope(mine, "again_s"), marginal(mine, "again_s")
            if exp is None or lin is None:
                continue
            first = slope(mine, "first_s")
            fits.append(f"| {arch} | {len(mine)} ({', '.join(str(r['nodes']) for r in mine)}) | {exp:.2f} | "
                        f"{'-' if first is None else f'{first:.2f}'} | {lin[1] * 1e6:.1f} µs | {lin[0] * 1e3:.0f} ms |")
        lines += ["", "Growth with nodes, per architecture: the least-squares exponent of planning time in nodes over its "
                  "models above 500 nodes (1 is linear), and a straight-line fit of the amortised run over all its models, "
                  "time = fixed + nodes × per-node cost (the per-node cost is what amortising tends to on large graphs):", "",
                  "| architecture | models (nodes) | exponent, amortised | exponent, first run | per node (target ≤ 50 µs) | fixed |",
                  "|---|---|---:|---:|---:|---:|", *(fits or ["| (fewer than two models per architecture) | | | | | |"]),
                  "", "![planning time against nodes](speed.svg)", ""]
        names = list(rows[0]["phases"]) if "phases" in rows[0] else []
        lines += [
            "## Where the time goes", "",
            "CPU seconds per phase of what `suggest --json` does, in the same fresh process as the planning rows above. "
            "`load` is opmap's safe loader (torch's deserializer, first use: it imports torch.export's serializer and "
            "dynamo, as a bare `torch.export.load` does); the last columns set it beside `torch.export.load` of the same "
            "archive run afterwards in the same process (warm: those imports done), and estimate `suggest` against a "
            "bare `python -c \"import torch; torch.export.load(M)\"` as (every phase but the second plan) / (import "
            "torch + load). The collector is tuned as the `opmap` process tunes it; the whole-process table measures the "
            "real thing.", "",
            "| model | nodes | " + " | ".join(names) + " | torch.export.load, warm | suggest (est.) | bare (est.) | ratio (est., target ≤ 1.1) |",
            "|---|---:|" + "---:|" * (len(names) + 4),
        ]
        for r in (r for r in rows if "phases" in r):
            p = r["phases"]
            ours = sum(v for k, v in p.items() if k != "plan again")
            bare = p["import torch"] + p["load"]
            lines.append(f"| {r['arch']} ×{r['blocks']} | {r['nodes']} | " + " | ".join(f"{p[k]:.2f}" for k in names)
                         + f" | {r['bare_cpu'] - p['import torch']:.2f} | {ours:.2f} | {bare:.2f} | {ours / bare:.2f}× |")
        lines.append("")
    if builds:
        lines += [
            "## build against the ONNX route", "",
            "Zoo models, one process each, both routes from the same loaded archive: opmap (plan for building, network, "
            "serialized engine) against the ONNX route (`torch.onnx.export(dynamo=True)`, TensorRT-RTX's ONNX parser, "
            "serialized engine); each route once to warm up, then paired A B A B; median seconds:", "",
            "| model | nodes | opmap route | ONNX route | ratio (target ≤ 0.7) |", "|---|---:|---:|---:|---:|",
        ]
        for b in builds:
            if "error" in b:
                error = b["error"].replace("|", "\\|")
                lines.append(f"| {b['model']} | - | not measured: {error} | | |")
                continue
            lines.append(f"| {b['model']} | {b['nodes']} | {', '.join(f'{x:.2f}' for x in b['opmap'])} s | "
                         f"{', '.join(f'{x:.2f}' for x in b['onnx'])} s | {b['ratio']:.2f}× |")
        lines.append("")
    lines += ["Cache soundness (every zoo model planned with and without the per-class memos): [SOUNDNESS.md](SOUNDNESS.md).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small models (development)")
    parser.add_argument("--only", default="plan,whole,build,soundness", help="sections to run: plan, whole, build, soundness")
    parser.add_argument("--models", help="keep the generated archives in this folder (reused by the next run)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "SPEED.md"))
    parser.add_argument("--merge", nargs="+", help="render one page from the results of runs made in parallel (their .json)")
    opts = parser.parse_args()
    mode = "quick" if opts.quick else "full"
    if opts.merge:
        runs = [json.loads(Path(f).read_text()) for f in opts.merge]
        rows: dict[tuple, dict] = {}
        for run in runs:
            for r in run["rows"]:
                rows.setdefault((r["arch"], r["blocks"]), {}).update(r)
        order = {key: i for i, key in enumerate(SIZES["full"])}
        merged = sorted(rows.values(), key=lambda r: order.get((r["arch"], r["blocks"]), 99))
        argv = [" ".join(run["argv"]) for run in runs]
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        builds = [b for run in runs for b in run["builds"]]
        if len(runs) == 1 and "seconds" in runs[0]:  # one run, rendered again (a newer page from the same measurements)
            run = runs[0]
            text = page(mode, merged, builds, tuple(run["load"]), run["seconds"], run["argv"], run["commit"])
            text = text.replace(f" at commit `{run['commit']}`.", f" at commit `{run['commit']}` (page rendered again with "
                                f"`--merge` at `{commit}`).", 1)
        else:
            loads = [x for run in runs for x in run.get("load", [])] or list(os.getloadavg()[:2])
            text = page(mode, merged, builds, (min(loads), max(loads)), 0, [], commit)
            text = text.replace("Load average (1 min) before", "Load average (1 min, over the runs) lowest", 1).replace(", after ", ", highest ", 1)
            made = ", ".join(f"`{run['commit']}`" for run in runs if "commit" in run)
            if made:
                text = text.replace(f" at commit `{commit}`.", f" at commits {made} (rendered at `{commit}`).", 1)
            text = text.replace("Generated by `make bench-speed` in 0 s", "Generated by several runs (`python bench/speed.py "
                                + "`, `python bench/speed.py ".join(argv) + "`; a later run's rows replace an earlier one's), "
                                "merged with `--merge`,")
        Path(opts.out).write_text(text)
        Path(opts.out).with_name("speed.svg").write_text(svg([r for r in merged if "first_s" in r]))
        return
    sections = set(opts.only.split(","))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "opmap"],
                           capture_output=True, text=True).stdout.strip()
    commit += " (with uncommitted changes)" if dirty else ""
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    out = Path(opts.out)
    with tempfile.TemporaryDirectory(prefix="opmap-speed-") as tmp:
        folder = Path(opts.models) if opts.models else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OPMAP_DB": str(Path(tmp) / "catalog.db")}
        rows, builds, sound = [], [], []

        def write() -> None:  # after every model: a run cut short still leaves its page (and its results, for --merge)
            if rows or builds:
                out.with_suffix(".json").write_text(json.dumps({"rows": rows, "builds": builds, "argv": sys.argv[1:], "commit": commit,
                                                                "load": [load0, os.getloadavg()[0]],
                                                                "seconds": time.perf_counter() - started}, indent=1))
                out.write_text(page(mode, rows, builds, (load0, os.getloadavg()[0]), time.perf_counter() - started, sys.argv[1:], commit))
            if sound:
                out.with_name("SOUNDNESS.md").write_text(sound_page(sound, time.perf_counter() - started, sys.argv[1:], commit))
            if any("first_s" in r for r in rows):
                out.with_name("speed.svg").write_text(svg([r for r in rows if "first_s" in r]))

        for arch, blocks in SIZES[mode]:
            if not sections & {"plan", "whole"}:
                break
            path, nodes = export(arch, blocks, folder)
            row = {"arch": arch, "blocks": blocks, "nodes": nodes}
            if "plan" in sections:
                row.update(plan_proper(path, env))
            if "whole" in sections and (arch, blocks) in WHOLE[mode]:
                row.update(whole(path, env, WHOLE[mode][(arch, blocks)]))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            write()
        if "build" in sections:
            for name in ZOO_BUILD[mode]:
                builds.append(build_pairs(name, env, PAIRS[mode]))
                print(json.dumps(builds[-1]), file=sys.stderr, flush=True)
                write()
        if "soundness" in sections:
            soundness(env, sound, write)  # the per-class memos are sound: every zoo model, with and without them
        write()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
