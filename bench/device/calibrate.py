"""Calibrate opmap's latency cost model on a real GPU (run on the device machine; needs only PyTorch + CUDA).

    python bench/device/calibrate.py OUT_DIR

Writes OUT_DIR/profile.json: the card, software versions, and median timings (CUDA events, warm-up first,
rotating input sets so the caches do not flatter bandwidth) of microbenchmarks — bandwidth and matrix/convolution
throughput per dtype (fp32 as TF32 and IEEE, fp16, bf16, int8) — plus a validation set of whole PyTorch ops at
served sizes, and pointwise chains run unfused (eager, one kernel per op) and fused (torch.compile, one kernel),
which the cost model must predict (bench/device/README.md has the table). A section that fails is recorded under
"errors" rather than stopping the run.
"""

from __future__ import annotations

import json
import statistics
import sys
import traceback
from pathlib import Path

import torch

F = torch.nn.functional
NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8"}
ERRORS: list[str] = []


def guarded(what, fn):
    """Run one measurement; a failure is recorded (and printed) instead of losing the rest of the run."""
    try:
        fn()
    except Exception:  # noqa: BLE001
        ERRORS.append(f"{what}: {traceback.format_exc()[-1200:]}")


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
    if dtype == torch.int8:
        return [torch.randint(-127, 127, shape, device="cuda", dtype=torch.int8) for _ in range(n)]
    return [torch.randn(*shape, device="cuda", dtype=dtype) for _ in range(n)]


def int_mm(a, b):
    return torch._int_mm(a, b)  # int8 x int8 -> int32 on the tensor cores


def col_major(t):
    return t.t().contiguous().t()  # cuBLASLt's int8 kernels want the second operand column-major (as a weight is)


def graph_ms(fn, inputs, repeat=20):
    """GPU time of one fn call with the CPU out of the picture: ``repeat`` calls over rotating inputs, captured in a
    CUDA graph and replayed (a TensorRT engine enqueues its kernels back to back in the same way)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for x in inputs:
            fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(repeat):
            fn(inputs[i % len(inputs)])
    return timeit(g.replay, [()], reps=20) / repeat


def micro_benchmarks(micro: dict) -> None:
    # launch overhead: a one-element op, many launches (graph replay would hide it; TensorRT launches kernels too)
    x = rand(1)
    micro["launch_ms"] = timeit(lambda t: [t.add_(1) for _ in range(100)], [(x[0],)], reps=30) / 100
    guarded("graph launch", lambda: micro.__setitem__("graph_launch_ms", graph_ms(lambda t: t.add_(1), x, repeat=100)))
    # memory bandwidth: a large elementwise add reads 2 and writes 1, per element size
    n = 1 << 27
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int8):
        a, b = rand(n, dtype=dtype), rand(n, dtype=dtype)
        ms = timeit(torch.add, list(zip(a, b)))
        micro[f"elementwise_gbps_{NAME[dtype]}"] = 3 * n * a[0].element_size() / ms / 1e6
    a = rand(n)
    micro["cast_gbps_fp32_fp16"] = n * 6 / timeit(lambda t: t.half(), [(t,) for t in a]) / 1e6
    # matrix throughput per dtype at 8192^3 (fp32 with and without TF32: TensorRT uses TF32 for fp32 by default)
    m = 8192
    for dtype, name, tf32 in ((torch.float32, "fp32_tf32", True), (torch.float32, "fp32_ieee", False),
                              (torch.float16, "fp16", False), (torch.bfloat16, "bf16", False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = rand(m, m, dtype=dtype, n=2), rand(m, m, dtype=dtype, n=2)
        micro[f"matmul_tflops_{name}"] = 2 * m**3 / timeit(torch.matmul, list(zip(a, b)), reps=20) / 1e9
    torch.backends.cuda.matmul.allow_tf32 = True

    def int8():
        a, b = rand(m, m, dtype=torch.int8, n=2), [col_major(t) for t in rand(m, m, dtype=torch.int8, n=2)]
        micro["matmul_tflops_int8"] = 2 * m**3 / timeit(int_mm, list(zip(a, b)), reps=20) / 1e9
    guarded("int8 matmul", int8)
    # convolution throughput per dtype (a ResNet stage-3 3x3 conv at batch 32, channels-last as TensorRT lays it out;
    # cuDNN times its algorithms first, as TensorRT's builder times its tactics)
    torch.backends.cudnn.benchmark = True
    for dtype, name, tf32 in ((torch.float32, "fp32_tf32", True), (torch.float16, "fp16", False),
                              (torch.bfloat16, "bf16", False)):
        torch.backends.cudnn.allow_tf32 = tf32
        xs = [t.to(memory_format=torch.channels_last) for t in rand(32, 256, 28, 28, dtype=dtype)]
        w = torch.randn(256, 256, 3, 3, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
        ms = timeit(lambda t: F.conv2d(t, w, padding=1), [(t,) for t in xs], reps=30)
        micro[f"conv_tflops_{name}"] = 2 * 32 * 256 * 28 * 28 * 256 * 9 / ms / 1e9
    torch.backends.cudnn.allow_tf32 = True
    guarded("int8 convolution", lambda: int8_convolution(micro))
    # gather, reduction, scan, topk, sort: effective GB/s over the bytes each must touch
    n = 1 << 26
    src = rand(n)
    idx = [torch.randint(0, n, (n,), device="cuda") for _ in range(3)]
    micro["gather_gbps"] = n * (4 + 8 + 4) / timeit(lambda s, i: s[i], list(zip(src, idx))) / 1e6
    rows = rand(1 << 14, 1 << 12)
    micro["reduce_gbps"] = rows[0].numel() * 4 / timeit(lambda t: t.sum(-1), [(r,) for r in rows]) / 1e6
    micro["cumsum_gbps"] = rows[0].numel() * 8 / timeit(lambda t: t.cumsum(-1), [(r,) for r in rows]) / 1e6
    micro["topk64_gbps"] = rows[0].numel() * 4 / timeit(lambda t: t.topk(64, -1), [(r,) for r in rows]) / 1e6
    micro["sort_gbps"] = rows[0].numel() * 4 * 3 / timeit(lambda t: t.sort(-1), [(r,) for r in rows]) / 1e6
    guarded("row kernels", lambda: row_kernels(micro, rows))


def int8_convolution(micro: dict) -> None:
    """The int8 tensor-core rate. cuBLAS's int8 GEMM (``torch._int_mm``, measured above) reaches little more than its
    fp16 on sm_90, while a plain Triton GEMM with the second operand K-major (int8conv.py, checked against exact sums)
    reaches far more: each dtype's matrix rate is the faster of the kernels measured for it, as cuDNN's and SDPA's
    fastest algorithm counts elsewhere. PyTorch has no int8 convolution on CUDA: the int8 convolution rate charged is
    cuDNN's fp16 convolution rate times that int8/fp16 matrix ratio (a convolution is an implicit GEMM on the same
    tensor cores); ``python bench/device/int8conv.py`` times int8 convolutions themselves (Triton) at ResNet-50's sizes."""
    sys.path.insert(0, str(Path(__file__).parent))
    import int8conv
    int8conv.check_gemm("cuda")
    probe = int8conv.gemm_probe(timeit)
    INT8CONV.append(probe)
    micro["matmul_tflops_int8_cublas"] = micro.get("matmul_tflops_int8", 0.0)
    micro["matmul_tflops_int8_triton"] = probe["triton_gemm_tops_int8"]
    micro["matmul_tflops_fp16_triton"] = probe["triton_gemm_tops_fp16"]
    micro["matmul_tflops_int8"] = max(micro["matmul_tflops_int8_cublas"], probe["triton_gemm_tops_int8"])
    ratio = micro["matmul_tflops_int8"] / max(micro["matmul_tflops_fp16"], probe["triton_gemm_tops_fp16"])
    micro["int8_over_fp16_matrix"] = ratio
    micro["conv_tflops_int8"] = micro["conv_tflops_fp16"] * ratio


INT8CONV: list = []


def row_kernels(micro: dict, rows: list) -> None:
    """Kernels that are neither a plain elementwise pass nor a product: layer norm and softmax over rows (read and
    write each element once), a gather of whole rows (an embedding: coalesced, unlike a gather of single elements),
    and fused attention (SDPA's fastest kernel per dtype, 4·B·H·S²·D flops)."""
    e = rows[0].numel()
    w, b = torch.ones(rows[0].shape[-1], device="cuda"), torch.zeros(rows[0].shape[-1], device="cuda")
    ln = lambda t: F.layer_norm(t, (t.shape[-1],), w, b)  # noqa: E731
    micro["norm_gbps"] = e * 8 / timeit(ln, [(r,) for r in rows]) / 1e6
    micro["softmax_gbps"] = e * 8 / timeit(lambda t: t.softmax(-1), [(r,) for r in rows]) / 1e6
    table = torch.randn(1 << 20, 256, device="cuda")
    ids = [torch.randint(0, 1 << 20, (1 << 18,), device="cuda") for _ in range(3)]
    micro["row_gather_gbps"] = (1 << 18) * (256 * 4 * 2 + 8) / timeit(lambda i: F.embedding(i, table), [(i,) for i in ids]) / 1e6
    # a small reduction's GPU time (CUDA-graph replay): the fixed cost of a reduction kernel, above a plain launch
    small = rand(64, 256)
    micro["reduce_launch_ms"] = graph_ms(lambda t: t.sum(-1), small, repeat=100)
    # depthwise convolution (not a GEMM: CUDA cores, per dtype), a ConvNeXt stage-2 7x7 at batch 32, the faster layout
    torch.backends.cudnn.benchmark = True
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        xs = rand(32, 192, 28, 28, dtype=dtype)
        w = torch.randn(192, 1, 7, 7, device="cuda", dtype=dtype)
        best = min(timeit(lambda t, mf=mf: F.conv2d(t, w.to(memory_format=mf), padding=3, groups=192),
                          [(t.to(memory_format=mf),) for t in xs], reps=30)
                   for mf in (torch.contiguous_format, torch.channels_last))
        micro[f"dwconv_tflops_{NAME[dtype]}"] = 2 * 32 * 192 * 28 * 28 * 49 / best / 1e9
    from torch.nn.attention import SDPBackend, sdpa_kernel
    bt, h, s, d = 16, 16, 2048, 64
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        qkv = [tuple(torch.randn(bt, h, s, d, device="cuda", dtype=dtype) for _ in range(3)) for _ in range(2)]
        best = None
        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
            def run(q, k, v, backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v)
            try:
                ms = timeit(run, qkv, reps=10)
            except RuntimeError:  # no kernel of this backend for the dtype
                continue
            best = ms if best is None else min(best, ms)
        if best is not None:
            micro[f"attention_tflops_{NAME[dtype]}"] = 4 * bt * h * s * s * d / best / 1e9


def validation(rows: list) -> None:
    """Whole ops at served sizes, with what a cost model needs to predict them (flops, bytes, kind, dtype, kernels)."""
    def op(name, fn, args, flops, nbytes, kind, dtype, kernels=1, reps=50):
        row = {"op": name, "flops": flops, "bytes": nbytes, "kind": kind, "dtype": NAME[dtype], "kernels": kernels}
        guarded(name, lambda: row.update(eager_ms=timeit(fn, args, reps=reps)))
        guarded(name + " (graph)", lambda: row.update(ms=graph_ms(lambda a: fn(*a), args), graph=True))
        if "eager_ms" in row:
            rows.append({"ms": row["eager_ms"], **row})

    for b, s, h in ((8, 128, 768), (32, 512, 768)):
        t = b * s
        for dtype in (torch.float32, torch.float16):
            xs, e, size = rand(t, h, dtype=dtype), t * h, torch.empty((), dtype=dtype).element_size()
            op(f"gelu {b}x{s}x{h} {NAME[dtype]}", F.gelu, [(x,) for x in xs], 0, 2 * e * size, "elementwise", dtype)
            op(f"layer_norm {b}x{s}x{h} {NAME[dtype]}", lambda x: F.layer_norm(x, (h,)), [(x,) for x in xs], 0, 2 * e * size,
               "reduce", dtype)
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int8):
            xs = rand(t, h, dtype=dtype)
            w = rand(4 * h, h, dtype=dtype, n=1)[0]
            size = xs[0].element_size()
            out = 4 if dtype == torch.int8 else size
            nbytes = t * h * size + 4 * h * h * size + t * 4 * h * out
            fn = (lambda x: int_mm(x, w.t())) if dtype == torch.int8 else (lambda x: F.linear(x, w))
            op(f"linear {t}x{h}->{4 * h} {NAME[dtype]}", fn, [(x,) for x in xs], 2 * t * h * 4 * h, nbytes, "matmul", dtype)
        xs = rand(t, h)
        op(f"cast fp32->fp16 {t}x{h}", lambda x: x.half(), [(x,) for x in xs], 0, t * h * 6, "elementwise", torch.float16)
    for dtype in (torch.float32, torch.float16, torch.int8):  # the square product the cost model's tests use
        a, b = rand(4096, 4096, dtype=dtype, n=2), [col_major(t) for t in rand(4096, 4096, dtype=dtype, n=2)]
        size, out = a[0].element_size(), (4 if dtype == torch.int8 else a[0].element_size())
        op(f"matmul 4096x4096x4096 {NAME[dtype]}", int_mm if dtype == torch.int8 else torch.matmul, list(zip(a, b)),
           2 * 4096**3, 4096**2 * (2 * size + out), "matmul", dtype, reps=20)
    # convolutions of a CNN at 224^2 (a ResNet stage-1 conv) and of a detector backbone at 640^2, batch 1
    for c, hw in ((64, 56), (64, 160), (128, 80)):
        for dtype in (torch.float32, torch.float16):
            xs = [x.to(memory_format=torch.channels_last) for x in rand(1, c, hw, hw, dtype=dtype)]
            w = torch.randn(c, c, 3, 3, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
            size = xs[0].element_size()
            op(f"conv2d 1x{c}x{hw}x{hw} k3 {NAME[dtype]}", lambda x: F.conv2d(x, w, padding=1), [(x,) for x in xs],
               2 * c * hw * hw * c * 9, 2 * xs[0].numel() * size + w.numel() * size, "conv", dtype)


def chain(x):
    return torch.sigmoid(torch.relu(x * 0.5 + 1.0) - 0.25)  # five pointwise ops


def fusion(rows: list) -> None:
    """A pointwise chain run unfused (eager: five kernels, five round-trips) and fused (torch.compile: one kernel),
    both timed as CUDA-graph replays so that only GPU time counts."""
    fused = torch.compile(chain)
    for t, h in ((1024, 768), (16384, 768)):
        for dtype in (torch.float32, torch.float16):
            xs = rand(t, h, dtype=dtype)
            e, size = t * h, xs[0].element_size()
            for name, fn, kernels, nbytes in (("unfused", chain, 5, 5 * 2 * e * size), ("fused", fused, 1, 2 * e * size)):
                op = f"5-op pointwise chain {t}x{h} {NAME[dtype]}, {name}"
                guarded(op, lambda: rows.append({"op": op, "ms": graph_ms(fn, xs), "flops": 0, "bytes": nbytes, "graph": True,
                                                 "kind": "elementwise", "dtype": NAME[dtype], "kernels": kernels}))


def main(out: Path) -> None:
    torch.manual_seed(0)
    dev = torch.cuda.get_device_properties(0)
    result = {"card": torch.cuda.get_device_name(0), "sm_count": dev.multi_processor_count,
              "memory_gib": round(dev.total_memory / 2**30, 1), "torch": torch.__version__, "cuda": torch.version.cuda,
              "micro": {}, "validation": [], "errors": ERRORS, "int8conv": INT8CONV}
    out.mkdir(parents=True, exist_ok=True)
    for section, arg in ((micro_benchmarks, result["micro"]), (validation, result["validation"]), (fusion, result["validation"])):
        guarded(section.__name__, lambda: section(arg))
        (out / "profile.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["micro"], indent=1))
    for v in result["validation"]:
        print(f"{v['op']:48s} {v['ms']:.4f} ms{' (graph)' if v.get('graph') else ''}  eager {v.get('eager_ms', 0):.4f}")
    print("\n".join(result["errors"]))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
