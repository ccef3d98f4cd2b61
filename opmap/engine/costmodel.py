"""An estimated latency for a network, from a device profile measured on a real GPU.

Nothing here can run an engine, so latency is *estimated*, and labelled so wherever it appears. The model walks the
network as the reference interpreter executes it (so every tensor has its concrete size) and charges each layer
a launch plus the larger of its memory time (bytes in and out over the bandwidth measured for that kind of work)
and its arithmetic time (matrix products and convolutions over the measured throughput for the dtype). It does not
model TensorRT's fusion of pointwise chains, so for chains of small layers it errs high.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

from opmap.engine.interpreter import run_network

FREE = {"CONSTANT", "SHAPE", "IDENTITY", "ASSERTION", "TRIP_LIMIT", "ITERATOR", "RECURRENCE", "ATTENTION_INPUT"}
BANDWIDTH_KEY = {
    "GATHER": "gather_gbps", "SCATTER": "gather_gbps", "NON_ZERO": "gather_gbps",
    "REDUCE": "reduce_gbps", "SOFTMAX": "reduce_gbps", "NORMALIZATION": "reduce_gbps", "POOLING": "reduce_gbps",
    "CUMULATIVE": "cumsum_gbps", "TOPK": "topk64_gbps",
}
MATRIX = {"MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION", "EINSUM", "ATTENTION_OUTPUT"}


@dataclass
class DeviceProfile:
    card: str
    micro: dict[str, float]
    source: str

    @classmethod
    def load(cls, path: str | None = None) -> "DeviceProfile":
        if path is None:
            text = resources.files("opmap.data").joinpath("device_h100.json").read_text()
            source = "opmap/data/device_h100.json"
        else:
            text = open(path).read()
            source = path
        data = json.loads(text)
        return cls(card=data["card"], micro=data["micro"], source=source)

    def matmul_tflops(self, dtype: torch.dtype) -> float:
        if dtype == torch.float16:
            return self.micro["matmul_tflops_fp16"]
        if dtype == torch.bfloat16:
            return self.micro["matmul_tflops_bf16"]
        return self.micro["matmul_tflops_fp32_tf32"]  # TensorRT runs fp32 products in TF32 unless told otherwise

    def bandwidth(self, kind: str, dtype: torch.dtype) -> float:
        key = BANDWIDTH_KEY.get(kind)
        if key:
            return self.micro[key]
        return self.micro["elementwise_gbps_fp16" if dtype in (torch.float16, torch.bfloat16) else "elementwise_gbps_fp32"]

    def predict(self, kind: str, flops: float, nbytes: float, dtype: torch.dtype = torch.float32) -> float:
        """Milliseconds for one kernel: a launch plus the larger of memory time and arithmetic time."""
        memory = nbytes / (self.bandwidth(kind, dtype) * 1e6)
        compute = flops / (self.matmul_tflops(dtype) * 1e9) if flops else 0.0
        return self.micro["launch_ms"] + max(memory, compute)


@dataclass
class Estimate:
    ms: float
    kernels: int
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


def estimate(built: Any, inputs: dict[str, torch.Tensor], profile: DeviceProfile, seed: int = 0,
             strategy: str | None = None) -> Estimate:
    """Estimated engine latency: every layer the interpreter executes, charged by the profile — or, with
    ``strategy``, only the layers that strategy emitted (directly or through an expansion)."""
    result = Estimate(ms=0.0, kernels=0)

    def observe(layer, ins, outs):
        kind = layer.type.name
        if kind in FREE:
            return
        if strategy is not None:
            owner = built.layer_map.get(layer.name.removesuffix("_AttentionOutput"), {})
            if strategy not in (owner.get("strategy"), owner.get("via")):
                return
        dtype = next((t.dtype for t in outs if isinstance(t, torch.Tensor)), torch.float32)
        ms = profile.predict(kind if kind not in MATRIX else "MATRIX", _flops(layer, kind, ins, outs), _nbytes(ins) + _nbytes(outs), dtype)
        result.ms += ms
        result.kernels += 1
        result.by_layer.append((layer.name, kind, ms))

    torch.manual_seed(seed)
    run_network(built.network, built.trt, inputs, built.attention, observer=observe)
    return result
