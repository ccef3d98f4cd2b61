"""Which layers of a network TensorRT will not run as kernels of their own, for the cost model.

TensorRT's builder fuses layers before it picks kernels (its *Layer Fusion Catalog* lists the patterns). The cost
model follows the part of that catalog that decides whether a layer costs a launch and a memory round-trip:

* **constant folding** — a layer whose every input derives from constants (a weight's cast, its Q/DQ pair) is
  computed at build time: free; likewise **shape arithmetic**: an integer layer (elementwise, gather, concatenation,
  slice, ...) whose inputs derive only from Shape layers and constants computes a shape tensor, which TensorRT
  evaluates on the host at shape inference — no kernel (a Fill of a run-time size is not such a layer: it writes data);
* **Q/DQ into their neighbours** (explicit quantization) — a Dequantize whose consumers are all convolutions,
  matrix products or pointwise layers is fused into them: free, and the consumer reads the INT8 tensor (1 byte an
  element); a matrix kernel computes in INT8 when both operands come through a Dequantize (TensorRT propagates a DQ
  across reshapes, so through views; a weight's Q/DQ is folded into its INT8 constant). A Quantize is a pointwise
  epilogue like any other (below), with TensorRT's one exception: a convolution's or product's epilogue that adds a
  full-size float tensor (a residual not dequantized from INT8) makes the fused kernel's output float, so a Quantize
  after it runs as a kernel of its own. DQ -> pooling -> Q is a quantized pooling: it reads INT8, its Q is free
  (its output is still charged at the pooling's float width: conservative);
* **pointwise epilogues** — a pointwise layer (elementwise, activation, unary, scale, cast, Q/DQ, select) whose input
  is the single-consumer output of a convolution, matrix product, reduction, normalization or another pointwise layer
  runs in that producer's kernel: no launch and no round-trip of that input; only its other inputs (a residual, a
  bias, each at the size it is read: INT8 through a fused Dequantize) and any growth of its output are charged;
* **dead layers** — a layer no network output depends on is removed by the builder: free;
* **reshapes are views** — a Shuffle that only reshapes (no transposition) moves no data, and a pointwise layer
  after it still fuses into the producer behind it.

Not modelled: horizontal merges of independent layers, fusions that need a specific kernel (multi-head attention
patterns, GELU/LayerNorm pattern matching beyond the pointwise rule), and when TensorRT declines a fusion for lack of
an implementation. The model therefore errs low where a fusion is declined and high where a pattern fusion applies.
"""

from __future__ import annotations

from typing import Any

import torch

MATRIX = {"MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION", "EINSUM", "ATTENTION_OUTPUT"}
POINTWISE = {"ELEMENTWISE", "ACTIVATION", "UNARY", "SCALE", "CAST", "QUANTIZE", "DEQUANTIZE", "PARAMETRIC_RELU", "SELECT"}
EPILOGUE_HOSTS = {"MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION", "REDUCE", "NORMALIZATION"} | POINTWISE
DQ_CONSUMERS = {"MATRIX_MULTIPLY", "CONVOLUTION", "DECONVOLUTION"}
# layers that compute shape tensors from input shapes on the host (no kernel): never a Fill, which writes data
SHAPE_ARITHMETIC = {"ELEMENTWISE", "GATHER", "CONCATENATION", "SLICE", "SHUFFLE", "UNARY", "CAST", "SELECT", "IDENTITY",
                    "REDUCE"}


def _integer_outputs(layer: Any) -> bool:
    """Every output an integer or bool tensor (shape tensors are Int32/Int64)."""
    return all(layer.get_output(j).dtype.name in ("INT32", "INT64", "BOOL") for j in range(layer.num_outputs))


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
        self.readers: dict[str, list[Any]] = {}  # tensor name -> the layers reading it
        # a layer's kind, read before the interpreter downcasts it (an IActivationLayer's .type is then its activation)
        self.kind = {layer.name: layer.type.name for layer in layers}
        for layer in layers:
            for name in _names(layer, outputs=True):
                self.producer[name] = layer
            for name in _names(layer):
                if name is not None:
                    self.consumers.setdefault(name, []).append(layer.type.name)
                    self.readers.setdefault(name, []).append(layer)
        self.outputs = {network.get_output(i).name for i in range(network.num_outputs)}
        self.live = self._live(layers)
        self.folded = self._constant_derived(layers)
        self.views: set[str] = set()  # pure reshapes, found as the walk reaches them
        # a fused Dequantize's output name -> the quantized tensor its consumers read instead
        self.read_from = {dq.get_output(0).name: dq.get_input(0).name for dq in layers
                          if dq.type.name == "DEQUANTIZE" and self._fusing_consumers(dq.get_output(0).name)}
        self.dequantized = {dq.get_output(0).name: dq.get_input(0).name for dq in layers if dq.type.name == "DEQUANTIZE"}
        # epilogue outputs whose fused kernel also reads a full-size float tensor (a residual not quantized): such a
        # kernel writes float, so a Quantize after it cannot join it
        self.float_epilogue: set[str] = set()
        self.host: dict[str, str] = {}  # an epilogue output -> the kind of the kernel it is computed in

    def _live(self, layers: list[Any]) -> set[str]:
        """Layers an output depends on; TensorRT's builder removes the others (e.g. a pad whose only reader now reads
        its input): they cost nothing."""
        live: set[str] = set()
        todo = list(self.outputs)
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            layer = self.producer.get(name)
            if layer is not None and layer.name not in live:
                live.add(layer.name)
                todo += [n for n in _names(layer) if n is not None]
        return live

    def _constant_derived(self, layers: list[Any]) -> set[str]:
        constant = self.constant = set()  # tensors computed from constants only
        host: set[str] = set()  # shape tensors: computed from input shapes (and constants) on the host, as TensorRT does
        folded: set[str] = set()
        for layer in layers:  # layers are stored in the order they were added, inputs before their consumers
            kind, ins = layer.type.name, _names(layer)
            if kind == "CONSTANT" or (ins and kind not in MATRIX and all(n is not None and n in constant for n in ins)):
                constant.update(_names(layer, outputs=True))
                if kind != "CONSTANT":
                    folded.add(layer.name)
            elif kind == "SHAPE" or (kind in SHAPE_ARITHMETIC and ins and _integer_outputs(layer)
                                     and all(n is not None and (n in host or n in constant) for n in ins)):
                host.update(_names(layer, outputs=True))
                if kind != "SHAPE":
                    folded.add(layer.name)
        return folded

    def _fusing_consumers(self, name: str) -> bool:
        """A Dequantize is fused into its consumers when each is a matrix kernel (its operand prologue) or a pointwise
        layer (TensorRT's pointwise fusion takes Q/DQ in with the arithmetic): none computes it on its own."""
        readers = self.readers.get(name, [])
        return bool(readers) and name not in self.outputs and all(
            self.kind[r.name] in DQ_CONSUMERS or self.kind[r.name] in POINTWISE or self._quantized_pooling(r) for r in readers)

    def _quantized_pooling(self, layer: Any) -> bool:
        """DQ -> pooling -> Q: TensorRT's quantized pooling, run on INT8 (the DQ and the Q fused into it)."""
        out = layer.get_output(0).name
        return (self.kind.get(layer.name) == "POOLING" and out not in self.outputs
                and set(self.consumers.get(out, [])) == {"QUANTIZE"})

    def _through_views(self, name: str | None) -> str | None:
        """The tensor a pure reshape chain ends at (a reshape moves no data: DQ and Q propagate across it)."""
        src = self.producer.get(name) if name is not None else None
        while src is not None and src.name in self.views:
            name = src.get_input(0).name
            src = self.producer.get(name)
        return name

    def free(self, layer: Any) -> bool:
        """Costs nothing at run time: folded at build time, fused into its consumer's prologue, or a view."""
        kind = self.kind.get(layer.name)
        if layer.name not in self.live:
            return True
        if layer.name in self.folded:
            if kind == "SHUFFLE":  # a folded reshape of a weight is still a view a DQ propagates across
                self._is_view(layer)
            return True
        if kind == "DEQUANTIZE" and layer.get_output(0).name in self.read_from:
            return True
        if kind == "QUANTIZE":  # the Q of a quantized pooling whose input arrives through a fused DQ
            src = self.producer.get(layer.get_input(0).name)
            if src is not None and self._quantized_pooling(src) and src.get_input(0).name in self.read_from:
                return True
        return kind == "SHUFFLE" and self._is_view(layer)

    def _is_view(self, layer: Any) -> bool:
        """A Shuffle that only reshapes (the interpreter hands over the downcast layer: its transposes read back)."""
        identity = lambda p, n: list(p)[:n] == list(range(n))  # noqa: E731
        rank = len(layer.get_output(0).shape)
        if identity(layer.first_transpose, len(layer.get_input(0).shape)) and identity(layer.second_transpose, rank):
            self.views.add(layer.name)  # seen before its consumers: the walk is topological
            return True
        return False

    def read_names(self, layer: Any) -> list[str | None]:
        """The tensor each input is actually read from: a fused Dequantize's input in place of its output; a matrix
        kernel's operand through reshapes to the Dequantize behind it (a weight's is folded: its INT8 constant)."""
        names = []
        for n in _names(layer):
            if n is not None and self.kind.get(layer.name) in MATRIX:
                behind = self._through_views(n)
                n = self.dequantized.get(behind, n) if behind in self.dequantized else n
            names.append(self.read_from.get(n, n) if n is not None else None)
        return names

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
            if not (isinstance(ins[j], torch.Tensor) and ins[j].numel() == outs[0].numel()):
                continue
            names = _names(layer)
            float_extra = name in self.float_epilogue or any(
                k != j and isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() == outs[0].numel()
                and names[k] not in self.read_from and names[k] not in self.constant for k, t in enumerate(ins))
            host = self.host.get(name, self.kind[src.name])
            if self.kind.get(layer.name) == "QUANTIZE" and float_extra and host in DQ_CONSUMERS:
                return None  # TensorRT: a float residual keeps the fused convolution's output float; the Q runs alone
            for out in _names(layer, outputs=True):
                self.host[out] = host
                if float_extra:
                    self.float_epilogue.add(out)
            return j
        return None

    def compute_dtype(self, layer: Any, ins: list, dtype: torch.dtype) -> torch.dtype:
        """INT8 when every operand of a matrix kernel arrives through a Dequantize (through reshapes: TensorRT
        propagates a DQ across them), fused or folded with its constant weight; else its output's dtype."""
        names = [self._through_views(n) for n in _names(layer)[:2] if n is not None]
        if names and all(n in self.dequantized for n in names):
            return torch.int8
        return dtype
