"""bench/CHOICE.md's second half: at served sizes, where reduced precision is placed, what it gains (estimated) and
what it costs (measured). Run through bench/choice.py (`make bench-choice`).

Models (random weights, seeded): a BERT-base encoder (hidden 768, 12 heads, FFN 3072; two layers, to keep the CPU
interpreter's runs short) at batch 8 x seq 128 and 32 x 512, and a ResNet-style CNN (a BasicBlock per stage,
64-512 channels) at 1x3x224x224, 32x3x224x224 and 1x3x640x640. Plans: fp32; fp16 where each node's measured fp16 error fits 1e-2
(the planner's rule); fp16 wherever it builds (no budget: the most fp16 can give); int8 where calibrated (2 generated
batches) and within the INT8 budget, fp16 within 1e-2 elsewhere.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from opmap import service as svc
from opmap.calibration import calibrate
from opmap.building.backend import profile
from opmap.building.builder import build_network, serialize
from opmap.loading.capture import capture
from opmap.planning.fixtures import Settings
from opmap.checking.costmodel import estimate
from opmap.checking.verify import random_inputs, verify_built
from opmap.errors import OpmapError

PLANS = {  # label -> (precision, tolerance)
    "fp32": ("fp32", 1e-3),
    "fp16 where within 1e-2": ("fp16", 1e-2),
    "fp16 wherever it builds": ("fp16", 1e9),
    "int8 (calibrated) + fp16 within 1e-2": ("int8", 1e-2),
}


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import transformers as T

        torch.manual_seed(0)
        cfg = T.BertConfig(hidden_size=768, num_hidden_layers=2, num_attention_heads=12, intermediate_size=3072)
        self.bert = T.BertModel(cfg).eval()

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                               nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.a(x) + self.skip(x))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.stages = nn.Sequential(Block(64, 64, 1), Block(64, 128, 2), Block(128, 256, 2), Block(256, 512, 2))
        self.fc = nn.Linear(512, 1000)

    def forward(self, image):
        return self.fc(self.stages(self.stem(image)).mean((2, 3)))



def _export(model: nn.Module, example: torch.Tensor):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(model.eval(), (example,), strict=False)


# name -> (export, the sizes the error is measured at: None = these sizes, else the name of the row measured instead)
SERVED = {
    "BERT-base encoder, batch 8 x seq 128": (lambda: _export(Encoder(), torch.randint(0, 30522, (8, 128))), None),
    "BERT-base encoder, batch 32 x seq 512": (lambda: _export(Encoder(), torch.randint(0, 30522, (32, 512))),
                                               "BERT-base encoder, batch 8 x seq 128"),
    "CNN, 1x3x224x224": (lambda: _export(CNN(), torch.randn(1, 3, 224, 224)), None),
    "CNN, 32x3x224x224": (lambda: _export(CNN(), torch.randn(32, 3, 224, 224)), "CNN, 1x3x224x224"),
    "CNN, 1x3x640x640": (lambda: _export(CNN(), torch.randn(1, 3, 640, 640)), "CNN, 1x3x224x224"),
}


def carry_int8(plan, small) -> None:
    """The smaller size's INT8 placement (nodes and Q/DQ scales, measured there) on this size's fp16-placed plan of the
    same model: calibration and per-node measurement at 32x512 or 32x3x224x224 take too long on this CPU."""
    by_name = {n.node.name: n for n in small.nodes}
    for np_ in plan.nodes:
        src = by_name.get(np_.node.name)
        if src is None or not src.quant:
            continue
        if np_.choice is None or src.choice is None or np_.choice.strategy != src.choice.strategy or np_.subplan is not None:
            raise OpmapError(f"{np_.node.name}: planned differently at this size; its INT8 placement does not carry over")
        np_.precision, np_.quant, np_.precision_why = src.precision, dict(src.quant), src.precision_why


def served_section(tmp: str, catalog, ruleset, device) -> list[str]:
    lines = ["## At served sizes: where reduced precision is placed, what it gains and what it costs", "",
             "Latency is the cost model's **estimate** at the size named (per-dtype throughput and bytes, TensorRT's",
             "fusions; `bench/device/README.md` has how well it predicts the card's own timings). The error is **measured**:",
             "the worst max abs error of the output against PyTorch fp32 (reference interpreter, seeded inputs). Running the",
             "interpreter at 32x512 and 640² in reduced precision on this CPU takes minutes per plan, so those rows' errors are",
             "measured on the smaller size of the same model (same weights, same precision setting), as the last column says.",
             "`fp16 / int8` counts the nodes placed below fp32. *fp16 where within 1e-2* is the planner's rule: a node goes to",
             "fp16 only where its strategy's measured fp16 error, relative to the output's largest magnitude, fits 1e-2.",
             "*fp16 wherever it builds* lifts the budget to show what fp16 can give and what it costs in error.",
             "The int8 plan puts INT8 on the convolutions and matrix products whose measured INT8 error fits its budget",
             "(activations per tensor, weights per output channel), fp16 within 1e-2 elsewhere. Each tensor is quantized",
             "once however many nodes read it (Q, K and V share one Quantize), with no cast before it; an INT8 node's float",
             "side is fp16, so the Quantize of the next convolution's input runs in the previous one's epilogue; a residual",
             "add after an INT8 convolution reads its other operand through Q/DQ, so conv -> batch norm -> add -> relu -> Q",
             "is one kernel. At the larger sizes the int8 row carries the smaller size's placement and scales over (same",
             "weights, same node names): calibration and per-node measurement there take too long on this CPU. The model",
             "credits INT8 products and convolutions with the card's int8/fp16 ratio measured on a lent H100 (the H200 profile",
             "takes it): the fastest int8 GEMM over the fastest fp16 GEMM at 8192^3, each dtype's Triton GEMM swept over tiles,",
             "stages and warps beside cuBLAS (`bench/device/gemm_sweep.py`: int8 1,248 TOP/s, a Triton GEMM with the weight",
             "K-major, checked against exact sums; fp16 759, cuBLAS; 1.64x, 1.68x on a second run), times the profile's fp16",
             "matrix rate, and times cuDNN's fp16 rate for a convolution (PyTorch has no int8 convolution on CUDA). The check",
             "of those pieces on the card (`bench/device/PIECES.md`, its int8 rows) finds the model optimistic for int8 at",
             "served sizes, where fp16 is predicted about right, so these int8 gains are upper estimates for the kernels",
             "measured; TensorRT's own INT8 kernels cannot be measured here.",
             ""]
    errors: dict[tuple[str, str], str] = {}
    int8_plans: dict[str, object] = {}
    for name, (make, error_from) in SERVED.items():
        start = time.time()
        path = Path(tmp) / f"served-{len(errors)}.pt2"
        torch.export.save(make(), str(path))
        captured = capture(path)
        inputs = random_inputs(captured.graph, seed=0)
        if error_from is None:  # at the larger sizes calibration and per-node INT8 measurement take ~10 min here
            calibrate(catalog, captured, str(path), generate=2)
        lines += [f"### {name} ({len(captured.graph)} nodes)", "",
                  "| plan | fp16 / int8 nodes | kernels (+ fused layers) | estimated ms | speed-up vs fp32 (est.) | vs fp16 within 1e-2 (est.) | max abs error | error measured at |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        base = fp16 = None
        for label, (precision, tolerance) in PLANS.items():
            try:
                if precision == "int8" and error_from is not None:  # the smaller size's placement, carried over
                    plan = svc.make_plan(captured, catalog, ruleset, profile("tensorrt_rtx"),
                                         Settings(tolerance=tolerance, precision="fp16"), for_build=True)
                    carry_int8(plan, int8_plans[error_from])
                else:
                    plan = svc.make_plan(captured, catalog, ruleset, profile("tensorrt_rtx"),
                                         Settings(tolerance=tolerance, precision=precision), for_build=True)
                    if precision == "int8":
                        int8_plans[name] = plan
                built = serialize(build_network(plan, captured.program, ruleset.strategies, precision=precision))
                est = estimate(built, inputs, device)
                if error_from is None:
                    report = verify_built(built, captured.program, inputs, precision=precision)
                    errors[(name, label)] = f"{max(o.max_abs for o in report.outputs):.2e}"
                error = errors.get((error_from or name, label), "-")
                where = "this size" if error_from is None else error_from.split(", ")[-1]
                base = base or est.ms
                fp16 = est.ms if label == "fp16 where within 1e-2" else fp16
                low = "/".join(str(sum(1 for n in plan.nodes if n.precision == p)) for p in ("fp16", "int8"))
                lines.append(f"| {label} | {low} | {est.kernels} (+{est.fused}) | {est.ms:.3f} | {base / est.ms:.2f}x | "
                             f"{f'{fp16 / est.ms:.2f}x' if fp16 else '-'} | {error} | {where} |")
                print(lines[-1], file=sys.stderr, flush=True)
            except OpmapError as exc:
                lines.append(f"| {label} | - | - | - | - | - | not built: {str(exc)[:120]} | - |")
        lines.append("")
        print(f"{name} done in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    return lines
