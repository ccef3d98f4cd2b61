"""Calibrate opmap's latency cost model on a real GPU (run on the device machine; needs only PyTorch + CUDA).

    python bench/device/calibrate.py OUT_DIR

Writes OUT_DIR/profile.json: the card, software versions, and median timings (CUDA events, warm-up first,
rotating input sets so the caches do not flatter bandwidth) of microbenchmarks, plus a validation set of whole
PyTorch ops timed the same way, which the cost model must predict (bench/device/README.md has the table).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch


def timeit(fn, sets, reps=50, warm=5):
    for i in range(warm):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        args = sets[i % len(sets)]
        a.record()
        fn(*args)
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def rand(*shape, dtype=torch.float32, n=3):
    return [torch.randn(*shape, device="cuda", dtype=dtype) for _ in range(n)]


def main(out: Path) -> None:
    torch.manual_seed(0)
    dev = torch.cuda.get_device_properties(0)
    result = {"card": torch.cuda.get_device_name(0), "sm_count": dev.multi_processor_count,
              "memory_gib": round(dev.total_memory / 2**30, 1), "torch": torch.__version__, "cuda": torch.version.cuda,
              "micro": {}, "validation": []}
    micro = result["micro"]

    # launch overhead: a one-element op, many launches (graph replay would hide it; TensorRT launches kernels too)
    x = rand(1)
    micro["launch_ms"] = timeit(lambda t: [t.add_(1) for _ in range(100)], [(x[0],)], reps=30) / 100

    # memory bandwidth: a large elementwise add reads 2 and writes 1
    for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        n = 1 << 27
        a, b = rand(n, dtype=dtype), rand(n, dtype=dtype)
        ms = timeit(torch.add, list(zip(a, b)))
        micro[f"elementwise_gbps_{name}"] = 3 * n * a[0].element_size() / ms / 1e6
    # matrix throughput per dtype (fp32 with and without TF32: TensorRT uses TF32 for fp32 by default)
    m = 8192
    for dtype, name, tf32 in ((torch.float32, "fp32_tf32", True), (torch.float32, "fp32_ieee", False),
                              (torch.float16, "fp16", False), (torch.bfloat16, "bf16", False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = rand(m, m, dtype=dtype, n=2), rand(m, m, dtype=dtype, n=2)
        ms = timeit(torch.matmul, list(zip(a, b)), reps=20)
        micro[f"matmul_tflops_{name}"] = 2 * m**3 / ms / 1e9
    torch.backends.cuda.matmul.allow_tf32 = True
    # gather, reduction, scan, topk, sort: effective GB/s over the bytes each must touch
    n = 1 << 26
    src = rand(n)
    idx = [torch.randint(0, n, (n,), device="cuda") for _ in range(3)]
    ms = timeit(lambda s, i: s[i], list(zip(src, idx)))
    micro["gather_gbps"] = n * (4 + 8 + 4) / ms / 1e6
    rows = rand(1 << 14, 1 << 12)
    ms = timeit(lambda t: t.sum(-1), [(r,) for r in rows])
    micro["reduce_gbps"] = rows[0].numel() * 4 / ms / 1e6
    ms = timeit(lambda t: t.cumsum(-1), [(r,) for r in rows])
    micro["cumsum_gbps"] = rows[0].numel() * 8 / ms / 1e6
    ms = timeit(lambda t: t.topk(64, -1), [(r,) for r in rows])
    micro["topk64_gbps"] = rows[0].numel() * 4 / ms / 1e6
    ms = timeit(lambda t: t.sort(-1), [(r,) for r in rows])
    micro["sort_gbps"] = rows[0].numel() * 4 * 3 / ms / 1e6

    # validation: whole ops at realistic sizes, with what a cost model needs to predict them
    def op(name, fn, args, flops, nbytes, kind):
        result["validation"].append({"op": name, "ms": timeit(fn, args), "flops": flops, "bytes": nbytes, "kind": kind})

    F = torch.nn.functional
    for b, s, h in ((8, 512, 768), (32, 1024, 1024)):
        xs = rand(b, s, h)
        e = b * s * h
        op(f"gelu {b}x{s}x{h}", F.gelu, [(x,) for x in xs], 0, 8 * e, "elementwise")
        op(f"softmax {b}x{s}x{h}", lambda t: t.softmax(-1), [(x,) for x in xs], 0, 8 * e, "reduce")
        op(f"layer_norm {b}x{s}x{h}", lambda t: F.layer_norm(t, (h,)), [(x,) for x in xs], 0, 8 * e, "reduce")
        w = torch.randn(h, h, device="cuda")
        op(f"linear {b}x{s}x{h}", lambda t: F.linear(t, w), [(x,) for x in xs], 2 * e * h, 8 * e + 4 * h * h, "matmul")
        op(f"cumsum {b}x{s}x{h}", lambda t: t.cumsum(-1), [(x,) for x in xs], 0, 8 * e, "scan")
        op(f"sum {b}x{s}x{h}", lambda t: t.sum(-1), [(x,) for x in xs], 0, 4 * e, "reduce")
    emb = torch.randn(32000, 1024, device="cuda")
    ids = [torch.randint(0, 32000, (16, 512), device="cuda") for _ in range(3)]
    op("embedding 16x512 of 32000x1024", lambda i: F.embedding(i, emb), [(i,) for i in ids], 0, 2 * 16 * 512 * 1024 * 4, "gather")
    imgs = rand(32, 64, 56, 56)
    k = torch.randn(64, 64, 3, 3, device="cuda")
    op("conv2d 32x64x56x56 k3", lambda t: F.conv2d(t, k, padding=1), [(x,) for x in imgs],
       2 * 32 * 64 * 56 * 56 * 64 * 9, 2 * imgs[0].numel() * 4, "matmul")
    op("topk 64 of 16384x4096", lambda t: t.topk(64, -1), [(r,) for r in rows], 0, rows[0].numel() * 4, "topk")

    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["micro"], indent=1))
    for v in result["validation"]:
        print(f"{v['op']:40s} {v['ms']:.4f} ms")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
