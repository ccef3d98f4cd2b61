"""An estimated latency for a network, from a device profile measured on a real GPU.

Nothing here can run an engine, so latency is *estimated*, and labelled so wherever it appears. The model walks the
network as the reference interpreter executes it (so every tensor has its concrete size and dtype) and charges each
kernel a launch plus the larger of its memory time (bytes in and out, each tensor at its own element size, over the
bandwidth measured for that kind of work and dtype) and its arithmetic time (matrix products and convolutions over
the throughput measured for the dtype they compute in: TF32 for fp32, fp16, bf16, int8).

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
    "GATHER": "gather_gbps", "SCATTER": "gather_gbps", "NON_ZERO": "gather_gbps",
    "REDUCE": "reduce_gbps", "SOFTMAX": "reduce_gbps", "NORMALIZATION": "reduce_gbps", "POOLING": "reduce_gbps",
    "CUMULATIVE": "cumsum_gbps", "TOPK": "topk64_gbps",
}
DTYPE_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8"}
# where a profile lacks a dtype's number, the nearest measured one stands in (never an invented ratio)
FALLBACK = {"int8": "fp16", "bf16": "fp16", "fp16": "fp32", "fp32": None}


@dataclass
class DeviceProfile:
    card: str
    micro: dict[str, float]
    source: str

    @classmethod
    def load(cls, path: str | None = None) -> "DeviceProfile":
        if path is None:
            text = resources.files("opmap.data").joinpath(DEFAULT_PROFILE).read_text()
            source = f"opmap/data/{DEFAULT_PROFILE}"
        else:
            text = open(path).read()
            source = path
        data = json.loads(text)
        return cls(card=data["card"], micro=data["micro"], source=source)

    @property
    def launch_ms(self) -> float:
        """One kernel's fixed cost: back to back on the GPU (CUDA-graph replay, as an engine enqueues its kernels)
        where the profile measured it, else PyTorch's eager launch rate (older profiles)."""
        return self.micro.get("graph_launch_ms", self.micro["launch_ms"])

    def _per_dtype(self, prefix: str, dtype: torch.dtype) -> float:
        name = DTYPE_NAME.get(dtype, "fp32")
        while name is not None:
            key = f"{prefix}_{'fp32_tf32' if name == 'fp32' and 'tflops' in prefix else name}"
            if key in self.micro:
                return self.micro[key]
            name = FALLBACK[name]
        raise KeyError(f"{prefix}: the device profile has no fp32 number")

    def throughput(self, kind: str, dtype: torch.dtype) -> float:
        """TFLOP/s (TOP/s for int8) of a matrix kernel; convolutions have their own numbers where measured.
        TensorRT runs fp32 products in TF32 unless told otherwise."""
        if kind in ("CONVOLUTION", "DECONVOLUTION") and "conv_tflops_fp32_tf32" in self.micro:
            return self._per_dtype("conv_tflops", dtype)
        return self._per_dtype("matmul_tflops", dtype)

    def matmul_tflops(self, dtype: torch.dtype) -> float:
        return self.throughput("MATRIX", dtype)

    def bandwidth(self, kind: str, dtype: torch.dtype) -> float:
        key = BANDWIDTH_KEY.get(kind)
        if key:
            return self.micro[key]
        return self._per_dtype("elementwise_gbps", dtype)

    def predict(self, kind: str, flops: float, nbytes: float, dtype: torch.dtype = torch.float32) -> float:
        """Milliseconds for one kernel: a launch plus the larger of memory time and arithmetic time."""
        compute = flops / (self.throughput(kind, dtype) * 1e9) if flops else 0.0
        return self.launch_ms + max(self.memory_ms(kind, nbytes, dtype), compute)

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
            if kind == "GATHER" and reads:  # a gather reads the rows it selects, not its whole table
                reads[0] = min(reads[0], _nbytes(outs))
            in_bytes = sum(reads)
            if kind in MATRIX:
                dtype = fusion.compute_dtype(layer, ins, dtype)
            ms = profile.predict(kind, _flops(layer, kind, ins, outs), in_bytes + _nbytes(outs), dtype)
            label = kind
            result.kernels += 1
        result.ms += ms
        result.by_layer.append((layer.name, label, ms))

    torch.manual_seed(seed)
    with _HalfProductsInFloat():
        run_network(built.network, built.trt, inputs, built.attention, observer=observe)
    return result
