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


def main() -> None:
    profile = DeviceProfile.load()
    data = json.loads((ROOT / "opmap" / "data" / DEFAULT_PROFILE).read_text())
    rows = [(v["op"], v["ms"], predict(profile, v), v.get("graph", False)) for v in data["validation"]]
    ratios = sorted(p / m for _, m, p, _ in rows)
    lines = [INTRO,
             f"## {data['card']} (the default profile, `opmap/data/{DEFAULT_PROFILE}`)", "",
             f"{data['sm_count']} SMs, {data['memory_gib']} GiB; PyTorch {data['torch']}, CUDA {data['cuda']}. "
             f"Method: {data.get('method', 'bench/device/calibrate.py')}. Re-measure with `python bench/device/calibrate.py OUT` "
             "on the card (about 30 s), copy OUT/profile.json here, run `python bench/device/validate.py`.", "",
             "| microbenchmark | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in data["micro"].items()]
    lines += ["",
              "`launch_ms` is PyTorch's eager launch rate; the model charges `graph_launch_ms` (kernels back to back in a "
              "CUDA graph, as an engine enqueues them). int8 products are `torch._int_mm` (cuBLASLt) with the weight "
              "column-major; int8 convolutions were not measured (PyTorch has no int8 convolution on CUDA), so the "
              "model takes the fp16 convolution throughput for them and credits int8 only with its smaller bytes.", "",
              "Predicted against the measured time of the same op (`python bench/device/validate.py`); *graph* rows are "
              "GPU time from CUDA-graph replays. The pointwise-chain rows are the fusion check: the same five ops as five "
              "kernels (eager) and as one (torch.compile), predicted as five launches and five round-trips vs one.", "",
              "| op | measured ms | predicted ms | predicted / measured |", "|---|---:|---:|---:|"]
    lines += [f"| {op}{' (graph)' if graph else ''} | {m:.4f} | {p:.4f} | {p / m:.2f} |" for op, m, p, graph in rows]
    lines += ["", f"Median ratio {ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f} to {ratios[-1]:.2f} over {len(rows)} ops."]
    old = ROOT / "opmap" / "data" / "device_h100.json"
    if old.exists():
        lines += ["", "## Earlier profile: NVIDIA H100 80GB HBM3 (`opmap/data/device_h100.json`, kept for `--profile`)", "",
                  "Measured the same way without the per-dtype convolution, int8, graph-launch and fusion rows; with it the "
                  "model falls back to the nearest measured number (int8 and bf16 → fp16 throughput, convolutions → matrix "
                  "throughput, launch → eager launch rate). Its validation (eager timings) gave a median ratio of 1.01, "
                  "range 0.29 (conv2d) to 4.40 (random-index embedding gather)."]
    DOC.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 12:]))


if __name__ == "__main__":
    main()
