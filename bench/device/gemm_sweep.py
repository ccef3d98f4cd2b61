"""How fast the card's tensor cores run int8 against fp16, with each dtype's GEMM tuned the same way.

    python bench/device/gemm_sweep.py OUT_DIR [SECONDS]

The cost model charges an INT8 product or convolution at the fp16 rate times the card's int8/fp16 matrix ratio
(``int8_over_fp16_matrix``): PyTorch has no int8 convolution on CUDA and TensorRT's own INT8 kernels cannot run here.
That ratio was measured with one untuned Triton tile (int8conv.gemm). Here one GEMM design — tiles ordered in groups
so neighbouring programs share operands in L2, the second operand K-major, operands loaded by pointer or by the
Hopper tensor-memory accelerator (TMA) — is swept over tile shapes, pipeline depths and warps for both dtypes at
8192^3, within a time budget, beside cuBLAS (``torch.matmul`` fp16, ``torch._int_mm`` int8). Each dtype's three
fastest tiles are then checked: int8 against exact integer sums, fp16 against a float64 product, on sizes that are
multiples of the tile (the kernel has no masks). The ratio reported is the fastest checked int8 over the fastest fp16
of all kernels measured (cuBLAS's included), so tuning one side and not the other cannot inflate it.

Writes OUT_DIR/gemm_sweep.json (every configuration's TOP/s or its error) and prints the summary.

``bench/device/apply_sweep.py`` folds the ratio into the device profiles (runs anywhere: no Triton needed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).parent))
from int8conv import requantized  # noqa: E402  (the int8 epilogue's reference, shared with int8conv's checks)


@triton.jit
def _tuned(a, b, c, scale, M, N, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr,
           INT8: tl.constexpr, TMA: tl.constexpr, EVEN: tl.constexpr = True):
    """c = a @ bᵀ with a (M, K) and b (N, K), both row-major (the reduction contiguous). By pointer, M, N and K must be
    multiples of the tile; through TMA any sizes (the tensor-memory accelerator fills what lies outside with zeros, the
    store is masked unless EVEN) with K a multiple of 16 bytes (a descriptor's row stride).
    Programs walk output tiles GROUP rows of tiles at a time (operand reuse in L2). int8 sums in int32, requantized to
    int8 on the way out (as between Q/DQ pairs); fp16 sums in fp32. K is a compile-time constant (TRITON_INTERPRET,
    which checks this kernel on a CPU, cannot loop over a runtime one)."""
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    in_group = GROUP * tiles_n
    first = (pid // in_group) * GROUP
    rows_here = min(tiles_m - first, GROUP)
    pm = first + (pid % in_group) % rows_here
    pn = (pid % in_group) // rows_here
    acc = tl.zeros((BM, BN), dtype=tl.int32 if INT8 else tl.float32)
    if TMA:
        da = tl.make_tensor_descriptor(a, shape=[M, K], strides=[K, 1], block_shape=[BM, BK])
        db = tl.make_tensor_descriptor(b, shape=[N, K], strides=[K, 1], block_shape=[BN, BK])
        for k0 in range(0, K, BK):
            acc = tl.dot(da.load([pm * BM, k0]), db.load([pn * BN, k0]).T, acc, out_dtype=acc.dtype)
    else:
        rows = pm * BM + tl.arange(0, BM)
        cols = pn * BN + tl.arange(0, BN)
        ks = tl.arange(0, BK)
        pa = a + rows[:, None] * K + ks[None, :]
        pb = b + cols[None, :] * K + ks[:, None]
        for _ in range(0, K, BK):
            acc = tl.dot(tl.load(pa), tl.load(pb), acc, out_dtype=acc.dtype)
            pa += BK
            pb += BK
    rows = pm * BM + tl.arange(0, BM)
    cols = pn * BN + tl.arange(0, BN)
    out = c + rows[:, None] * N + cols[None, :]
    if INT8:
        v = tl.minimum(tl.maximum(acc.to(tl.float32) * scale, -128.0), 127.0)
        res = tl.where(v >= 0, v + 0.5, v - 0.5).to(tl.int8)
    else:
        res = acc.to(tl.float16)
    if EVEN:
        tl.store(out, res)
    else:
        tl.store(out, res, mask=(rows < M)[:, None] & (cols < N)[None, :])


def run(a: torch.Tensor, b: torch.Tensor, cfg: dict, scale: float = 1.0) -> torch.Tensor:
    (M, K), N = a.shape, b.shape[0]
    c = torch.empty(M, N, device=a.device, dtype=a.dtype)
    even = M % cfg["BM"] == 0 and N % cfg["BN"] == 0
    if not cfg["TMA"] and not (even and K % cfg["BK"] == 0):
        raise ValueError(f"by pointer the sizes must be multiples of the tile: {M, N, K} {cfg}")
    grid = (triton.cdiv(M, cfg["BM"]) * triton.cdiv(N, cfg["BN"]),)
    _tuned[grid](a, b, c, scale, M, N, K, BM=cfg["BM"], BN=cfg["BN"], BK=cfg["BK"], GROUP=cfg["GROUP"],
                 INT8=a.dtype == torch.int8, TMA=cfg["TMA"], EVEN=even, num_warps=cfg["warps"], num_stages=cfg["stages"])
    return c


def configs(int8: bool) -> list[dict]:
    """Tile shapes x reduction depth x pipeline stages x warps x loads, those that fit the SM's 228 KiB of shared
    memory; the shapes known to do well on sm_90 first, so a budget cut keeps them."""
    size = 1 if int8 else 2
    out = []
    for bm, bn, warps in ((128, 256, 8), (256, 128, 8), (128, 128, 4), (128, 128, 8), (64, 256, 4), (256, 64, 4)):
        for bk in ((128, 64, 256) if int8 else (64, 32, 128)):
            for stages in (4, 3, 5, 2):
                if stages * (bm + bn) * bk * size > 220 * 1024:
                    continue
                for tma in (True, False):
                    out.append({"BM": bm, "BN": bn, "BK": bk, "stages": stages, "warps": warps, "GROUP": 8, "TMA": tma})
    return out


def check(cfg: dict, int8: bool, device: str = "cuda", ragged: bool = False) -> None:
    """One configuration against exact integer sums (int8) or a float64 product (fp16), on a non-square size; with
    ``ragged`` (TMA only) on sizes that are not multiples of the tile."""
    g = torch.Generator().manual_seed(2)
    m, n, k = 2 * cfg["BM"], 3 * cfg["BN"], 4 * cfg["BK"]
    if ragged:
        m, n, k = m - 7, n - 5, k - 48
    a, b = (torch.randint(-40, 40, s, generator=g, dtype=torch.int8) for s in ((m, k), (n, k)))
    exact = a.double() @ b.double().t()
    if int8:
        want = requantized(exact, 1 / 1024)
        got = run(a.to(device), b.to(device), cfg, 1 / 1024).cpu()
        assert torch.equal(got, want), f"int8 {cfg}"
    else:
        ah, bh = a.half() / 8, b.half() / 8
        got = run(ah.to(device), bh.to(device), cfg).cpu().double()
        assert torch.allclose(got, ah.double() @ bh.double().t(), rtol=2e-3, atol=5e-2), f"fp16 {cfg}"


def main(out_dir: str, budget_s: float = 420.0) -> dict:
    from calibrate import col_major, timeit

    def alloc(size: int, alignment: int, stream):  # TMA descriptors made on the device need scratch memory
        return torch.empty(size, device="cuda", dtype=torch.int8)
    triton.set_allocator(alloc)
    m = 8192
    ops = 2 * m**3
    ints = [torch.randint(-127, 127, (m, m), device="cuda", dtype=torch.int8) for _ in range(3)]
    halves = [torch.randn(m, m, device="cuda", dtype=torch.float16) for _ in range(3)]
    result: dict = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                    "size": m, "cublas": {}, "sweep": {"int8": [], "fp16": []}}
    result["cublas"]["fp16"] = ops / timeit(torch.matmul, [(halves[i], halves[i + 1]) for i in range(2)], reps=20) / 1e9
    result["cublas"]["int8"] = ops / timeit(torch._int_mm, [(ints[i], col_major(ints[i + 1])) for i in range(2)],
                                            reps=20) / 1e9
    start = time.time()
    share = budget_s / 2
    for name, xs in (("int8", ints), ("fp16", halves)):
        b = xs[2]  # (N, K) row-major: the reduction contiguous
        for cfg in configs(name == "int8"):
            if time.time() - start > share * (1 if name == "int8" else 2):
                result["sweep"][name].append({**cfg, "skipped": "time budget"})
                continue
            row = dict(cfg)
            try:
                row["tops"] = ops / timeit(lambda x: run(x, b, cfg, 1e-4), [(x,) for x in xs[:2]], reps=10, warm=2) / 1e9
            except Exception as exc:  # noqa: BLE001  (a tile that does not compile or fit: recorded, not fatal)
                row["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"
            result["sweep"][name].append(row)
            print(name, row, file=sys.stderr, flush=True)
    best = {}
    for name in ("int8", "fp16"):
        ranked = sorted((r for r in result["sweep"][name] if "tops" in r), key=lambda r: -r["tops"])
        checked = []
        for r in ranked[:3]:
            cfg = {k: r[k] for k in ("BM", "BN", "BK", "stages", "warps", "GROUP", "TMA")}
            try:
                check(cfg, name == "int8")
                checked.append(r)
            except AssertionError as exc:
                r["check"] = f"failed: {exc}"
        best[name] = checked[0] if checked else None
    fp16_best = max(result["cublas"]["fp16"], best["fp16"]["tops"] if best["fp16"] else 0.0)
    int8_best = max(result["cublas"]["int8"], best["int8"]["tops"] if best["int8"] else 0.0)
    result["best"] = best
    result["summary"] = {"fp16_tops": fp16_best, "int8_tops": int8_best, "int8_over_fp16_matrix": int8_best / fp16_best,
                         "fp16_kernel": "cublas" if fp16_best == result["cublas"]["fp16"] else "triton",
                         "int8_kernel": "cublas" if int8_best == result["cublas"]["int8"] else "triton",
                         "configs_timed": {k: sum(1 for r in v if "tops" in r) for k, v in result["sweep"].items()}}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "gemm_sweep.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"cublas": result["cublas"], "best": best, "summary": result["summary"]}, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".", float(sys.argv[2]) if len(sys.argv) > 2 else 420.0)
