"""How well opmap's cost model predicts PyTorch's own timings of the same ops on the calibration card.

    python bench/device/validate.py      # rewrites bench/device/README.md from the default profile (opmap/data/device_h200.json)

Each validation row carries what the model needs (flops, bytes at the row's dtype, kind, how many kernels); a row
marked ``graph`` was timed as a CUDA-graph replay (GPU time only, as an engine enqueues kernels), the others with CUDA
events around one eager call (which adds PyTorch's dispatch and launch latency).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from opmap.checking.costmodel import DEFAULT_PROFILE, DeviceProfile  # noqa: E402

KIND = {"elementwise": "ELEMENTWISE", "reduce": "REDUCE", "matmul": "MATRIX_MULTIPLY", "conv": "CONVOLUTION",
        "scan": "CUMULATIVE", "gather": "GATHER", "topk": "TOPK"}
DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}
DOC = Path(__file__).with_name("README.md")
INTRO = """# Device profile and cost-model validation

The cost model (`opmap/checking/costmodel.py`, fusion rules in `opmap/building/fusion.py`) charges each kernel a launch plus
the larger of bytes / measured bandwidth (each tensor at its own element size) and flops / measured throughput for the
dtype it computes in (fp32 as TF32, fp16, bf16, int8; convolutions have their own numbers). Layers TensorRT fuses into
a neighbour's kernel (pointwise epilogues, casts, Q/DQ, constant-derived layers, pure reshapes) are charged no launch
and no round-trip of the fused tensor. Everything below is a PyTorch microbenchmark on the card named; nothing here
ran a TensorRT engine, so plan latencies built on these numbers are **estimates**.
"""


def predict(profile: DeviceProfile, v: dict) -> float:
    dtype = DTYPE.get(v.get("dtype", "fp32"), torch.float32)
    extra = (v.get("kernels", 1) - 1) * profile.launch_ms  # an unfused chain: one launch per kernel
    return profile.predict(KIND[v["kind"]], v["flops"], v["bytes"], dtype) + extra


def section(name: str, title: str) -> list[str]:
    profile = DeviceProfile.load(str(ROOT / "opmap" / "data" / name))
    data = json.loads((ROOT / "opmap" / "data" / name).read_text())
    rows = [(v["op"], v["ms"], predict(profile, v), v.get("graph", False)) for v in data["validation"]]
    ratios = sorted(p / m for _, m, p, _ in rows)
    lines = [f"## {data['card']} ({title}, `opmap/data/{name}`)", "",
             f"{data['sm_count']} SMs, {data['memory_gib']} GiB; PyTorch {data['torch']}, CUDA {data['cuda']}. "
             f"Method: {data.get('method', 'bench/device/calibrate.py')}.", "",
             "| microbenchmark | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in data["micro"].items()]
    lines += ["", "| op | measured ms | predicted ms | predicted / measured |", "|---|---:|---:|---:|"]
    lines += [f"| {op}{' (graph)' if graph else ''} | {m:.4f} | {p:.4f} | {p / m:.2f} |" for op, m, p, graph in rows]
    lines += ["", f"Median ratio {ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f} to {ratios[-1]:.2f} over {len(rows)} ops.",
              ""]
    return lines


def main() -> None:
    lines = [INTRO,
             "Re-measure with `python bench/device/calibrate.py OUT` on the card (about 40 s), copy OUT/profile.json to "
             "`opmap/data/device_<card>.json`, run `python bench/device/validate.py`. `launch_ms` is PyTorch's eager launch "
             "rate; the model charges `graph_launch_ms` (kernels back to back in a CUDA graph, as an engine enqueues them). "
             "int8: `python bench/device/gemm_sweep.py OUT` (about 2 min) sweeps one Triton GEMM design (weight K-major, "
             "TMA or pointer loads, L2-grouped tiles) over tiles, stages and warps for int8 and fp16 at 8192³ beside "
             "cuBLAS (`torch.matmul`, `torch._int_mm`), checks each dtype's fastest against exact sums or a float64 "
             "product, and reports the fastest int8 over the fastest fp16 (`int8_over_fp16_matrix`: 1.64 on the H100, "
             "`gemm_sweep_h100.json`); `python bench/device/apply_sweep.py OUT/gemm_sweep.json PROFILE...` sets "
             "`matmul_tflops_int8` and `conv_tflops_int8` to the profile's fp16 matrix and cuDNN convolution rates times "
             "it (PyTorch has no int8 convolution on CUDA; `python bench/device/int8conv.py` also times int8 "
             "convolutions themselves, `int8conv_h100.txt`). The H200 profile takes that ratio from the H100 (same sm_90 and "
             "libraries; its method says so). A profile without a number (the H200's has no layer-norm, softmax, "
             "row-gather, attention, depthwise or small-reduction rate) charges the nearest measured one.", "",
             "The tables below are calibrate.py's own validation ops, predicted from their flops and bytes alone (no tile "
             "waves: the rows carry no shapes); *graph* rows are GPU time from CUDA-graph replays, the pointwise chains the "
             "same five ops as five kernels (eager) and as one (torch.compile). **The check of the whole model, piece by "
             "piece at served sizes, is [PIECES.md](PIECES.md)** (`python bench/device/pieces.py`).", ""]
    lines += section(DEFAULT_PROFILE, "the default profile")
    if DEFAULT_PROFILE != "device_h100.json" and (ROOT / "opmap" / "data" / "device_h100.json").exists():
        lines += section("device_h100.json", "for `--profile`; the card PIECES.md was measured on")
    DOC.write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines[-12:]))


if __name__ == "__main__":
    main()
