"""Int8 convolutions measured on the card, since PyTorch has none on CUDA.

TensorRT runs an INT8 convolution as an implicit GEMM on the tensor cores: the output pixels are the rows, the output
channels the columns, and the reduction runs over (filter row, filter column, input channel) reading the NHWC input in
place. Two stand-ins are timed over ResNet-50's convolutions (batch 32, 224²), each in int8 and fp16:

- this file's implicit-GEMM convolution in Triton, written once for int8 (int32 sums, requantized to int8 on the way
  out, as an INT8 conv between Q/DQ pairs is) and fp16, autotuned per dtype (int8 tiles twice as deep along the
  reduction); checked against ``F.conv2d`` (int8 exactly, fp16 within rounding) before any timing counts;
- cuBLAS's GEMMs (``torch._int_mm`` and ``torch.mm``) at each convolution's implicit-GEMM dims, the gathered operand
  laid out beforehand (for a 1x1 stride-1 convolution over NHWC that *is* the convolution).

On a lent H100 (2026-12-07) Triton's int8 ran slower than its fp16 (0.65-0.73x; ``gemm_probe``: its plain int8 GEMM
reached 106 TOP/s against 697 TFLOP/s fp16), and cuBLAS's int8 ran 1.07-1.09x its fp16. calibrate.py charges cuDNN's fp16
convolution rate times the cuBLAS ratio; neither kernel is TensorRT's. Run alone on the card:
``python bench/device/int8conv.py`` prints a table; ``TRITON_INTERPRET=1`` runs the correctness check on a CPU.
"""

from __future__ import annotations

import statistics
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

CONFIGS = [triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s)
           for bm, bn, bk, w, s in ((128, 128, 64, 8, 3), (128, 256, 64, 8, 3))]  # each one a compile per shape
# int8 reads half the bytes per reduction step: the tensor cores' int8 instruction takes 32 along the reduction (fp16's
# 16), so int8 tiles go twice as deep along it for the same bytes per stage
CONFIGS_INT8 = [triton.Config({"BM": bm, "BN": bn, "BK": bk}, num_warps=w, num_stages=s)
                for bm, bn, bk, w, s in ((128, 128, 128, 8, 3), (128, 256, 128, 8, 3), (256, 128, 128, 8, 3))]


@triton.jit
def _conv_body(x, w, y, scale, N, H, W, C: tl.constexpr, K, P, Q, R: tl.constexpr, S: tl.constexpr, stride, pad,
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, INT8: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)  # output pixels n*P*Q + p*Q + q
    cols = pid_n * BN + tl.arange(0, BN)  # output channels
    n, pq = rows // (P * Q), rows % (P * Q)
    p, q = pq // Q, pq % Q
    row_ok, col_ok = rows < N * P * Q, cols < K
    ch = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.int32 if INT8 else tl.float32)
    for r in tl.static_range(R):
        for s in tl.static_range(S):
            ih, iw = p * stride - pad + r, q * stride - pad + s
            inside = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            base = ((n * H + ih) * W + iw) * C
            for c0 in range(0, C, BK):
                a = tl.load(x + base[:, None] + c0 + ch[None, :], mask=inside[:, None] & (c0 + ch[None, :] < C), other=0)
                k_rows = (r * S + s) * C + c0 + ch  # the weight is (R*S*C, K), K contiguous
                b = tl.load(w + k_rows[:, None] * K + cols[None, :], mask=(c0 + ch[:, None] < C) & col_ok[None, :], other=0)
                acc += tl.dot(a, b)
    out = y + rows[:, None] * K + cols[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    if INT8:
        v = acc.to(tl.float32) * scale
        v = tl.minimum(tl.maximum(v, -128.0), 127.0)
        v = tl.where(v >= 0, v + 0.5, v - 0.5).to(tl.int8)  # round half away from zero, as a Quantize does
        tl.store(out, v, mask=ok)
    else:
        tl.store(out, acc.to(tl.float16), mask=ok)


conv_kernel = triton.autotune(CONFIGS, key=["N", "H", "W", "C", "K", "R", "S", "stride"])(_conv_body)
conv_kernel_int8 = triton.autotune(CONFIGS_INT8, key=["N", "H", "W", "C", "K", "R", "S", "stride"])(_conv_body)


def conv(x_nhwc: torch.Tensor, w_rsck: torch.Tensor, R: int, S: int, stride: int, pad: int, scale: float = 1.0,
         kernel=None, **meta) -> torch.Tensor:
    """y (N, P, Q, K) = conv(x (N, H, W, C), weight (R*S*C, K)); int8 in -> int8 out (acc * scale, saturated)."""
    N, H, W, C = x_nhwc.shape
    K = w_rsck.shape[1]
    P, Q = (H + 2 * pad - R) // stride + 1, (W + 2 * pad - S) // stride + 1
    int8 = x_nhwc.dtype == torch.int8
    kernel = kernel or (conv_kernel_int8 if int8 else conv_kernel)
    y = torch.empty(N, P, Q, K, device=x_nhwc.device, dtype=torch.int8 if int8 else torch.float16)
    grid = lambda m: (triton.cdiv(N * P * Q, m["BM"]), triton.cdiv(K, m["BN"]))  # noqa: E731
    kernel[grid](x_nhwc, w_rsck, y, scale, N, H, W, C, K, P, Q, R, S, stride, pad, INT8=int8, **meta)
    return y


def as_kernel_operands(x_nchw: torch.Tensor, w_kcrs: torch.Tensor):
    """NCHW input and KCRS weight (PyTorch's) -> NHWC input and the (R*S*C, K) weight the kernel reads."""
    K, C, R, S = w_kcrs.shape
    return x_nchw.permute(0, 2, 3, 1).contiguous(), w_kcrs.permute(2, 3, 1, 0).reshape(R * S * C, K).contiguous()


def check(device: str, kernel=None, **meta) -> None:
    """The kernel against F.conv2d on small shapes with odd sizes (padding, stride 2, channels not a multiple of BK)."""
    g = torch.Generator().manual_seed(0)
    for (n, c, h, k, r, stride, pad) in ((2, 48, 9, 40, 3, 1, 1), (1, 32, 8, 16, 1, 2, 0), (2, 64, 7, 24, 3, 2, 1)):
        xi = torch.randint(-20, 20, (n, c, h, h), generator=g, dtype=torch.int8)
        wi = torch.randint(-20, 20, (k, c, r, r), generator=g, dtype=torch.int8)
        exact = F.conv2d(xi.double(), wi.double(), stride=stride, padding=pad)  # exact integer sums
        xk, wk = as_kernel_operands(xi, wi)
        got = conv(xk.to(device), wk.to(device), r, r, stride, pad, scale=1 / 256, kernel=kernel, **meta).cpu()
        want = torch.clamp(exact / 256, -128, 127)
        want = torch.where(want >= 0, want + 0.5, want - 0.5).trunc().to(torch.int8).permute(0, 2, 3, 1)
        assert torch.equal(got, want), f"int8 conv {n, c, h, k, r, stride, pad}: {(got.int() - want.int()).abs().max()}"
        xh, wh = xi.half() / 8, wi.half() / 8
        ref = F.conv2d(xh.double(), wh.double(), stride=stride, padding=pad).permute(0, 2, 3, 1)
        xk, wk = as_kernel_operands(xh, wh)
        got = conv(xk.to(device), wk.to(device), r, r, stride, pad, kernel=kernel, **meta).cpu().double()
        assert torch.allclose(got, ref, rtol=2e-3, atol=2e-2), f"fp16 conv {n, c, h, k, r, stride, pad}"


# ResNet-50's convolutions at batch 32, 224² (the stem's 3 channels are left out: no tensor-core conv reads 3 channels
# without padding them, and the cost model pads them to 8): (C, K, H, R, stride)
RESNET50 = [(64, 64, 56, 1, 1), (64, 64, 56, 3, 1), (64, 256, 56, 1, 1), (256, 64, 56, 1, 1),
            (256, 128, 56, 1, 1), (128, 128, 56, 3, 2), (128, 512, 28, 1, 1), (512, 128, 28, 1, 1),
            (128, 128, 28, 3, 1), (512, 256, 28, 1, 1), (256, 256, 28, 3, 2), (256, 1024, 14, 1, 1),
            (1024, 256, 14, 1, 1), (256, 256, 14, 3, 1), (1024, 512, 14, 1, 1), (512, 512, 14, 3, 2),
            (512, 2048, 7, 1, 1), (2048, 512, 7, 1, 1), (512, 512, 7, 3, 1)]


def gemm_at_conv_dims(timeit, m: int, k: int, n: int) -> tuple[float, float]:
    """cuBLAS's fp16 and int8 GEMMs at a convolution's implicit-GEMM dims (rows = output pixels, reduction = filter
    row x column x input channel, columns = output channels), the gathered operand already laid out (for a 1x1 stride-1
    convolution over NHWC that *is* the convolution). The int8 product writes int32 (twice fp16's bytes): if anything
    this flatters fp16."""
    a16 = [torch.randn(m, k, device="cuda", dtype=torch.float16) for _ in range(2)]
    b16 = torch.randn(n, k, device="cuda", dtype=torch.float16).t()  # column-major, as a weight is
    a8 = [torch.randint(-127, 127, (m, k), device="cuda", dtype=torch.int8) for _ in range(2)]
    b8 = torch.randint(-127, 127, (n, k), device="cuda", dtype=torch.int8).t()  # cuBLASLt's int8 wants it so
    return timeit(lambda a: torch.mm(a, b16), [(a,) for a in a16]), timeit(lambda a: torch._int_mm(a, b8), [(a,) for a in a8])


def measure(timeit, batch: int = 32) -> list[dict]:
    """Per ResNet-50 convolution: cuDNN fp16 (channels-last, benchmark mode), this kernel in fp16 and in int8;
    ``timeit(fn, arg_sets) -> ms`` is calibrate.py's timer."""
    torch.backends.cudnn.benchmark = True
    rows = []
    for C, K, H, R, stride in RESNET50:
        pad = R // 2
        P = (H + 2 * pad - R) // stride + 1
        flops = 2 * batch * P * P * K * C * R * R
        xs = [torch.randn(batch, C, H, H, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
              for _ in range(2)]
        wh = torch.randn(K, C, R, R, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
        cudnn = timeit(lambda t: F.conv2d(t, wh, stride=stride, padding=pad), [(t,) for t in xs])
        wk16 = as_kernel_operands(xs[0][:1], wh)[1]
        x16 = [as_kernel_operands(t, wh)[0] for t in xs]
        wk8 = torch.randint(-127, 127, wk16.shape, device="cuda", dtype=torch.int8)
        x8 = [torch.randint(-127, 127, t.shape, device="cuda", dtype=torch.int8) for t in x16]
        t16 = timeit(lambda t: conv(t, wk16, R, R, stride, pad), [(t,) for t in x16])
        t8 = timeit(lambda t: conv(t, wk8, R, R, stride, pad, scale=1e-3), [(t,) for t in x8])
        g16, g8 = gemm_at_conv_dims(timeit, batch * P * P, C * R * R, K)
        rows.append({"conv": f"{R}x{R}/{stride} {C}->{K} @{H}", "flops": flops, "cudnn_fp16_ms": cudnn,
                     "triton_fp16_ms": t16, "triton_int8_ms": t8, "cublas_fp16_gemm_ms": g16, "cublas_int8_gemm_ms": g8})
        r = rows[-1]  # as it goes: a run cut short still shows its rows
        print(f"{r['conv']:24s} cudnn fp16 {cudnn:.4f}  triton fp16 {t16:.4f}  int8 {t8:.4f}  "
              f"cublas gemm fp16 {g16:.4f}  int8 {g8:.4f} ms", file=sys.stderr, flush=True)
    return rows


def summary(rows: list[dict]) -> dict:
    """The int8 speedup over fp16 of the same kernel (flops-weighted: the sum of times), and the rates."""
    tot = lambda key: sum(r[key] for r in rows)  # noqa: E731
    flops = sum(r["flops"] for r in rows)
    return {"int8_over_fp16_same_kernel": tot("triton_fp16_ms") / tot("triton_int8_ms"),
            "int8_over_fp16_cublas_gemm": tot("cublas_fp16_gemm_ms") / tot("cublas_int8_gemm_ms"),
            "int8_over_fp16_cublas_gemm_median": statistics.median(r["cublas_fp16_gemm_ms"] / r["cublas_int8_gemm_ms"] for r in rows),
            "int8_over_fp16_median": statistics.median(r["triton_fp16_ms"] / r["triton_int8_ms"] for r in rows),
            "cudnn_fp16_tflops": flops / tot("cudnn_fp16_ms") / 1e9, "triton_fp16_tflops": flops / tot("triton_fp16_ms") / 1e9,
            "triton_int8_tops": flops / tot("triton_int8_ms") / 1e9}


@triton.jit
def _gemm(a, b, c, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, INT8: tl.constexpr):
    """A plain tiled GEMM, a (M, K) row-major, b (K, N) row-major: the card's int8/fp16 ratio with no gather in the way."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.int32 if INT8 else tl.float32)
    for k0 in range(0, K, BK):
        acc += tl.dot(tl.load(a + rows[:, None] * K + k0 + ks[None, :]), tl.load(b + (k0 + ks[:, None]) * N + cols[None, :]))
    if INT8:
        tl.store(c + rows[:, None] * N + cols[None, :], acc.to(tl.float32).to(tl.int8))
    else:
        tl.store(c + rows[:, None] * N + cols[None, :], acc.to(tl.float16))


def gemm_probe(timeit, m: int = 8192) -> dict:
    """TOPS of the plain Triton GEMM at m^3 in fp16 and int8 (the tiles' int8 reduction twice as deep)."""
    out = {}
    for dtype, bk in ((torch.float16, 64), (torch.int8, 128)):
        mk = (lambda *s: torch.randint(-127, 127, s, device="cuda", dtype=torch.int8)) if dtype == torch.int8 else \
            (lambda *s: torch.randn(*s, device="cuda", dtype=torch.float16))
        a, b, c = [mk(m, m) for _ in range(2)], mk(m, m), torch.empty(m, m, device="cuda", dtype=dtype)
        run = lambda x: _gemm[(m // 128, m // 256)](x, b, c, m, m, m, BM=128, BN=256, BK=bk,  # noqa: E731
                                                     INT8=dtype == torch.int8, num_warps=8, num_stages=3)
        out[f"triton_gemm_tops_{NAME[dtype]}"] = 2 * m**3 / timeit(run, [(x,) for x in a], reps=20) / 1e9
    out["triton_gemm_int8_over_fp16"] = out["triton_gemm_tops_int8"] / out["triton_gemm_tops_fp16"]
    return out


NAME = {torch.float16: "fp16", torch.int8: "int8"}


if __name__ == "__main__":
    if not torch.cuda.is_available():  # TRITON_INTERPRET=1 on a CPU: the correctness check only, one fixed tile
        check("cpu", kernel=_conv_body, BM=32, BN=32, BK=32)
        print("int8/fp16 implicit-GEMM convolution matches F.conv2d (interpreter)")
        sys.exit(0)
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from calibrate import timeit
    check("cuda", kernel=_conv_body, BM=64, BN=64, BK=32)  # one tile: a few compiles, not the autotuner's
    print("checked against F.conv2d", file=sys.stderr, flush=True)
    print(gemm_probe(timeit), file=sys.stderr, flush=True)
    print(summary(measure(timeit)), flush=True)
