"""What `opmap build`'s default reference check costs beside the build itself (bench/CHECK.md).

For each model: capture once, then time the build as `opmap build` does it (plan, network, engine serialization) and
the check it runs by default (the reference interpreter against PyTorch at one drawn point: a static model's shape, a
dynamic model's opt point), in one process, the median of ``--repeat`` runs each (and the first).

    python bench/check_cost.py [--repeat 2] [--out bench/CHECK.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class SmallCNN(torch.nn.Module):
    """Three conv blocks and a head on 3x64x64: the small CNN people bring."""

    def __init__(self) -> None:
        super().__init__()
        layers, c = [], 3
        for out in (16, 32, 64):
            layers += [torch.nn.Conv2d(c, out, 3, padding=1), torch.nn.BatchNorm2d(out), torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
            c = out
        self.body, self.head = torch.nn.Sequential(*layers), torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def models():
    from examples.detector import export_detector
    from examples.dynamic import export_text
    from examples.zoo import export_arch

    def cnn(dynamic: bool, size: int = 64):
        torch.manual_seed(0)
        shapes = {"x": {0: torch.export.Dim("batch", min=1, max=32)}} if dynamic else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(SmallCNN().eval(), (torch.randn(2, 3, size, size),), dynamic_shapes=shapes, strict=False)

    yield "detector (examples/detector.py, static)", export_detector
    yield "small CNN (3 conv blocks, 64x64, static)", lambda: cnn(False)
    yield "small CNN (dynamic batch 1..32)", lambda: cnn(True)
    yield "small CNN at 224x224 (dynamic batch 1..32)", lambda: cnn(True, 224)
    yield "BERT (examples/dynamic.py, dynamic batch and sequence)", lambda: export_text("bert")
    yield "ResNet (zoo, dynamic batch, height, width)", lambda: export_arch("resnet", dynamic=True)[0]

    def resnet50():
        import transformers as T

        torch.manual_seed(0)
        model = T.ResNetModel(T.ResNetConfig()).eval()  # the default config is ResNet-50; random weights
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.export.export(model, (torch.randn(1, 3, 224, 224),), strict=False)

    yield "ResNet-50 (transformers' default config, 1x3x224x224, static)", resnet50


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "CHECK.md"))
    args = parser.parse_args()

    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.loading.capture import Captured, graph_from_program
    from opmap.planning.fixtures import Settings

    import tempfile

    catalog, ruleset = svc.open_catalog(f"sqlite:///{tempfile.mkdtemp()}/catalog.db")
    rows = []
    for label, export in models():
        program = export()
        captured = Captured(graph=graph_from_program(program), program=program, kind="export")
        build_s, check_s, trt_s, checked = [], [], [], None
        for _ in range(args.repeat):
            start = time.perf_counter()
            plan, built = svc.build(captured, catalog, ruleset, profile(None), Settings(), "fp32", {})
            build_s.append(time.perf_counter() - start)
            trt_s.append(built.build_seconds)
            start = time.perf_counter()
            checked = svc.check_built(plan, built, program, {})
            check_s.append(time.perf_counter() - start)
        b, c = statistics.median(build_s), statistics.median(check_s)
        rows.append((label, len(captured.graph), built.network.num_layers, build_s[0], b, statistics.median(trt_s), check_s[0], c, checked))
        print(f"{label}: build {build_s[0]:.2f}s first, {b:.2f}s median, check {check_s[0]:.2f}s first, {c:.2f}s "
              f"median ({c / b:.0%}) at {checked['point']} ({checked['shape']}) ok={checked['ok']}", flush=True)
    commands = []  # the whole command, as a user runs it: process start, capture, plan, build, (check), write
    for label, export in [m for i, m in enumerate(models()) if i in (3, 4, 6)]:
        import subprocess

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt2"
            torch.export.save(export(), str(path))
            env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "OPMAP_DB": f"{tmp}/catalog.db"}
            timed = {}
            for flag in ("--no-check", "--check", "--no-check", "--check"):  # the first of each warms the catalog
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "opmap.cli", "build", str(path), "-o", f"{tmp}/m.engine", flag],
                                      capture_output=True, text=True, env=env)
                assert done.returncode == 0, done.stderr
                timed[flag] = time.perf_counter() - start
            commands.append((label, timed["--no-check"], timed["--check"]))
            print(f"{label}: `opmap build` {timed['--no-check']:.2f}s with --no-check, {timed['--check']:.2f}s checked", flush=True)
    import platform

    lines = ["# The cost of `opmap build`'s reference check", "",
             f"`python bench/check_cost.py --repeat {args.repeat}` on {platform.machine()}, torch {torch.__version__}, "
             f"{profile(None).name} {profile(None).version}, one process, a fresh catalog. *build* is what `opmap build "
             "--no-check` does after capture (plan, network, engine serialization; *TensorRT* is "
             "`build_serialized_network` alone); *check* is what the default adds: PyTorch and the reference interpreter "
             f"at one drawn point, compared. *first*: the model's first build in the process (planning not yet memoized); "
             f"*median*: of {args.repeat} runs. Capture and process start (seconds) are the same with or without the check. "
             f"The machine is shared (load average {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores): "
             "single timings vary by 2x between runs; the ratios' order of magnitude is what this table shows.",
             "",
             "| model | nodes | layers | build first (s) | build median (s) | TensorRT (s) | check first (s) | check median (s) "
             "| check / build (median) | checked at |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for label, nodes, layers, first, b, trt, cfirst, c, checked in rows:
        lines.append(f"| {label} | {nodes} | {layers} | {first:.2f} | {b:.2f} | {trt:.2f} | {cfirst:.2f} | {c:.2f} | {c / b:.0%} | "
                     f"{checked['point']} ({checked['shape']}): {'agrees' if checked['ok'] else checked['ok']} |")
    lines += ["", "The whole `opmap build` command (a new process: imports, capture, plan, build, check, write; the second run "
              "of each, the catalog warm):", "", "| model | `--no-check` (s) | checked (s) |", "|---|---:|---:|"]
    lines += [f"| {label} | {a:.2f} | {b:.2f} |" for label, a, b in commands]
    lines += ["", "**The default.** `opmap build` checks at one point unless `--no-check`: on the small models the check "
              "costs a fraction of the build step, on image models at a large opt point (8x3x224x224) or a full-size "
              "CNN (ResNet-50) one to three times the build step: seconds, beside the several seconds the command costs "
              "anyway (process start, imports, capture), for the one promise that matters: an engine `build` writes "
              "agrees with PyTorch at that point. The check's cost is PyTorch's forward plus the interpreter's "
              "(about three PyTorch forwards on ResNet-50: its convolutions, and batch norm as elementwise layers) at the "
              "checked point; it grows with the opt point's size, which `--shape NAME=MIN:OPT:MAX` sets."]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
