"""Fold a GEMM sweep's int8/fp16 ratio into device profiles (no GPU or Triton needed).

    python bench/device/apply_sweep.py OUT_DIR/gemm_sweep.json opmap/data/device_h100.json [more profiles]

``int8_over_fp16_matrix`` becomes the sweep's (one run of bench/device/gemm_sweep.py: both dtypes tuned alike, cuBLAS
beside them), ``matmul_tflops_int8`` and ``conv_tflops_int8`` the profile's own fp16 matrix and cuDNN convolution rates
times it, and the profile's method says which card the ratio came from and how it was measured.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def apply(sweep_path: str, profiles: list[str]) -> None:
    sweep = json.loads(Path(sweep_path).read_text())
    ratio = sweep["summary"]["int8_over_fp16_matrix"]
    best = {k: (v or {}).get("tops") for k, v in sweep["best"].items()}
    for path in profiles:
        data = json.loads(Path(path).read_text())
        micro = data["micro"]
        micro["int8_over_fp16_matrix"] = ratio
        micro["matmul_tflops_int8"] = micro["matmul_tflops_fp16"] * ratio
        micro["conv_tflops_int8"] = micro["conv_tflops_fp16"] * ratio
        micro["matmul_tflops_int8_triton_tuned"], micro["matmul_tflops_fp16_triton_tuned"] = best["int8"], best["fp16"]
        here = sweep["card"] == data["card"]
        data["gemm_sweep"] = {k: sweep[k] for k in ("card", "torch", "triton", "size", "cublas", "best", "summary")}
        method = data["method"]
        for marker in ("; int8 rates (", "; int8 matrix rate ="):  # what an earlier int8 method said is replaced
            method = method.split(marker)[0]
        data["method"] = method + (
            f"; int8 rates ({time.strftime('%Y-%m-%d')}): int8_over_fp16_matrix = {ratio:.3f}, the fastest int8 GEMM over "
            f"the fastest fp16 GEMM at 8192^3 in one run of bench/device/gemm_sweep.py on {'this card' if here else 'a lent ' + sweep['card'] + ' (same sm_90 and libraries)'}: "
            f"cuBLAS (torch.matmul fp16 {sweep['cublas']['fp16']:.0f}, "
            f"torch._int_mm int8 {sweep['cublas']['int8']:.0f} TOP/s) beside one Triton GEMM design swept over tiles, stages and "
            f"warps for both dtypes (best int8 {best['int8'] or 0:.0f}, fp16 {best['fp16'] or 0:.0f} TOP/s, each checked against "
            "exact sums or a float64 product); matmul_tflops_int8 = this profile's fp16 matrix rate x that ratio, "
            "conv_tflops_int8 = its cuDNN fp16 convolution rate x that ratio (PyTorch has no int8 convolution on CUDA)")
        Path(path).write_text(json.dumps(data, indent=1) + "\n")
        print(f"{path}: int8_over_fp16_matrix {ratio:.3f}, matmul int8 {micro['matmul_tflops_int8']:.0f}, "
              f"conv int8 {micro['conv_tflops_int8']:.0f} TOP/s")


if __name__ == "__main__":
    apply(sys.argv[1], sys.argv[2:])
