"""Which layers of a network TensorRT will not run as kernels of their own, for the cost model.

TensorRT's builder fuses layers before it picks kernels (its *Layer Fusion Catalog* lists the patterns). The cost
model follows the part of that catalog that decides whether a layer costs a launch and a memory round-trip:

* **constant folding** — a layer whose every input derives from constants (a weight's cast, its Q/DQ pair) is
  computed at build time: free;
* **Q/DQ into the matrix kernel** — a Dequantize whose consumers are all convolutions or matrix products is fused
  into them: free, and the consumer reads the INT8 tensor (1 byte an element) and computes in INT8 when every
  operand arrives that way;
* **pointwise epilogues** — a pointwise layer (elementwise, activation, unary, scale, cast, Q/DQ, select) whose input
  is the single-consumer output of a convolution, matrix product, reduction, normalization or another pointwise layer
  runs in that producer's kernel: no launch and no round-trip of that input; only its other inputs (a residual, a
  bias) and any growth of its output are charged;
* **reshapes are views** — a Shuffle that only reshapes (no transposition) moves no data, and a pointwise layer
  after it still fuses into the producer behind it.

Not modelled: horizontal merges of independent layers, fusions that need a specific kernel (multi-head attention
patterns, GELU/LayerNorm pattern matching beyond the pointwise rule), and when TensorRT declines a fusion for lack of
an implementation. The model therefore errs low where a fusion is declined and high where a pattern fusion applies.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

MATRIX = {"MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION", "EINSUM", "ATTENTION_OUTPUT"}
POINTWISE = {"ELEMENTWISE", "ACTIVATION", "UNARY", "SCALE", "CAST", "QUANTIZE", "DEQUANTIZE", "PARAMETRIC_RELU", "SELECT"}
EPILOGUE_HOSTS = {"MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION", "REDUCE", "NORMALIZATION"} | POINTWISE
DQ_CONSUMERS = {"MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION"}


def _names(layer: Any, outputs: bool = False) -> list[str | None]:
    n = layer.num_outputs if outputs else layer.num_inputs
    get = layer.get_output if outputs else layer.get_input
    return [t.name if t is not None else None for t in (get(j) for j in range(n))]


class Fusion:
    """The fusion decisions for one network, read off its structure once."""

    def __init__(self, network: Any) -> None:
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[str]] = {}
        # a layer's kind, read before the interpreter downcasts it (an IActivationLayer's .type is then its activation)
        self.kind = {layer.name: layer.type.name for layer in layers}
        for layer in layers:
            for name in _names(layer, outputs=True):
                self.producer[name] = layer
            for name in _names(layer):
                if name is not None:
                    self.consumers.setdefault(name, []).append(layer.type.name)
        self.outputs = {network.get_output(i).name for i in range(network.num_outputs)}
        self.folded = self._constant_derived(layers)
        self.views: set[str] = set()  # pure reshapes, found as the walk reaches them
        # a fused Dequantize's output name -> the quantized tensor its consumers read instead
        self.read_from = {dq.get_output(0).name: dq.get_input(0).name for dq in layers
                          if dq.type.name == "DEQUANTIZE" and self._only_matrix_consumers(dq.get_output(0).name)}

    def _constant_derived(self, layers: list[Any]) -> set[str]:
        constant: set[str] = set()
        folded: set[str] = set()
        for layer in layers:  # layers are stored in the order they were added, inputs before their consumers
            kind, ins = layer.type.name, _names(layer)
            if kind == "CONSTANT" or (ins and kind not in MATRIX and all(n is not None and n in constant for n in ins)):
                constant.update(_names(layer, outputs=True))
                if kind != "CONSTANT":
                    folded.add(layer.name)
        return folded

    def _only_matrix_consumers(self, name: str) -> bool:
        kinds = self.consumers.get(name, [])
        return bool(kinds) and name not in self.outputs and all(k in DQ_CONSUMERS for k in kinds)

    def free(self, layer: Any) -> bool:
        """Costs nothing at run time: folded at build time, fused into its consumer's prologue, or a view."""
        if layer.name in self.folded:
            return True
        kind = self.kind.get(layer.name)
        if kind == "DEQUANTIZE" and layer.get_output(0).name in self.read_from:
            return True
        if kind == "SHUFFLE":  # the interpreter hands over the downcast layer: its transposes read back
            identity = lambda p, n: list(p)[:n] == list(range(n))  # noqa: E731
            rank = len(layer.get_output(0).shape)
            if identity(layer.first_transpose, len(layer.get_input(0).shape)) and identity(layer.second_transpose, rank):
                self.views.add(layer.name)  # seen before its consumers: the walk is topological
                return True
        return False

    def read_names(self, layer: Any) -> list[str | None]:
        """The tensor each input is actually read from: a fused Dequantize's input in place of its output."""
        return [self.read_from.get(n, n) if n is not None else None for n in _names(layer)]

    def epilogue_input(self, layer: Any, ins: list, outs: list) -> int | None:
        """The input through which this pointwise layer runs in its producer's kernel, or None (a kernel of its own)."""
        if self.kind.get(layer.name) not in POINTWISE or not outs or not isinstance(outs[0], torch.Tensor):
            return None
        for j, name in enumerate(_names(layer)):
            src = self.producer.get(name) if name is not None else None
            while src is not None and src.name in self.views and len(self.consumers.get(name, [])) == 1:
                name = src.get_input(0).name  # a reshape moves no data: look through it to what produced the data
                src = self.producer.get(name)
            if (src is None or src.name in self.folded or self.kind[src.name] not in EPILOGUE_HOSTS or name in self.outputs
                    or len(self.consumers.get(name, [])) != 1):
                continue
            if isinstance(ins[j], torch.Tensor) and ins[j].numel() == outs[0].numel():
                return j
        return None

    def compute_dtype(self, layer: Any, ins: list, dtype: torch.dtype) -> torch.dtype:
        """INT8 when every operand of a matrix kernel arrives through a fused Dequantize; else its output's dtype."""
        names = [n for n in _names(layer)[:2] if n is not None]
        if names and all(n in self.read_from for n in names):
            return torch.int8
        return dtype
