"""Planning at the speed of loading: `make bench-speed` writes bench/SPEED.md (and bench/speed.svg).

Models are generated from code: stacked blocks of three architectures (an MLP block, a self-attention block, a
conv block) from ~20 to ~10,000 nodes, and one graph with no repetition (every layer a different width). Measured:

* whole process: ``opmap suggest M --json --no-record`` against a bare ``python -c "import torch;
  torch.export.load(M)"`` of the same archive, paired (A B A B ...), median, each with the child's peak RSS;
* planning proper (loading and catalog opening excluded): ``make_plan`` in a fresh process per model, per node.

``--quick`` measures a few small models once (for development). The machine may be shared: the page records the
load average before and after, so noisy numbers say so.
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

    class Unique(nn.Module):  # no repetition: every layer has its own width, so no two nodes share a signature
        def __init__(self, n):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(8 + i, 9 + i) for i in range(n))

        def forward(self, x):
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return x

    if arch == "unique":
        return Unique(blocks).eval(), (torch.randn(2, 8),)
    block = {"mlp": MLP, "attention": Attention, "conv": Conv}[arch]
    example = torch.randn(1, 4, 8, 8) if arch == "conv" else torch.randn(1, 8, d)
    return nn.Sequential(*[block() for _ in range(blocks)]).eval(), (example,)


# nodes per block (as exported): mlp 6, attention ~14, conv 4, unique 2
SIZES = {
    "quick": [("mlp", 4), ("attention", 8), ("unique", 10)],
    "full": [("mlp", 4), ("mlp", 40), ("mlp", 400), ("mlp", 1700), ("attention", 8), ("attention", 80), ("attention", 700),
             ("conv", 5), ("conv", 60), ("conv", 600), ("unique", 10), ("unique", 100), ("unique", 1000)],
}
PAIRED = {"quick": 2, "full": 3}  # A B pairs per model for the whole-process comparison
WHOLE = {"quick": [0, 1, 2], "full": [0, 2, 3, 6, 9, 12]}  # which models get the (slow) whole-process comparison


def export(arch: str, blocks: int, folder: Path) -> tuple[Path, int]:
    import torch

    path = folder / f"{arch}-{blocks}.pt2"
    model, args = _model(arch, blocks)
    with torch.no_grad():
        ep = torch.export.export(model, args)
    torch.export.save(ep, str(path))
    return path, sum(1 for n in ep.graph.nodes if n.op == "call_function")


# -- measurements -------------------------------------------------------------------------------------------------
def timed(cmd: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-300:]}")
    return seconds, usage.ru_maxrss // 1024


PLAN_ONE = """
import json, resource, sys, time
from opmap.app import make_plan, open_catalog
from opmap.engine.backend import profile
from opmap.engine.capture import capture
from opmap.engine.context import Settings
captured = capture(sys.argv[1])
catalog, ruleset = open_catalog(None)
backend = profile("tensorrt_rtx")
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
plan = make_plan(captured, catalog, ruleset, backend, Settings())
seconds = time.perf_counter() - start
print(json.dumps({"nodes": len(captured.graph), "seconds": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "rss_before_mib": rss_before // 1024}))
"""


def plan_proper(path: Path, env: dict) -> dict:
    out = subprocess.run([PY, "-c", PLAN_ONE, str(path)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def whole(path: Path, env: dict, pairs: int) -> dict:
    suggest = [PY, "-m", "opmap.cli", "suggest", str(path), "--json", "--no-record", "--backend", "tensorrt_rtx"]
    bare = [PY, "-c", f"import torch; torch.export.load({str(path)!r})"]
    timed(suggest, env)  # warm the disk caches once (the steady state of a user's machine)
    a, b = [], []
    for _ in range(pairs):  # paired, interleaved: A B A B
        a.append(timed(suggest, env))
        b.append(timed(bare, env))
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return {"suggest_s": med(a, 0), "suggest_mib": max(x[1] for x in a), "load_s": med(b, 0), "load_mib": max(x[1] for x in b),
            "ratio": med(a, 0) / med(b, 0)}


# -- the page -----------------------------------------------------------------------------------------------------
def svg(rows: list[dict]) -> str:
    """Planning time against nodes, one series per architecture (log-log), drawn by hand: no plotting dependency."""
    import math

    w, h, m = 640, 400, 60
    pts = [(r["nodes"], r["plan_s"] * 1e3, r["arch"]) for r in rows if r["plan_s"] > 0]
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
           f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle">planning ms (log)</text>']
    for k in range(math.ceil(x0), math.floor(x1) + 1):
        out.append(f'<text x="{X(10 ** k):.0f}" y="{h - m + 15}" text-anchor="middle">{10 ** k}</text>')
    for k in range(math.ceil(y0), math.floor(y1) + 1):
        out.append(f'<text x="{m - 5}" y="{Y(10 ** k) + 4:.0f}" text-anchor="end">{10 ** k:g}</text>')
    # the targets: 50 µs per node, and 1 s
    lo, hi = 10 ** x0, 10 ** x1
    out.append(f'<line x1="{X(lo):.0f}" y1="{Y(max(lo * 0.05, 10 ** y0)):.0f}" x2="{X(hi):.0f}" y2="{Y(min(hi * 0.05, 10 ** y1)):.0f}" '
               'stroke="gray" stroke-dasharray="4"/>')
    out.append(f'<text x="{w - m}" y="{m - 8}" text-anchor="end" fill="gray">dashed: 50 µs per node</text>')
    for i, (arch, color) in enumerate(colors.items()):
        series = sorted((n, ms) for n, ms, a in pts if a == arch)
        if not series:
            continue
        path = " ".join(f"{'M' if j == 0 else 'L'}{X(n):.1f},{Y(ms):.1f}" for j, (n, ms) in enumerate(series))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        out += [f'<circle cx="{X(n):.1f}" cy="{Y(ms):.1f}" r="3" fill="{color}"/>' for n, ms in series]
        out.append(f'<text x="{m + 10}" y="{m + 14 * i}" fill="{color}">{arch}</text>')
    out.append("</svg>")
    return "\n".join(out)


def page(mode: str, rows: list[dict], load: tuple, seconds: float) -> str:
    cmd = "make bench-speed" if mode == "full" else "python bench/speed.py --quick"
    lines = [
        "# Planning speed", "",
        f"Generated by `{cmd}` in {seconds:.0f} s. Load average (1 min) before {load[0]:.1f}, after {load[1]:.1f} on "
        f"{os.cpu_count()} cores: the machine was shared, so absolute times are inflated and noisy; ratios are paired "
        "(A B A B, median) to cancel part of it.", "",
        "Whole process (`suggest --json --no-record`, disk caches warm, catalog as it is) against a bare "
        "`python -c \"import torch; torch.export.load(M)\"` of the same archive; peak RSS of each process:", "",
        "| model | nodes | suggest | bare load | ratio (target ≤ 1.1) | suggest peak | load peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "ratio" in r:
            lines.append(f"| {r['arch']} ×{r['blocks']} | {r['nodes']} | {r['suggest_s']:.2f} s | {r['load_s']:.2f} s | "
                         f"{r['ratio']:.2f}× | {r['suggest_mib']} MiB | {r['load_mib']} MiB |")
    lines += ["", "Planning proper (rules, catalog lookups, costs; loading and catalog opening excluded), in a fresh process "
              "per model, with its peak RSS before and after planning:", "",
              "| model | nodes | planning | per node (target ≤ 50 µs) | RSS before → after |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arch']} ×{r['blocks']} | {r['nodes']} | {r['plan_s'] * 1e3:.0f} ms | {r['plan_s'] / r['nodes'] * 1e6:.0f} µs | "
                     f"{r['rss_before_mib']} → {r['rss_mib']} MiB |")
    lines += ["", "![planning time against nodes](speed.svg)", "",
              "| build against the ONNX route | not measured yet: it needs the ONNX route (load → `torch.onnx.export(dynamo=True)` → "
              "TensorRT's ONNX parser → build), which another piece of work adds |", "|---|---|", "",
              "Where the time goes: see the README's *Speed* section (caches) and the issue notes."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small models, once (development)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "SPEED.md"))
    opts = parser.parse_args()
    mode = "quick" if opts.quick else "full"
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="opmap-speed-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OPMAP_DB": str(folder / "catalog.db")}
        rows = []
        for i, (arch, blocks) in enumerate(SIZES[mode]):
            path, nodes = export(arch, blocks, folder)
            row = {"arch": arch, "blocks": blocks}
            planned = plan_proper(path, env)
            row.update(nodes=planned["nodes"], plan_s=planned["seconds"], rss_mib=planned["rss_mib"], rss_before_mib=planned["rss_before_mib"])
            if i in WHOLE[mode]:
                row.update(whole(path, env, PAIRED[mode]))
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            path.unlink()
    out = Path(opts.out)
    out.write_text(page(mode, rows, (load0, os.getloadavg()[0]), time.perf_counter() - started))
    out.with_name("speed.svg").write_text(svg(rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
