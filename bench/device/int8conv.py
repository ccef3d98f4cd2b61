"""The card's int8 tensor-core rate and int8 convolutions, measured, since PyTorch has no int8 convolution on CUDA.

TensorRT runs an INT8 convolution as an implicit GEMM on the tensor cores: the output pixels are the rows, the output
channels the columns, and the reduction runs over (filter row, filter column, input channel) reading the NHWC input in
place. This file has:

- ``gemm``: a plain Triton GEMM, int8 (int32 sums requantized to int8 on the way out, as between Q/DQ pairs) and fp16,
  checked against exact sums (``check_gemm``). On sm_90 its int8 reaches the tensor cores' int8 rate only with the
  second operand K-major (the reduction contiguous, as a Linear's weight is stored): N-major it ran at 104 TOP/s,
  K-major at 1,132-1,183 against its fp16's 649-664 TFLOP/s and cuBLAS's fp16 761 (8192³, H100). cuBLAS's own int8
  GEMM (``torch._int_mm``) reached 800-876. calibrate.py takes the fastest int8 over the fastest fp16 (``gemm_probe``).
- ``conv``: an implicit-GEMM convolution in Triton, int8 and fp16 from one kernel design, autotuned per dtype, checked
  against ``F.conv2d`` (int8 exactly, fp16 within rounding), and ``measure``: it and cuBLAS's GEMMs at each of
  ResNet-50's convolutions (batch 32, 224²), in int8 and fp16, beside cuDNN's fp16 convolution. At those sizes every
  int8 stand-in ran about 1.07x its fp16 (bench/device/int8conv_h100.txt): the convolutions are a few tens of
  microseconds each, and these kernels reach half of cuDNN's fp16 speed there.

Run alone on the card: ``python bench/device/int8conv.py``; ``TRITON_INTERPRET=1`` runs both checks on a CPU.
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
               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, INT8: tl.constexpr, KMAJOR: tl.constexpr):
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
                k_rows = (r * S + s) * C + c0 + ch  # the weight is (R*S*C, K), K contiguous, or (K, R*S*C) if KMAJOR
                offs = cols[None, :] * (R * S * C) + k_rows[:, None] if KMAJOR else k_rows[:, None] * K + cols[None, :]
                b = tl.load(w + offs, mask=(c0 + ch[:, None] < C) & col_ok[None, :], other=0)
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
         kernel=None, kmajor: bool = False, **meta) -> torch.Tensor:
    """y (N, P, Q, K) = conv(x (N, H, W, C), weight (R*S*C, K), or (K, R*S*C) with ``kmajor``); int8 in -> int8 out
    (acc * scale, saturated)."""
    N, H, W, C = x_nhwc.shape
    K = w_rsck.shape[0 if kmajor else 1]
    P, Q = (H + 2 * pad - R) // stride + 1, (W + 2 * pad - S) // stride + 1
    int8 = x_nhwc.dtype == torch.int8
    kernel = kernel or (conv_kernel_int8 if int8 else conv_kernel)
    y = torch.empty(N, P, Q, K, device=x_nhwc.device, dtype=torch.int8 if int8 else torch.float16)
    grid = lambda m: (triton.cdiv(N * P * Q, m["BM"]), triton.cdiv(K, m["BN"]))  # noqa: E731
    kernel[grid](x_nhwc, w_rsck, y, scale, N, H, W, C, K, P, Q, R, S, stride, pad, INT8=int8, KMAJOR=kmajor, **meta)
    return y


def as_kernel_operands(x_nchw: torch.Tensor, w_kcrs: torch.Tensor, kmajor: bool = False):
    """NCHW input and KCRS weight (PyTorch's) -> NHWC input and the (R*S*C, K) weight the kernel reads, or with
    ``kmajor`` the (K, R*S*C) one (the reduction contiguous: the tensor cores' int8 instruction on sm_90 takes its
    second operand that way)."""
    K, C, R, S = w_kcrs.shape
    w = w_kcrs.permute(2, 3, 1, 0).reshape(R * S * C, K)
    return x_nchw.permute(0, 2, 3, 1).contiguous(), (w.t() if kmajor else w).contiguous()


def requantized(sums: torch.Tensor, scale: float) -> torch.Tensor:
    """The kernels' int8 epilogue on exact sums: times ``scale``, saturated to int8, rounded half away from zero."""
    v = torch.clamp(sums * scale, -128, 127)
    return torch.where(v >= 0, v + 0.5, v - 0.5).trunc().to(torch.int8)


def check(device: str, kernel=None, **meta) -> None:
    """The kernel against F.conv2d on small shapes with odd sizes (padding, stride 2, channels not a multiple of BK)."""
    g = torch.Generator().manual_seed(0)
    for (n, c, h, k, r, stride, pad) in ((2, 48, 9, 40, 3, 1, 1), (1, 32, 8, 16, 1, 2, 0), (2, 64, 7, 24, 3, 2, 1)):
        xi = torch.randint(-20, 20, (n, c, h, h), generator=g, dtype=torch.int8)
        wi = torch.randint(-20, 20, (k, c, r, r), generator=g, dtype=torch.int8)
        exact = F.conv2d(xi.double(), wi.double(), stride=stride, padding=pad)  # exact integer sums
        want = requantized(exact, 1 / 256).permute(0, 2, 3, 1)
        for kmajor in (False, True):
            xk, wk = as_kernel_operands(xi, wi, kmajor)
            got = conv(xk.to(device), wk.to(device), r, r, stride, pad, scale=1 / 256, kernel=kernel, kmajor=kmajor,
                       **meta).cpu()
            assert torch.equal(got, want), f"int8 conv {n, c, h, k, r, stride, pad, kmajor}: {(got.int() - want.int()).abs().max()}"
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
        wk8 = torch.randint(-127, 127, wk16.shape[::-1], device="cuda", dtype=torch.int8)  # (K, R*S*C): see KMAJOR
        x8 = [torch.randint(-127, 127, t.shape, device="cuda", dtype=torch.int8) for t in x16]
        t16 = timeit(lambda t: conv(t, wk16, R, R, stride, pad), [(t,) for t in x16])
        t8 = timeit(lambda t: conv(t, wk8, R, R, stride, pad, scale=1e-3, kmajor=True), [(t,) for t in x8])
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
def _gemm(a, b, c, scale, M, N, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, INT8: tl.constexpr,
          KMAJOR: tl.constexpr):
    """A plain tiled GEMM: a (M, K) row-major, b (K, N) row-major or (N, K) with KMAJOR; int8 requantized to int8 on
    the way out (as between Q/DQ pairs), fp16 with fp32 sums. The card's int8/fp16 ratio with no gather in the way.
    K is a compile-time constant because TRITON_INTERPRET (numpy 2) cannot loop over a runtime one."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.program_id(1) * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    row_ok, col_ok = rows < M, cols < N
    acc = tl.zeros((BM, BN), dtype=tl.int32 if INT8 else tl.float32)
    for k0 in range(0, K, BK):
        k_ok = k0 + ks < K
        offs = cols[None, :] * K + (k0 + ks[:, None]) if KMAJOR else (k0 + ks[:, None]) * N + cols[None, :]
        x = tl.load(a + rows[:, None] * K + k0 + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0)
        acc += tl.dot(x, tl.load(b + offs, mask=k_ok[:, None] & col_ok[None, :], other=0))
    out, ok = c + rows[:, None] * N + cols[None, :], row_ok[:, None] & col_ok[None, :]
    if INT8:
        v = tl.minimum(tl.maximum(acc.to(tl.float32) * scale, -128.0), 127.0)
        tl.store(out, tl.where(v >= 0, v + 0.5, v - 0.5).to(tl.int8), mask=ok)
    else:
        tl.store(out, acc.to(tl.float16), mask=ok)


def gemm(a: torch.Tensor, b: torch.Tensor, kmajor: bool = True, scale: float = 1.0) -> torch.Tensor:
    """a (M, K) @ b, b given (N, K) with ``kmajor`` (the reduction contiguous, as the int8 tensor-core instruction on
    sm_90 takes it and as a Linear's weight is stored) or (K, N); int8 -> int8 (sums * scale, saturated), fp16 -> fp16.
    One tile per dtype (int8's twice as deep along the reduction: its instruction takes 32 there, fp16's 16)."""
    M, K = a.shape
    N = b.shape[0] if kmajor else b.shape[1]
    int8 = a.dtype == torch.int8
    c = torch.empty(M, N, device=a.device, dtype=a.dtype)
    BN = 128 if N <= 128 else 256
    _gemm[(triton.cdiv(M, 128), triton.cdiv(N, BN))](a, b, c, scale, M, N, K, BM=128, BN=BN, BK=128 if int8 else 64,
                                                      INT8=int8, KMAJOR=kmajor, num_warps=8, num_stages=3)
    return c


def check_gemm(device: str) -> None:
    """The GEMM against exact sums (int8) and a float64 product (fp16), on sizes that are not multiples of the tiles."""
    g = torch.Generator().manual_seed(1)
    for m, k, n in ((200, 152, 72), (130, 576, 300)):
        a, b = (torch.randint(-30, 30, s, generator=g, dtype=torch.int8) for s in ((m, k), (n, k)))
        exact = a.double() @ b.double().t()
        want = requantized(exact, 1 / 512)
        for kmajor in (True, False):
            got = gemm(a.to(device), (b if kmajor else b.t().contiguous()).to(device), kmajor, scale=1 / 512).cpu()
            assert torch.equal(got, want), f"int8 gemm {m, k, n, kmajor}"
        ah, bh = a.half() / 8, b.half() / 8
        got = gemm(ah.to(device), bh.to(device), True).cpu().double()
        assert torch.allclose(got, ah.double() @ bh.double().t(), rtol=2e-3, atol=2e-2), f"fp16 gemm {m, k, n}"


def gemm_probe(timeit, m: int = 8192) -> dict:
    """TOP/s of the plain Triton GEMM at m^3: fp16, and int8 with the second operand K-major and not (on sm_90 Triton
    reaches the int8 tensor-core rate only with it K-major)."""
    out = {}
    for dtype, kmajor in ((torch.float16, True), (torch.int8, False), (torch.int8, True)):
        mk = (lambda *s: torch.randint(-127, 127, s, device="cuda", dtype=torch.int8)) if dtype == torch.int8 else \
            (lambda *s: torch.randn(*s, device="cuda", dtype=torch.float16))
        a, b = [mk(m, m) for _ in range(2)], mk(m, m)
        key = f"triton_gemm_tops_{NAME[dtype]}{'' if kmajor else '_nmajor'}"
        out[key] = 2 * m**3 / timeit(lambda x: gemm(x, b, kmajor, 1e-4), [(x,) for x in a], reps=20) / 1e9
    out["triton_gemm_int8_over_fp16"] = out["triton_gemm_tops_int8"] / out["triton_gemm_tops_fp16"]
    return out


NAME = {torch.float16: "fp16", torch.int8: "int8"}


if __name__ == "__main__":
    if not torch.cuda.is_available():  # TRITON_INTERPRET=1 on a CPU: the correctness check only, one fixed tile
        check("cpu", kernel=_conv_body, BM=32, BN=32, BK=32)
        check_gemm("cpu")
        print("int8/fp16 implicit-GEMM convolution matches F.conv2d, the GEMM exact sums (interpreter)")
        sys.exit(0)
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from calibrate import timeit
    check("cuda", kernel=_conv_body, BM=64, BN=64, BK=32)  # one tile: a few compiles, not the autotuner's
    check_gemm("cuda")
    print("checked against F.conv2d and exact sums", file=sys.stderr, flush=True)
    print(gemm_probe(timeit), file=sys.stderr, flush=True)
    print(summary(measure(timeit)), flush=True)
