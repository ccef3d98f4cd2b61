"""The cost model's pieces, predicted vs measured at served sizes.

    python bench/device/pieces.py measure OUT_DIR [--tiny] [--dtype=int8]   # on the GPU: OUT_DIR/pieces.json
    python bench/device/pieces.py merge FULL.json PART.json  # a --dtype run's rows replace the full run's
    python bench/device/pieces.py predict PIECES.json [PROFILE.json] [--save=PRED.json] [--before=OLD_PRED.json]
                                                             # here: writes bench/device/PIECES.md

Each piece is one op at a served size (batch 8/32, sequence 128/512, hidden 768/1024, images 224² and 640² with
ResNet/ConvNeXt channel counts) in one dtype. ``measure`` times PyTorch's kernel for it on the card — the kernel
TensorRT would pick stands in as cuBLAS/cuBLASLt (matrix products, int8 through ``torch._int_mm``), cuDNN
(convolutions: the faster of NCHW and NHWC, as TensorRT picks formats by timing), torch.compile (a pointwise chain in one
kernel), PyTorch's own kernels (reductions, gathers, unfused chains) and SDPA's flash / memory-efficient / cuDNN
kernels (the fastest counts) — as GPU time of CUDA-graph replays (an engine enqueues its kernels back to back).
``predict`` builds the same piece as a tiny real tensorrt_rtx network with the raw network API and runs
``costmodel.estimate`` on it with the card's profile, counting the layers the measured kernels stand for.
``--tiny`` shrinks every size so the whole script can be dry-run on a CPU.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

F = torch.nn.functional
DT = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8}
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Piece:
    name: str
    group: str
    op: str
    dtype: str
    size: dict
    count: tuple[str, ...] | None = None  # estimator labels whose ms the measured kernels stand for (None: all)
    measure: bool = True  # False: predicted only (no PyTorch CUDA kernel for it)
    note: str = ""
    variants: dict = field(default_factory=dict)
    needs: str = ""  # the profile number this piece's term reads (older profiles lack it: a stand-in is charged)


def pieces(tiny: bool = False) -> list[Piece]:
    s = (lambda n: max(1, n // 8)) if tiny else (lambda n: n)  # noqa: E731
    out: list[Piece] = []
    tok = {"8x128": 8 * 128, "32x512": 32 * 512}
    # matrix products: Q/K/V/out projections, FFN up and down (BERT-base), a 1024-hidden FFN (BERT-large)
    for label, t in tok.items():
        for k, n in ((768, 768), (768, 3072), (3072, 768), (1024, 4096)):
            for dt in ("fp32", "fp16", "bf16", "int8"):
                out.append(Piece(f"linear {label} {k}->{n}", "matrix product", "linear", dt,
                                 {"t": s(t), "k": s(k), "n": s(n)}, ("MATRIX_MULTIPLY",)))
    # convolutions: ResNet (stem, 3x3 per stage, bottleneck 1x1s), ConvNeXt depthwise 7x7, at 224² (batch 8 and 32)
    # and a detector backbone at 640² (batch 8)
    convs = [("stem 7x7/2 3->64 @224", 3, 64, 224, 7, 2, 1), ("3x3 64 @56", 64, 64, 56, 3, 1, 1),
             ("3x3 128 @28", 128, 128, 28, 3, 1, 1), ("3x3 256 @14", 256, 256, 14, 3, 1, 1),
             ("3x3 512 @7", 512, 512, 7, 3, 1, 1), ("1x1 256->64 @56", 256, 64, 56, 1, 1, 1),
             ("1x1 64->256 @56", 64, 256, 56, 1, 1, 1), ("dw 7x7 96 @56", 96, 96, 56, 7, 1, 96),
             ("dw 7x7 384 @14", 384, 384, 14, 7, 1, 384)]
    big = [("3x3 64 @160", 64, 64, 160, 3, 1, 1), ("3x3 128 @80", 128, 128, 80, 3, 1, 1),
           ("3x3 256 @40", 256, 256, 40, 3, 1, 1)]
    for batch, table, img in ((8, convs, 224), (32, convs, 224), (8, big, 640)):
        for label, cin, cout, hw, k, stride, groups in table:
            for dt in ("fp32", "fp16", "bf16", "int8"):
                if dt == "int8" and (batch != 32 or groups > 1):
                    continue
                size = {"n": s(batch), "cin": cin, "cout": cout, "hw": s(hw), "k": k, "stride": stride, "groups": groups}
                note = ("PyTorch has no int8 convolution on CUDA: measured as the faster of cuBLAS's and int8conv.py's "
                        "Triton int8 GEMM at the convolution's implicit-GEMM dims") if dt == "int8" else ""
                out.append(Piece(f"conv {label} b{batch} ({img}²)", "convolution", "conv", dt, size, ("CONVOLUTION",),
                                 note=note, needs="dwconv_tflops_fp32" if groups > 1 else ""))
    # conv + bias + ReLU and linear + bias + GELU as one kernel (cuDNN's fused conv, cuBLASLt's GELU epilogue)
    for dt in ("fp32", "fp16"):
        out.append(Piece("conv+bias+relu 3x3 64 @56 b32", "epilogue", "conv_bias_relu", dt,
                         {"n": s(32), "cin": 64, "cout": 64, "hw": s(56), "k": 3, "stride": 1, "groups": 1}))
        for label, t in tok.items():
            out.append(Piece(f"linear+bias+gelu {label} 768->3072", "epilogue", "linear_bias_gelu", dt,
                             {"t": s(t), "k": s(768), "n": s(3072)}))
    hidden = {"8x128x768": (8, 128, 768), "32x512x768": (32, 512, 768), "32x512x1024": (32, 512, 1024)}
    for label, (b, q, h) in hidden.items():
        size = {"b": s(b), "s": s(q), "h": s(h)}
        for dt in ("fp32", "fp16", "bf16"):
            out.append(Piece(f"5-op chain {label}, fused", "pointwise", "chain_fused", dt, size))
            out.append(Piece(f"5-op chain {label}, unfused", "pointwise", "chain_unfused", dt, size))
            out.append(Piece(f"gelu {label}", "pointwise", "gelu", dt, size))
            for op in ("sum", "mean", "softmax", "layer_norm"):
                out.append(Piece(f"{op} {label}", "reduction", op, dt, size))
        out.append(Piece(f"cast fp32->fp16 {label}", "pointwise", "cast", "fp16", size))
        for dt in ("fp32", "fp16"):
            out.append(Piece(f"embedding 30522x{h}[{b}x{q}]", "gather", "embedding", dt, {**size, "vocab": s(30522)}))
            out.append(Piece(f"index_select rows {b * q}x{h}", "gather", "index_rows", dt, size))
            out.append(Piece(f"index_select columns {b * q}x{h}", "gather", "index_cols", dt, size))
    for b, c, hw in ((32, 2048, 7), (8, 768, 7)):
        for dt in ("fp32", "fp16"):
            out.append(Piece(f"global avg pool {b}x{c}x{hw}x{hw}", "reduction", "avgpool", dt, {"b": s(b), "c": c, "hw": hw},
                             needs="reduce_launch_ms"))
    for b, q in ((8, 128), (8, 512), (32, 512)):
        size = {"b": s(b), "h": 12, "s": s(q), "d": 64}
        for dt in ("fp32", "fp16", "bf16"):
            out.append(Piece(f"softmax scores {b}x12x{q}x{q}", "reduction", "softmax_scores", dt, size))
            out.append(Piece(f"attention {b}x12x{q}x64, fused", "attention", "attention", dt, size, ("ATTENTION_OUTPUT",)))
            out.append(Piece(f"attention {b}x12x{q}x64, unfused", "attention", "attention_unfused", dt, size))
    return out


# ---------------------------------------------------------------------------------------------------------------- GPU


def _chain(x):
    return torch.sigmoid(torch.relu(x * 0.5 + 1.0) - 0.25)  # five pointwise ops


class Timer:
    def __init__(self, device: str) -> None:
        self.device = device

    def ms(self, fn, inputs, repeat=20, reps=15):
        """GPU time of one call: ``repeat`` calls over rotating inputs captured in a CUDA graph, replayed ``reps`` times
        (median); on a CPU (dry run) wall time of plain calls."""
        if self.device == "cpu":
            fn(*inputs[0])
            t = time.perf_counter()
            for i in range(3):
                fn(*inputs[i % len(inputs)])
            return (time.perf_counter() - t) / 3 * 1e3
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for args in inputs:
                fn(*args)
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(repeat):
                fn(*inputs[i % len(inputs)])
        g.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / repeat)
        return statistics.median(times)


def _rand(dev, *shape, dtype="fp32", n=3):
    if dtype == "int8":
        return [torch.randint(-127, 127, shape, device=dev, dtype=torch.int8) for _ in range(n)]
    return [torch.randn(*shape, device=dev, dtype=DT[dtype]) for _ in range(n)]


# bench/device/gemm_sweep.py's GEMM (TMA loads, tiles in L2-friendly groups) at the tiles that led its int8 sweep at
# 8192^3 and narrower ones for the served sizes' smaller products; the fastest counts, as for every piece
TUNED_INT8 = [dict(BM=128, BN=256, BK=128, stages=4, warps=8), dict(BM=128, BN=128, BK=128, stages=4, warps=8),
              dict(BM=128, BN=64, BK=128, stages=4, warps=4)]


def _tuned_int8(w: torch.Tensor, xs: list) -> dict[str, tuple]:
    """The tuned Triton int8 GEMM variants of x @ wᵀ (w (N, K), K-major), one per tile of TUNED_INT8."""
    import triton

    import gemm_sweep  # imports triton: the card only
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, device=w.device, dtype=torch.int8))
    out = {}
    for tile in TUNED_INT8:
        cfg = {**tile, "GROUP": 8, "TMA": True}
        out[f"tuned triton GEMM {tile['BM']}x{tile['BN']}x{tile['BK']}"] = (
            lambda x, cfg=cfg: gemm_sweep.run(x, w, cfg, 1e-3), xs)
    return out


def variants(p: Piece, dev: str) -> dict[str, tuple]:
    """name -> (fn, list of argument tuples): the PyTorch kernels that stand in for this piece (the fastest counts)."""
    z = p.size
    if p.op in ("linear", "linear_bias_gelu"):
        if p.dtype == "int8":
            w = _rand(dev, z["n"], z["k"], dtype="int8", n=1)[0]  # (n, k) row-major: w.t() is column-major, as cuBLASLt wants
            mm = (lambda x: torch._int_mm(x, w.t())) if dev != "cpu" else (lambda x: x.float() @ w.t().float())
            xs = [(x,) for x in _rand(dev, z["t"], z["k"], dtype="int8")]
            if dev == "cpu":
                return {"_int_mm": (mm, xs)}
            from int8conv import gemm  # imports triton: the card only
            return {"_int_mm": (mm, xs), "triton GEMM": (lambda x: gemm(x, w, True, 1e-3), xs), **_tuned_int8(w, xs)}
        w = _rand(dev, z["n"], z["k"], dtype=p.dtype, n=1)[0]
        xs = [(x,) for x in _rand(dev, z["t"], z["k"], dtype=p.dtype)]
        if p.op == "linear":
            return {"cublas": (lambda x: F.linear(x, w), xs)}
        bias = _rand(dev, z["n"], dtype=p.dtype, n=1)[0]
        fused = (lambda x: torch._addmm_activation(bias, x, w.t(), use_gelu=True))
        return {"cublasLt gelu epilogue": (fused, xs), "addmm then gelu": (lambda x: F.gelu(F.linear(x, w, bias)), xs)}
    if p.op == "conv" and p.dtype == "int8":  # no int8 convolution in PyTorch on CUDA: the Triton implicit GEMM
        w = _rand(dev, z["cout"], z["cin"], z["k"], z["k"], dtype="int8", n=1)[0]
        xs = _rand(dev, z["n"], z["cin"], z["hw"], z["hw"], dtype="int8")
        pad = z["k"] // 2
        if dev == "cpu":  # the tiny CPU dry run: the same sums in fp32
            return {"conv2d on fp32": (lambda x: F.conv2d(x.float(), w.float(), None, z["stride"], pad), [(x,) for x in xs])}
        p_out = (z["hw"] + 2 * pad - z["k"]) // z["stride"] + 1
        m, kd = z["n"] * p_out * p_out, -(-z["cin"] * z["k"] * z["k"] // 8) * 8  # the reduction padded to 8 (the stem's 147)
        from int8conv import gemm  # imports triton: the card only
        w8 = _rand(dev, z["cout"], kd, dtype="int8", n=1)[0]
        a8 = [(a,) for a in _rand(dev, m, kd, dtype="int8", n=2)]
        k16 = -(-kd // 16) * 16  # a TMA descriptor's rows are whole 16-byte units: the stem's 392 padded to 400
        w16, a16 = _rand(dev, z["cout"], k16, dtype="int8", n=1)[0], [(a,) for a in _rand(dev, m, k16, dtype="int8", n=2)]
        return {"cuBLAS int8 GEMM at its implicit-GEMM dims": (lambda a: torch._int_mm(a, w8.t()), a8),
                "triton GEMM at its implicit-GEMM dims": (lambda a: gemm(a, w8, True, 1e-3), a8),
                **{f"{k} at its implicit-GEMM dims": v for k, v in _tuned_int8(w16, a16).items()}}
    if p.op in ("conv", "conv_bias_relu"):
        w = torch.randn(z["cout"], z["cin"] // z["groups"], z["k"], z["k"], device=dev, dtype=DT[p.dtype])
        xs = _rand(dev, z["n"], z["cin"], z["hw"], z["hw"], dtype=p.dtype)
        pad = z["k"] // 2
        out = {}
        for fmt, mf in (("NCHW", torch.contiguous_format), ("NHWC", torch.channels_last)):
            wf, xf = w.to(memory_format=mf), [(x.to(memory_format=mf),) for x in xs]
            if p.op == "conv":
                out[fmt] = (lambda x, wf=wf: F.conv2d(x, wf, None, z["stride"], pad, 1, z["groups"]), xf)
            else:
                bias = torch.randn(z["cout"], device=dev, dtype=DT[p.dtype])
                if dev != "cpu":
                    out[f"{fmt} cudnn fused"] = (lambda x, wf=wf: torch.cudnn_convolution_relu(
                        x, wf, bias, (z["stride"],) * 2, (pad,) * 2, (1, 1), z["groups"]), xf)
                out[f"{fmt} conv then relu"] = (lambda x, wf=wf: F.relu(F.conv2d(x, wf, bias, z["stride"], pad)), xf)
        return out
    if p.op in ("chain_fused", "chain_unfused", "gelu", "cast", "sum", "mean", "softmax", "layer_norm"):
        xs = [(x,) for x in _rand(dev, z["b"], z["s"], z["h"], dtype="fp32" if p.op == "cast" else p.dtype)]
        h = z["h"]
        fn = {"chain_unfused": _chain, "chain_fused": torch.compile(_chain, dynamic=False), "gelu": F.gelu,
              "cast": lambda x: x.half(), "sum": lambda x: x.sum(-1), "mean": lambda x: x.mean(-1),
              "softmax": lambda x: x.softmax(-1), "layer_norm": None}[p.op]
        if p.op == "layer_norm":
            g, b = torch.randn(h, device=dev, dtype=DT[p.dtype]), torch.randn(h, device=dev, dtype=DT[p.dtype])
            fn = lambda x: F.layer_norm(x, (h,), g, b)  # noqa: E731
        return {"torch.compile" if p.op == "chain_fused" else "eager": (fn, xs)}
    if p.op == "avgpool":
        xs = [(x.to(memory_format=torch.channels_last),) for x in _rand(dev, z["b"], z["c"], z["hw"], z["hw"], dtype=p.dtype)]
        return {"mean NHWC": (lambda x: x.mean((2, 3)), xs), "mean NCHW": (lambda x: x.contiguous().mean((2, 3)), xs)}
    if p.op in ("embedding", "index_rows", "index_cols"):
        t, h = z["b"] * z["s"], z["h"]
        if p.op == "embedding":
            table = torch.randn(z["vocab"], h, device=dev, dtype=DT[p.dtype])
            ids = [(torch.randint(0, z["vocab"], (z["b"], z["s"]), device=dev),) for _ in range(3)]
            return {"F.embedding": (lambda i: F.embedding(i, table), ids)}
        x = torch.randn(t, h, device=dev, dtype=DT[p.dtype])
        dim, n = (0, t) if p.op == "index_rows" else (1, h)
        idx = [(torch.randint(0, n, (n,), device=dev),) for _ in range(3)]
        return {"index_select": (lambda i: x.index_select(dim, i), idx)}
    if p.op in ("softmax_scores", "attention", "attention_unfused"):
        b, hd, q, d = z["b"], z["h"], z["s"], z["d"]
        if p.op == "softmax_scores":
            return {"eager": (lambda x: x.softmax(-1), [(x,) for x in _rand(dev, b, hd, q, q, dtype=p.dtype)])}
        qkv = [tuple(_rand(dev, b, hd, q, d, dtype=p.dtype, n=1)[0] for _ in range(3)) for _ in range(3)]
        def unfused(qq, k, v):
            return torch.matmul(torch.softmax(torch.matmul(qq, k.transpose(-1, -2)) * d**-0.5, -1), v)
        if p.op == "attention_unfused":
            return {"matmul softmax matmul": (unfused, qkv)}
        from torch.nn.attention import SDPBackend, sdpa_kernel
        out = {}
        backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                    "cudnn": SDPBackend.CUDNN_ATTENTION} if dev != "cpu" else {"math": SDPBackend.MATH}
        for name, backend in backends.items():
            def run(qq, k, v, backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(qq, k, v)
            out[name] = (run, qkv)
        out["decomposed"] = (unfused, qkv)  # an attention layer TensorRT decomposes (fp32 has no fused kernel on RTX)
        return out
    raise ValueError(p.op)


def measure(out: Path, tiny: bool, dtype: str | None = None) -> None:
    """Every piece (or only those of ``dtype``: ``--dtype=int8``; ``merge`` folds such a run into a full one)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True  # TensorRT runs fp32 products and convolutions in TF32 by default
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # cuDNN times its algorithms, as TensorRT's builder does
    torch._dynamo.config.cache_size_limit = 256  # one compiled chain per size and dtype (past the limit: eager, unfused)
    timer = Timer(dev)
    result = {"card": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__,
              "cuda": torch.version.cuda, "tiny": tiny, "pieces": {}, "errors": []}
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for p in pieces(tiny):
        if not p.measure or (dtype and p.dtype != dtype):
            continue
        key = f"{p.name} {p.dtype}"
        row = result["pieces"][key] = {"variants": {}}
        try:
            for name, (fn, inputs) in variants(p, dev).items():
                try:
                    row["variants"][name] = timer.ms(fn, inputs)
                except Exception as exc:  # noqa: BLE001  (a backend without a kernel for these sizes/dtype)
                    row["variants"][name] = None
                    result["errors"].append(f"{key} [{name}]: {type(exc).__name__}: {str(exc)[:300]}")
        except Exception:  # noqa: BLE001
            result["errors"].append(f"{key}: {traceback.format_exc()[-800:]}")
        timed = {k: v for k, v in row["variants"].items() if v is not None}
        if timed:
            row["best"] = min(timed, key=timed.get)
            row["ms"] = timed[row["best"]]
        print(f"{key:60s} {row.get('ms', float('nan')):.4f} ms  {row.get('best', '-')}  [{time.time() - start:.0f}s]", flush=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
        (out / "pieces.json").write_text(json.dumps(result, indent=1) + "\n")  # each piece: a run cut short keeps its rows
    print("\n".join(result["errors"]))


def merge(full: Path, part: Path) -> None:
    """A run of some pieces (``measure --dtype=int8``) folded into a full run on the same card: its rows replace the
    full run's, the rest stay; the run's software and date are kept under ``merged``."""
    data, more = json.loads(full.read_text()), json.loads(part.read_text())
    if more["card"] != data["card"]:
        sys.exit(f"{part} was measured on {more['card']}, {full} on {data['card']}: not merged")
    data["pieces"].update(more["pieces"])
    data["errors"] = [e for e in data.get("errors", []) if e.split(" [")[0].split(":")[0] not in more["pieces"]] + more["errors"]
    data.setdefault("merged", []).append({"pieces": sorted(more["pieces"]), "torch": more["torch"], "cuda": more["cuda"],
                                          "date": time.strftime("%Y-%m-%d")})
    full.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(more['pieces'])} pieces from {part} merged into {full}")


# ---------------------------------------------------------------------------------------------------------------- CPU


class Net:
    """A strongly typed tensorrt_rtx network built with the raw API; weights are fp32 constants cast to the piece's dtype
    (folded at build time, so the cast costs nothing), int8 pieces Q/DQ both operands of the product."""

    def __init__(self, trt, dtype: str) -> None:
        import numpy as np

        from opmap.building.backend import logger, strongly_typed_network
        self.trt, self.np, self.dtype = trt, np, dtype
        self.builder = trt.Builder(logger(trt))
        self.net = strongly_typed_network(trt, self.builder)
        self.keep: list = []
        self.inputs: dict[str, torch.Tensor] = {}
        self.attention: dict = {}
        self.rng = np.random.default_rng(0)
        self.tdt = {"fp32": trt.DataType.FLOAT, "fp16": trt.DataType.HALF, "bf16": trt.DataType.BF16,
                    "int8": trt.DataType.FLOAT}[dtype]

    def input(self, name, shape, dtype=None, ints=0):
        if ints:
            self.inputs[name] = torch.randint(0, ints, shape, dtype=torch.int32)
            return self.net.add_input(name, self.trt.DataType.INT32, shape)
        self.inputs[name] = torch.randn(*shape)
        return self.net.add_input(name, dtype or self.tdt, shape)

    def const(self, shape, scale=0.05):
        value = (self.rng.standard_normal(shape) * scale).astype(self.np.float32)
        self.keep.append(value)
        t = self.net.add_constant(shape, self.trt.Weights(value)).get_output(0)
        return t if self.tdt == self.trt.DataType.FLOAT else self.net.add_cast(t, self.tdt).get_output(0)

    def scalar(self, v, like):
        value = self.np.full([1] * len(like.shape), v, dtype=self.np.float32)
        self.keep.append(value)
        t = self.net.add_constant(value.shape, self.trt.Weights(value)).get_output(0)
        return t if self.tdt == self.trt.DataType.FLOAT else self.net.add_cast(t, self.tdt).get_output(0)

    def qdq(self, t):
        s = self.net.add_constant((), self.trt.Weights(self.np.array(0.05, dtype=self.np.float32))).get_output(0)
        q = self.net.add_quantize(t, s, self.trt.DataType.INT8).get_output(0)
        return self.net.add_dequantize(q, s, self.trt.DataType.FLOAT).get_output(0)

    def ew(self, a, b, op):
        return self.net.add_elementwise(a, b, getattr(self.trt.ElementWiseOperation, op)).get_output(0)

    def act(self, a, kind):
        return self.net.add_activation(a, getattr(self.trt.ActivationType, kind)).get_output(0)


def network(p: Piece, trt) -> Net:
    """The piece as a tensorrt_rtx network (outputs marked)."""
    n, z, outs = Net(trt, p.dtype), p.size, []
    M = trt.MatrixOperation
    if p.op in ("linear", "linear_bias_gelu"):
        x = n.input("x", (z["t"], z["k"]))
        w = n.const((z["n"], z["k"]))
        if p.dtype == "int8":
            x, w = n.qdq(x), n.qdq(w)
        y = n.net.add_matrix_multiply(x, M.NONE, w, M.TRANSPOSE).get_output(0)
        if p.op == "linear_bias_gelu":
            y = n.act(n.ew(y, n.const((1, z["n"])), "SUM"), "GELU_ERF")
        outs.append(y)
    elif p.op in ("conv", "conv_bias_relu"):
        x = n.input("x", (z["n"], z["cin"], z["hw"], z["hw"]))
        w = n.const((z["cout"], z["cin"] // z["groups"], z["k"], z["k"]))
        if p.dtype == "int8":
            x, w = n.qdq(x), n.qdq(w)
        layer = n.net.add_convolution_nd(x, z["cout"], (z["k"], z["k"]), trt.Weights(), trt.Weights())
        layer.set_input(1, w)
        layer.stride_nd, layer.padding_nd, layer.num_groups = (z["stride"],) * 2, (z["k"] // 2,) * 2, z["groups"]
        y = layer.get_output(0)
        if p.op == "conv_bias_relu":
            y = n.act(n.ew(y, n.const((1, z["cout"], 1, 1)), "SUM"), "RELU")
        outs.append(y)
    elif p.op in ("chain_fused", "chain_unfused", "gelu", "cast", "sum", "mean", "softmax", "layer_norm"):
        shape = (z["b"], z["s"], z["h"])
        x = n.input("x", shape, trt.DataType.FLOAT if p.op == "cast" else None)
        last = 1 << 2
        if p.op.startswith("chain"):
            y1 = n.ew(x, n.scalar(0.5, x), "PROD")
            y2 = n.ew(y1, n.scalar(1.0, x), "SUM")
            y3 = n.act(y2, "RELU")
            y4 = n.ew(y3, n.scalar(0.25, x), "SUB")
            y5 = n.act(y4, "SIGMOID")
            outs += [y1, y2, y3, y4, y5] if p.op == "chain_unfused" else [y5]  # outputs each: nothing can fuse
        elif p.op == "gelu":
            outs.append(n.act(x, "GELU_ERF"))
        elif p.op == "cast":
            outs.append(n.net.add_cast(x, trt.DataType.HALF).get_output(0))
        elif p.op in ("sum", "mean"):
            op = trt.ReduceOperation.SUM if p.op == "sum" else trt.ReduceOperation.AVG
            outs.append(n.net.add_reduce(x, op, last, False).get_output(0))
        elif p.op == "softmax":
            sm = n.net.add_softmax(x)
            sm.axes = last
            outs.append(sm.get_output(0))
        else:
            outs.append(n.net.add_normalization(x, n.const((1, 1, z["h"])), n.const((1, 1, z["h"])), last).get_output(0))
    elif p.op == "avgpool":
        x = n.input("x", (z["b"], z["c"], z["hw"], z["hw"]))
        outs.append(n.net.add_reduce(x, trt.ReduceOperation.AVG, 0b1100, False).get_output(0))
    elif p.op in ("embedding", "index_rows", "index_cols"):
        t, h = z["b"] * z["s"], z["h"]
        if p.op == "embedding":
            table, ids = n.const((z["vocab"], h)), n.input("ids", (z["b"], z["s"]), ints=z["vocab"])
            outs.append(n.net.add_gather(table, ids, 0).get_output(0))
        else:
            x = n.input("x", (t, h))
            axis, size = (0, t) if p.op == "index_rows" else (1, h)
            outs.append(n.net.add_gather(x, n.input("idx", (size,), ints=size), axis).get_output(0))
    elif p.op in ("softmax_scores", "attention", "attention_unfused"):
        b, hd, q, d = z["b"], z["h"], z["s"], z["d"]
        if p.op == "softmax_scores":
            sm = n.net.add_softmax(n.input("x", (b, hd, q, q)))
            sm.axes = 1 << 3
            outs.append(sm.get_output(0))
        else:
            qq, k, v = (n.input(name, (b, hd, q, d)) for name in "qkv")
            if p.op == "attention":
                attn = n.net.add_attention(qq, k, v, trt.AttentionNormalizationOp.SOFTMAX, False)
                attn.decomposable = True
                attn.name = "attention"  # its layers are named after it: the interpreter finds the helper so
                n.attention[attn.name] = attn
                outs.append(attn.get_output(0))
            else:
                scores = n.net.add_matrix_multiply(qq, M.NONE, k, M.TRANSPOSE).get_output(0)
                sm = n.net.add_softmax(n.ew(scores, n.scalar(d ** -0.5, scores), "PROD"))
                sm.axes = 1 << 3
                outs.append(n.net.add_matrix_multiply(sm.get_output(0), M.NONE, v, M.NONE).get_output(0))
    else:
        raise ValueError(p.op)
    for t in outs:
        n.net.mark_output(t)
    return n


def predict_one(p: Piece, trt, profile) -> tuple[float, str]:
    from types import SimpleNamespace

    from opmap.checking.costmodel import estimate
    n = network(p, trt)
    built = SimpleNamespace(network=n.net, trt=trt, attention=n.attention, layer_map={})
    est = estimate(built, n.inputs, profile)
    rows = [(label, ms) for _, label, ms in est.by_layer if p.count is None or label in p.count]
    return sum(ms for _, ms in rows), " + ".join(label for label, _ in rows)


def predict(measured_path: Path, profile_path: str | None, before: Path | None = None, save: Path | None = None) -> None:
    """Writes bench/device/PIECES.md; ``save``: the predictions as JSON (piece key -> ms), ``before``: such a file from
    the model before a change, shown beside the current prediction."""
    sys.path.insert(0, str(ROOT))
    from opmap.building.backend import import_backend
    from opmap.checking.costmodel import DeviceProfile

    trt = import_backend("tensorrt_rtx")
    data = json.loads(measured_path.read_text())
    profile = DeviceProfile.load(profile_path)
    rows = []
    for p in pieces(data.get("tiny", False)):
        m = dict(data["pieces"].get(f"{p.name} {p.dtype}", {}))
        if m.get("invalid"):  # a measurement known not to be of the kernel named: shown, not counted
            p.note, m["ms"] = f"measurement invalid: {m['invalid']}", None
        t = time.time()
        pred, layers = predict_one(p, trt, profile)
        rows.append({"piece": p, "measured": m.get("ms"), "best": m.get("best"), "variants": m.get("variants", {}),
                     "predicted": pred, "layers": layers, "key": f"{p.name} {p.dtype}"})
        print(f"{p.name} {p.dtype}: predicted {pred:.4f} measured {m.get('ms')} ({time.time() - t:.1f}s)", file=sys.stderr,
              flush=True)
    if save:
        save.write_text(json.dumps({r["key"]: r["predicted"] for r in rows}, indent=0) + "\n")
    old = json.loads(before.read_text()) if before else {}
    for r in rows:
        r["before"] = old.get(r["key"])
    data["path"] = measured_path.resolve().relative_to(ROOT) if measured_path.resolve().is_relative_to(ROOT) else measured_path
    (ROOT / "bench" / "device" / "PIECES.md").write_text(report(rows, data, profile))


NOTES = """**What the model charges** (`opmap/checking/costmodel.py`): each kernel a launch plus the larger of bytes / the
measured bandwidth for its kind and dtype and flops / the measured throughput for its dtype. This check changed five
terms, each because a group of pieces was off by more than 2×: (1) a matrix product or convolution is charged by whole
*waves* of 128×128 output tiles over the SMs (a BERT projection at batch 8 has 48 tiles on 132 SMs and costs one tile's
time, not flops / peak), (2) with fewer tiles than SMs the reduction is split over the idle SMs (split-K, each part at
least 1024 long: ResNet's 512-channel 3×3 at 7×7), (3) a convolution's input channels are padded to 8 (the 3-channel
stem), (4) a gather that streams (whole rows such as an embedding lookup, or columns of a hidden state read from cache)
is charged at the streaming gather rate `row_gather_gbps`, not the random-access rate, and layer norm, softmax and
fused attention have rates of their own (`norm_gbps`, `softmax_gbps`, `attention_tflops_*`), (5) a fused attention layer
costs the cheaper of its fused kernel and its decomposition (Q·Kᵀ, softmax, ·V: fp32 has no fused kernel on RTX).
Depthwise/grouped convolutions are charged at their own measured rate (`dwconv_tflops_*`: cuDNN's depthwise 7×7 runs
at 4–7 TFLOP/s, not the dense rate) and a small reduction (a global pool) at `reduce_launch_ms`; the "before" column
is the same measurements predicted with the profile that lacked those two terms and an int8 convolution rate
(depthwise pieces were 0.14–0.20× there). A gather whose indices each pick one element is charged 4 bytes an element
whatever its dtype (fp16 columns took 0.8–1.0× the fp32 time on the card, not half). Left beyond 2×: the 7×7/2 stem in
bf16 (PyTorch's bf16 stem kernel runs at half its fp16 one's speed).

**int8:** cuBLAS's int8 GEMM (`torch._int_mm`) runs little faster than its fp16 on this card (933 vs 759 TOP/s at
8192³), while a Triton GEMM with the weight K-major, swept over tiles, stages and warps (`bench/device/gemm_sweep.py`,
checked against exact sums) reaches 1,248 TOP/s — 1.64× the fastest fp16 GEMM measured beside it (cuBLAS's; the same
Triton design tuned for fp16 reached 734). The profile's int8 rates are its fp16 matrix rate and cuDNN's fp16
convolution rate times that ratio, PyTorch having no int8 convolution on CUDA. The int8 pieces are timed as the
fastest int8 kernel measured for them (named below and in the kernel column), a convolution at its implicit-GEMM dims
(the gathered operand laid out beforehand). The model is optimistic for them (the ranges below): at served sizes
these kernels reach less of their 8192³ rate in int8 than in fp16. Neither kernel is
TensorRT's; the card's datasheet rate (2× fp16) is not used. bf16 runs where the fp16 kernel would (TensorRT's
kernels for the two are alike; PyTorch's bf16 stem is 2× slower than its fp16 one, which the model does not
reproduce). What the pieces cannot check: which fusions TensorRT
applies to a whole network (`fusion.py`'s rules) and whether its kernels match cuBLAS/cuDNN/SDPA/Triton's."""


def report(rows, data, profile) -> str:
    ratios = [r["predicted"] / r["measured"] for r in rows if r["measured"]]
    def stats(rs):
        rs = sorted(rs) or [float("nan")]
        return (f"median {statistics.median(rs):.2f}, range {rs[0]:.2f}–{rs[-1]:.2f}, "
                f"beyond 2×: {sum(1 for r in rs if r > 2 or r < 0.5)}, beyond 3×: {sum(1 for r in rs if r > 3 or r < 1 / 3)}")
    lines = ["# The cost model's pieces, predicted vs measured", "",
             f"Card: **{data['card']}** (PyTorch {data['torch']}, CUDA {data['cuda']}); profile `{profile.source}` "
             f"({profile.card}). Produced by `bench/device/pieces.py` (its docstring has the method): each piece is one op "
             "at a served size, measured as GPU time of CUDA-graph replays of the PyTorch/CUDA kernel standing in for "
             "TensorRT's (the fastest variant counts), and predicted by `costmodel.estimate` on the same op built as a "
             "tensorrt_rtx network on the CPU (the layers counted are named). Nothing here ran a TensorRT engine. "
             f"Raw timings (every variant): `{data['path']}`; redo with `python bench/device/pieces.py measure OUT` on the "
             f"card (about 30 s) and `python bench/device/pieces.py predict OUT/pieces.json PROFILE` here (about a minute).", "",
             f"**All {len(ratios)} measured pieces: {stats(ratios)}** (ratio = predicted / measured; beyond k× means "
             "ratio > k or < 1/k)."]
    missing = sorted({r["piece"].needs for r in rows if r["piece"].needs and r["piece"].needs not in profile.micro})
    if missing:
        have = [r["predicted"] / r["measured"] for r in rows if r["measured"] and r["piece"].needs not in missing]
        lines += ["", f"Without the pieces whose term reads a number this profile lacks ({', '.join(missing)}: "
                      f"a stand-in is charged, see below): {len(have)} pieces, {stats(have)}."]
    lines += ["", NOTES]
    by = lambda g, dt: [r["predicted"] / r["measured"] for r in rows if r["measured"] and r["piece"].group == g  # noqa: E731
                        and r["piece"].dtype == dt]
    if by("matrix product", "int8"):
        kernels = sorted({v.split(" at its")[0].rsplit(" ", 1)[0] if v.startswith("tuned") else v.split(" at its")[0]
                          for key, row in data["pieces"].items() if key.endswith(" int8") for v in row["variants"]})
        lines += ["", f"int8 kernels timed: {', '.join(kernels)}. "
                      f"int8 matrix products: {stats(by('matrix product', 'int8'))}; int8 convolutions: "
                      f"{stats(by('convolution', 'int8'))}; fp16 matrix products, for comparison: "
                      f"{stats(by('matrix product', 'fp16'))}."]
    outliers = [r for r in rows if r["measured"] and not 0.5 <= r["predicted"] / r["measured"] <= 2]
    if outliers:
        kinds = sorted({r["piece"].name.split(" b")[0] if r["piece"].group == "convolution" else r["piece"].name
                        for r in outliers})
        lines += ["", f"Beyond 2× ({len(outliers)}): " + "; ".join(kinds) + "."]
    prior = [r["before"] / r["measured"] for r in rows if r["measured"] and r.get("before")]
    if prior:
        lines += ["", f"Before (the same measurements, predicted as the \"before\" column says): {stats(prior)}."]
    lines += ["", "| group | pieces | ratio |" + (" before |" if prior else ""),
              "|---|---:|---|" + ("---|" if prior else "")]
    groups: dict[str, list] = {}
    for r in rows:
        if r["measured"]:
            groups.setdefault(r["piece"].group, []).append(r)
    for g, rs in groups.items():
        old = [r["before"] / r["measured"] for r in rs if r.get("before")]
        lines.append(f"| {g} | {len(rs)} | {stats([r['predicted'] / r['measured'] for r in rs])} |"
                     + (f" {stats(old)} |" if prior else ""))
    lines += ["", "| piece | dtype | measured ms | kernel (fastest) | predicted ms | layers charged | predicted / measured |"
              + (" before |" if prior else ""), "|---|---|---:|---|---:|---|---:|" + ("---:|" if prior else "")]
    for r in rows:
        p = r["piece"]
        m = f"{r['measured']:.4f}" if r["measured"] else (p.note if p.note.startswith("measurement invalid") else
                                                           f"not measured{': ' + p.note if p.note else ''}")
        ratio = f"{r['predicted'] / r['measured']:.2f}" if r["measured"] else "-"
        old = f" {r['before'] / r['measured']:.2f} |" if r["measured"] and r.get("before") else (" - |" if prior else "")
        lines.append(f"| {p.name} | {p.dtype} | {m} | {r['best'] or '-'} | {r['predicted']:.4f} | {r['layers']} | {ratio} |{old}")
    if data.get("errors"):
        lines += ["", "Variants that had no kernel (their piece counts its other variants):", ""]
        lines += [f"- {e.splitlines()[0][:200]}" for e in data["errors"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("measure", "predict", "merge"):
        sys.exit(__doc__)
    if sys.argv[1] == "merge":  # pieces.py merge FULL.json PART.json: PART's rows (and card check) replace FULL's
        merge(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "measure":
        measure(Path(sys.argv[2]), "--tiny" in sys.argv,
                next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--dtype=")), None))
    else:
        opt = {a.split("=", 1)[0]: Path(a.split("=", 1)[1]) for a in sys.argv[3:] if a.startswith("--")}
        rest = [a for a in sys.argv[3:] if not a.startswith("--")]
        predict(Path(sys.argv[2]), rest[0] if rest else None, opt.get("--before"), opt.get("--save"))
