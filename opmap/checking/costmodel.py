"""An estimated latency for a network, from a device profile measured on a real GPU.

Nothing here can run an engine, so latency is *estimated*, and labelled so wherever it appears. The model walks the
network as the reference interpreter executes it (so every tensor has its concrete size and dtype) and charges each
kernel a launch plus the larger of its memory time (bytes in and out, each tensor at its own element size, over the
bandwidth measured for that kind of work and dtype) and its arithmetic time (matrix products and convolutions over
the throughput measured for the dtype they compute in: TF32 for fp32, fp16, bf16, int8). A product kernel is charged by
whole waves of output tiles over the SMs (split-K where its tiles leave SMs idle); gathers that stream, layer norm,
softmax, fused attention, depthwise convolutions and small reductions have rates of their own where the profile
measured them. ``bench/device/PIECES.md`` has each term predicted against the card's own kernels at served sizes.

Layers TensorRT does not run as kernels of their own are not charged as such (``fusion.py`` states the rules:
constant folding, Q/DQ into the matrix kernel, pointwise epilogues, reshapes as views).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from opmap.building.fusion import MATRIX, Fusion
from opmap.checking.interpreter import run_network

DEFAULT_PROFILE = "device_h200.json"
FREE = {"CONSTANT", "SHAPE", "IDENTITY", "ASSERTION", "TRIP_LIMIT", "ITERATOR", "RECURRENCE", "ATTENTION_INPUT"}
BANDWIDTH_KEY = {
    "GATHER": "gather_gbps", "SCATTER": "gather_gbps", "NON_ZERO": "gather_gbps", "ROW_GATHER": "row_gather_gbps",
    "REDUCE": "reduce_gbps", "SOFTMAX": "softmax_gbps", "NORMALIZATION": "norm_gbps", "POOLING": "reduce_gbps",
    "CUMULATIVE": "cumsum_gbps", "TOPK": "topk64_gbps",
}
# where a profile lacks a kind's own rate (profiles measured before it was), the nearest measured rate stands in: a
# reduction's for layer norm and softmax, a streaming pass's for a gather that streams (None: elementwise per dtype)
BANDWIDTH_FALLBACK = {"softmax_gbps": "reduce_gbps", "norm_gbps": "reduce_gbps", "row_gather_gbps": None}
# a tensor-core product kernel computes its output in tiles of TILE x TILE, one tile per SM at a time: a product whose
# tiles do not fill the last wave of SMs (or whose sides are not multiples of TILE) pays for the whole wave. A product
# with fewer tiles than SMs splits its reduction over the idle SMs (split-K), each part at least SPLIT_K long; a
# convolution's input channels are padded to a multiple of CHANNEL_PAD (the tensor cores' vector of channels).
TILE = 128
SPLIT_K = 1024
CHANNEL_PAD = 8
ROW_BYTES = 128  # a gather whose every index selects at least this many contiguous bytes reads whole rows (coalesced)
LOCAL_BYTES = 64 * 1024  # ... and one whose gathered axis spans at most this many bytes reads from cache: both stream
REDUCTIONS = {"REDUCE", "SOFTMAX", "NORMALIZATION", "POOLING"}
DTYPE_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8"}
# where a profile lacks a dtype's number, the nearest measured one stands in (never an invented ratio)
FALLBACK = {"int8": "fp16", "bf16": "fp16", "fp16": "fp32", "fp32": None}


@dataclass
class DeviceProfile:
    card: str
    micro: dict[str, float]
    source: str
    sm_count: int | None = None  # streaming multiprocessors, for the wave quantization of product kernels

    @classmethod
    def load(cls, path: str | None = None) -> "DeviceProfile":
        if path is None:
            text = resources.files("opmap.data").joinpath(DEFAULT_PROFILE).read_text()
            source = f"opmap/data/{DEFAULT_PROFILE}"
        else:
            text = open(path).read()
            source = path
        data = json.loads(text)
        return cls(card=data["card"], micro=data["micro"], source=source, sm_count=data.get("sm_count"))

    @property
    def launch_ms(self) -> float:
        """One kernel's fixed cost: back to back on the GPU (CUDA-graph replay, as an engine enqueues its kernels)
        where the profile measured it, else PyTorch's eager launch rate (older profiles)."""
        return self.micro.get("graph_launch_ms", self.micro["launch_ms"])

    def _per_dtype(self, prefix: str, dtype: torch.dtype) -> float:
        name = DTYPE_NAME.get(dtype, "fp32")
        while name is not None:
            for key in (f"{prefix}_fp32_tf32", f"{prefix}_fp32") if name == "fp32" else (f"{prefix}_{name}",):
                if key in self.micro:  # products and convolutions name fp32 as TF32 (attention's fp32 is fp32)
                    return self.micro[key]
            name = FALLBACK[name]
        raise KeyError(f"{prefix}: the device profile has no fp32 number")

    def throughput(self, kind: str, dtype: torch.dtype) -> float:
        """TFLOP/s (TOP/s for int8) of a matrix kernel; convolutions and fused attention have their own numbers where
        measured. TensorRT runs fp32 products in TF32 unless told otherwise."""
        if kind == "GROUPED_CONVOLUTION":  # depthwise/grouped: not a GEMM; its own measured rate where there is one
            return self._per_dtype("dwconv_tflops", dtype) if "dwconv_tflops_fp32" in self.micro else \
                self.throughput("CONVOLUTION", dtype)
        if kind in ("CONVOLUTION", "DECONVOLUTION") and "conv_tflops_fp32_tf32" in self.micro:
            return self._per_dtype("conv_tflops", dtype)
        if kind == "ATTENTION_OUTPUT" and "attention_tflops_fp32" in self.micro:
            return self._per_dtype("attention_tflops", dtype)
        return self._per_dtype("matmul_tflops", dtype)

    def matmul_tflops(self, dtype: torch.dtype) -> float:
        return self.throughput("MATRIX", dtype)

    def bandwidth(self, kind: str, dtype: torch.dtype) -> float:
        key = BANDWIDTH_KEY.get(kind)
        if key in self.micro:
            return self.micro[key]
        key = BANDWIDTH_FALLBACK.get(key, key)
        return self.micro[key] if key else self._per_dtype("elementwise_gbps", dtype)

    def predict(self, kind: str, flops: float, nbytes: float, dtype: torch.dtype = torch.float32,
                gemm: tuple[int, int] | None = None) -> float:
        """Milliseconds for one kernel: a launch plus the larger of memory time and arithmetic time. ``gemm`` (output
        tiles, reduction length) charges a product kernel by whole waves of tiles over the SMs."""
        rate = self.throughput(kind, dtype) * 1e9
        compute = flops / rate if flops else 0.0
        if gemm is not None and self.sm_count:
            tiles, k = gemm
            split = max(1, min(self.sm_count // max(tiles, 1), k // SPLIT_K))
            wave = 2.0 * TILE * TILE * math.ceil(k / split) / (rate / self.sm_count)
            compute = max(compute, math.ceil(tiles * split / self.sm_count) * wave)
        launch = self.launch_ms
        if kind in REDUCTIONS:  # a reduction kernel's fixed cost (its last block combines the partial results)
            launch = max(launch, self.micro.get("reduce_launch_ms", 0.0))
        return launch + max(self.memory_ms(kind, nbytes, dtype), compute)

    def memory_ms(self, kind: str, nbytes: float, dtype: torch.dtype) -> float:
        return nbytes / (self.bandwidth(kind, dtype) * 1e6)


@dataclass
class Estimate:
    ms: float
    kernels: int
    fused: int = 0  # layers charged as part of another kernel (no launch, no round-trip of their input)
    by_layer: list[tuple[str, str, float]] = field(default_factory=list)  # (layer, kind, ms)


def _nbytes(tensors) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
        elif isinstance(t, list):
            total += _nbytes(t)
    return total


def _flops(layer: Any, kind: str, ins, outs) -> float:
    """Multiply-adds (x2) of the layers whose cost is arithmetic; 0 for the rest."""
    out = outs[0] if outs and isinstance(outs[0], torch.Tensor) else None
    if out is None:
        return 0.0
    if kind == "MATRIX_MULTIPLY":
        a = ins[0]
        k = a.shape[-1] if a.dim() else 1
        return 2.0 * out.numel() * k
    if kind in ("CONVOLUTION", "DECONVOLUTION"):  # the layer was downcast by the interpreter: its attributes read back
        spatial = out.dim() - 2
        window = math.prod(list(layer.kernel_size_nd)[:spatial])
        cin = ins[0].shape[1]
        return 2.0 * out.numel() * (cin // layer.num_groups) * window
    if kind == "ATTENTION_OUTPUT":
        q, k = ins[0][0], ins[0][1]
        return 4.0 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
    if kind == "EINSUM":
        return 2.0 * out.numel() * max((t.shape[-1] for t in ins if isinstance(t, torch.Tensor) and t.dim()), default=1)
    return 0.0


def _gemm(layer: Any, kind: str, ins, outs, flops: float) -> tuple[int, int] | None:
    """(output tiles, reduction length) of a product kernel: a matrix product's batch x M x N output, a convolution's
    implicit GEMM (M = batch x output pixels, N = output channels, K = input channels x window); None for the rest
    (grouped convolutions are not tensor-core GEMMs)."""
    out = outs[0] if outs and isinstance(outs[0], torch.Tensor) else None
    if out is None or not flops or not out.numel():
        return None
    k = round(flops / (2.0 * out.numel()))
    if kind == "MATRIX_MULTIPLY" and out.dim() >= 2:
        batch = math.prod(out.shape[:-2])
        return batch * math.ceil(out.shape[-2] / TILE) * math.ceil(out.shape[-1] / TILE), k
    if kind == "CONVOLUTION" and layer.num_groups == 1 and out.dim() >= 3:
        pixels = out.shape[0] * math.prod(out.shape[2:])
        cin = ins[0].shape[1]
        k = k // cin * (math.ceil(cin / CHANNEL_PAD) * CHANNEL_PAD)  # the window times the padded channels
        return math.ceil(pixels / TILE) * math.ceil(out.shape[1] / TILE), k
    return None


def _decomposed_attention_ms(profile: DeviceProfile, q, k, v, dtype: torch.dtype) -> float:
    """Attention as three kernels: Q·Kᵀ (scores written out), softmax over the scores, probabilities·V."""
    heads, sq, sk, d = math.prod(q.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1]
    size = q.element_size()
    scores = heads * sq * sk * size
    qk = profile.predict("MATRIX_MULTIPLY", 2.0 * heads * sq * sk * d, q.numel() * size + k.numel() * size + scores, dtype,
                         (heads * math.ceil(sq / TILE) * math.ceil(sk / TILE), d))
    softmax = profile.predict("SOFTMAX", 0, 2 * scores, dtype)
    pv = profile.predict("MATRIX_MULTIPLY", 2.0 * heads * sq * sk * d, scores + v.numel() * size + q.numel() * size, dtype,
                         (heads * math.ceil(sq / TILE) * math.ceil(d / TILE), sk))
    return qk + softmax + pv


def _row_gather(layer: Any, ins) -> bool:
    """A default-mode gather that streams: each index selects a contiguous slice of at least ROW_BYTES (an embedding
    row), or the gathered axis spans at most LOCAL_BYTES (columns of a hidden state: each row is read from cache).
    The rest (single elements scattered over a large tensor) pay a random access each."""
    data = ins[0] if ins and isinstance(ins[0], torch.Tensor) else None
    if data is None or layer.mode != layer.mode.__class__.DEFAULT or layer.num_elementwise_dims:
        return False
    slice_bytes = math.prod(data.shape[layer.axis + 1:]) * data.element_size()
    return slice_bytes >= ROW_BYTES or slice_bytes * data.shape[layer.axis] <= LOCAL_BYTES


def _narrow_element_gather(layer: Any, ins) -> float:
    """A gather whose indices each select one element moves elements, not bytes: on the card a gather of fp16 columns
    took 0.8-1.0x the time of the same gather in fp32, not half (bench/device/PIECES.md, index_select columns). Such a
    gather of elements narrower than 4 bytes is charged as if they were 4 bytes wide; anything else as it is."""
    data = ins[0] if ins and isinstance(ins[0], torch.Tensor) else None
    if data is None or layer.mode != layer.mode.__class__.DEFAULT or math.prod(data.shape[layer.axis + 1:]) != 1:
        return 1.0
    return max(1.0, 4 / data.element_size())


class _HalfProductsInFloat(TorchDispatchMode):
    """While estimating, fp16/bf16 matrix products and convolutions run in fp32 and are cast back: the estimate needs
    each tensor's size and dtype, not the last bits of its values, and PyTorch's CPU half-precision products are
    several times slower than its fp32 ones (served sizes would take minutes)."""

    HEAVY = {"mm", "bmm", "addmm", "baddbmm", "convolution"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        low = next((a.dtype for a in args if isinstance(a, torch.Tensor) and a.dtype in (torch.float16, torch.bfloat16)), None)
        if low is None or func.overloadpacket.__name__ not in self.HEAVY:
            return func(*args, **kwargs)
        up = [a.float() if isinstance(a, torch.Tensor) and a.dtype == low else a for a in args]
        return func(*up, **kwargs).to(low)


def estimate(built: Any, inputs: dict[str, torch.Tensor], profile: DeviceProfile, seed: int = 0,
             strategy: str | None = None) -> Estimate:
    """Estimated engine latency: every kernel the network becomes, charged by the profile — or, with ``strategy``,
    only the layers that strategy emitted (directly or through an expansion)."""
    result = Estimate(ms=0.0, kernels=0)
    fusion = Fusion(built.network)
    sizes: dict[str, int] = {}  # tensor name -> bytes, for reading a fused DQ's int8 input in its consumer's place

    def observe(layer, ins, outs):
        kind = fusion.kind.get(layer.name, layer.type.name)
        for j in range(layer.num_outputs):
            sizes[layer.get_output(j).name] = _nbytes(outs[j:j + 1])
        if kind in FREE or fusion.free(layer):
            return
        if strategy is not None:
            owner = built.layer_map.get(layer.name.removesuffix("_AttentionOutput"), {})
            if strategy not in (owner.get("strategy"), owner.get("via")):
                return
        dtype = next((t.dtype for t in outs if isinstance(t, torch.Tensor)), torch.float32)
        main = fusion.epilogue_input(layer, ins, outs)
        reads = [sizes.get(name, _nbytes([t])) if name else _nbytes([t]) for name, t in zip(fusion.read_names(layer), ins)]
        if main is not None:  # computed in its producer's kernel: only what it adds to that kernel's memory traffic
            extra = sum(reads[:main] + reads[main + 1:]) + max(0, _nbytes(outs) - _nbytes(ins[main:main + 1]))
            ms, label = profile.memory_ms(kind, extra, dtype), f"{kind} (fused)"
            result.fused += 1
        else:
            charged, out_bytes = kind, _nbytes(outs)
            if kind == "GATHER" and reads:  # a gather reads the rows it selects, not its whole table
                reads[0] = min(reads[0], out_bytes)
                charged = "ROW_GATHER" if _row_gather(layer, ins) else kind
                widen = _narrow_element_gather(layer, ins)
                reads[0], out_bytes = reads[0] * widen, out_bytes * widen
            in_bytes = sum(reads)
            if kind in MATRIX:
                dtype = fusion.compute_dtype(layer, ins, dtype)
            flops = _flops(layer, kind, ins, outs)
            if kind == "CONVOLUTION" and layer.num_groups > 1:
                charged = "GROUPED_CONVOLUTION"
            ms = profile.predict(charged, flops, in_bytes + out_bytes, dtype, _gemm(layer, kind, ins, outs, flops))
            if kind == "ATTENTION_OUTPUT":  # TensorRT may decompose it where that is faster (fp32 has no fused kernel)
                ms = min(ms, _decomposed_attention_ms(profile, *ins[0][:3], dtype))
            label = kind
            result.kernels += 1
        result.ms += ms
        result.by_layer.append((layer.name, label, ms))

    torch.manual_seed(seed)
    with _HalfProductsInFloat():
        run_network(built.network, built.trt, inputs, built.attention, observer=observe)
    return result
