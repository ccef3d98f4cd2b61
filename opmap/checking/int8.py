"""INT8 placement: a node computes in INT8 only where its measured error with the calibrated scales fits the budget.

The measurement is real: the node's chosen strategy is emitted into a network of its own with Q/DQ pairs on its
activation input(s) (per tensor, from the calibrated range) and its weight (per output channel), the reference
interpreter runs it on the node's own inputs from the calibration batches (captured from PyTorch), and the result is
compared with PyTorch's fp32 output of that node: the error is max |int8 - fp32| / max |fp32| (relative to the
output's range: INT8 has no precision to offer an element near zero). Both scale methods are tried — the
percentile of |x| (clips outliers) and the max — and the one with the lower error is kept.

Only convolutions and matrix products are candidates: they are where INT8 kernels pay (Tensor Core throughput,
a quarter of fp32's weight bytes); a Q/DQ pair around anything else costs more than it saves.

Per-node errors compound, so the placement is then checked end to end (:func:`fit_outputs`): the plan's whole network
runs on the calibration batches, and while a float output's error exceeds half of verify's INT8 tolerance, the INT8
nodes upstream of it with the largest measured errors go back to fp32.
"""

from __future__ import annotations

from typing import Any

import torch

from opmap.loading.graph import Graph, Node, Ref

# op -> (activation arguments, weight argument quantized per output channel along axis 0, or None, right operand whose
# constant 2-D weight [K, N] is quantized per output column along axis 1 — GPT-2's Conv1D projections are addmm so)
INT8_OPS: dict[str, tuple[tuple[str, ...], str | None, str | None]] = {
    "aten.conv1d.default": (("input",), "weight", None), "aten.conv2d.default": (("input",), "weight", None),
    "aten.conv3d.default": (("input",), "weight", None), "aten.convolution.default": (("input",), "weight", None),
    "aten.linear.default": (("input",), "weight", None),
    "aten.mm.default": (("self", "mat2"), None, "mat2"), "aten.bmm.default": (("self", "mat2"), None, None),
    "aten.matmul.default": (("self", "other"), None, "other"), "aten.addmm.default": (("mat1", "mat2"), None, "mat2"),
}
QMAX = 127.0
# Precisions below INT8 that TensorRT-RTX builds but opmap does not place, and why (probed on tensorrt-rtx 1.7.1.116;
# tests/test_int8.py builds both so the reasons stay true)
NOT_PLACED = {
    "fp8": "FP8 (E4M3) is not placed: a Q/DQ FP8 matmul builds on TensorRT-RTX only for SM89 and newer targets (Ada, "
           "Blackwell) — for SM75/SM80/SM86 the build fails ('contains HW-specific datatypes: fp8_e4m3') — and opmap "
           "has no per-target placement or FP8 cost terms yet; use --precision int8 (SM80 and newer)",
    "int4": "INT4 weight-only is not placed: a block-quantized INT4 weight matmul builds on TensorRT-RTX (SM80 and "
            "newer), but the reference interpreter cannot check it (torch has no INT4 dtype), and opmap places nothing "
            "it cannot verify; use --precision int8",
}
METHODS = ("percentile", "max")
DEFAULT_BUDGET = 2e-2  # max |int8 - fp32| / max |fp32| a node may add
# Where TensorRT folds a residual add into a convolution's or matrix product's epilogue (conv -> batch norm -> add ->
# activation -> Q; linear + bias -> add): the ops that may sit between the two, each the single consumer of what it reads
EPILOGUE_OPS = {"aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
                "aten.dropout.default"}  # dropout: the identity in an exported eval graph
RESIDUAL_ADD = "aten.add.Tensor"
# pooling TensorRT runs in INT8 between a DQ and a Q (its quantized pooling): max pooling only, where reading the input
# through the output's Q/DQ changes no value (max commutes with a monotone quantization at one scale)
MAX_POOLS = {"aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default"}
def refuse_unplaced(precision: str) -> None:
    """One-line refusal, with the reason, of a precision the backend builds but opmap does not place."""
    from opmap.errors import OpmapError

    if precision in NOT_PLACED:
        raise OpmapError(f"--precision {precision}: {NOT_PLACED[precision]}")


class Quantizer:
    """Decides, per node, INT8 or not, with the measured error as the reason. Call it as ``quantizer(node, strategy_id)``
    -> (``"int8"`` or None, {argument: (scale, axis, "int8")}, why)."""

    def __init__(self, program: Any, graph: Graph, backend: Any, strategies: dict, ranges: dict[str, Any],
                 batches: list[dict[str, torch.Tensor]], budget: float = DEFAULT_BUDGET, max_batches: int = 2) -> None:
        from opmap.building.builder import weights_of

        self.program, self.graph, self.backend, self.strategies = program, graph, backend, strategies
        self.ranges, self.budget = ranges, budget
        self.weights = weights_of(program)
        self.errors: dict[str, float] = {}  # node -> its measured error where it was placed in INT8 (for fit_outputs)
        # activation ("node" or "node#i") -> its per-tensor scale, fixed by the first node placed in INT8 that reads it:
        # every later consumer quantizes with the same scale, so the builder emits one Quantize for the tensor
        self.shared: dict[str, float] = {}
        self.samples = self._capture(batches[:max_batches])

    def _capture(self, batches: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
        """Per batch, PyTorch's values of every candidate node's arguments and outputs."""
        from opmap.checking.verify import node_values

        candidates = [n for n in self.graph if n.op in INT8_OPS or n.op == RESIDUAL_ADD or n.op in MAX_POOLS]
        wanted = {n.name for n in candidates} | {r.node for n in candidates for r in n.args.values() if isinstance(r, Ref)}
        return [node_values(self.program, batch, wanted) for batch in batches]

    def __call__(self, node: Node, strategy_id: str) -> tuple[str | None, dict[str, tuple], str]:
        spec = INT8_OPS.get(node.op)
        if spec is None:
            return None, {}, f"not INT8: {node.op} is not a convolution or matrix product (INT8 pays only there)"
        strat = self.strategies.get(strategy_id)
        if strat is None or strat.emit_fn is None:
            return None, {}, f"not INT8: {strategy_id} cannot emit layers to measure"
        best: tuple[float, str, dict] | None = None
        tried: list[dict] = []
        for method in METHODS:
            quant, missing = self._scales(node, spec, method)
            if missing:
                return None, {}, f"not INT8: {missing}"
            if quant in tried:  # every activation already has its shared scale: one measurement
                continue
            tried.append(quant)
            try:
                error = self._measure(node, strat, quant)
            except Exception as exc:  # a measurement that cannot run is a reason, never a crash of the plan
                return None, {}, f"not INT8: its Q/DQ network could not be measured ({type(exc).__name__}: {exc})"
            if best is None or error < best[0]:
                best = (error, method, quant)
        error, method, quant = best
        if error > self.budget:
            return None, {}, f"not INT8: measured error {error:.3g} of the output's range (calibrated {method} scales) exceeds the budget {self.budget:g}"
        self.errors[node.name] = error
        for name, (scale, axis, _dtype) in quant.items():
            key = self._activation(node.arg(name))
            if key is not None and axis is None:
                self.shared.setdefault(key, scale)
        return "int8", quant, (f"int8 ({_describe(quant)}): measured error {error:.3g} of the output's range with {method} "
                               f"scales, within the budget {self.budget:g}")

    def _activation(self, ref: Any) -> str | None:
        """The calibration key of an activation argument (``node`` or ``node#i``); None for a weight or a non-tensor."""
        if not isinstance(ref, Ref) or ref.node in self.weights:
            return None
        return ref.node if ref.index is None else f"{ref.node}#{ref.index}"

    def _scales(self, node: Node, spec: tuple, method: str) -> tuple[dict[str, tuple], str]:
        activations, weight, right = spec
        quant: dict[str, tuple] = {}
        for name in (*activations, weight):
            ref = node.arg(name)
            if name is None or not isinstance(ref, Ref):
                continue
            if ref.node in self.weights:
                w = self.ranges.get("weights", {}).get(ref.node)
                if w is None:
                    return {}, f"no calibrated range for weight {ref.node}"
                if name == weight and w.get("channels"):
                    quant[name] = ([max(a, 1e-12) / QMAX for a in w["channels"]], 0, "int8")
                elif name == right and w.get("columns"):  # a calibration from before columns were recorded: per tensor
                    quant[name] = ([max(a, 1e-12) / QMAX for a in w["columns"]], 1, "int8")
                else:
                    quant[name] = (max(w["amax"], 1e-12) / QMAX, None, "int8")
                continue
            key = self._activation(ref)
            if key in self.shared:
                quant[name] = (self.shared[key], None, "int8")
                continue
            a = self.ranges.get("activations", {}).get(key)
            if a is None:
                return {}, f"no calibrated range for input {ref}"
            quant[name] = (max(a["amax" if method == "max" else "percentile"], 1e-12) / QMAX, None, "int8")
        return quant, ""

    def _measure(self, node: Node, strat: Any, quant: dict[str, tuple], precision: str | None = None) -> float:
        """max |y - y_fp32| / max |y_fp32| over the captured batches, through the reference interpreter."""
        from opmap.building.builder import EmitContext, NetworkBuilder, float_side, trt_dtype
        from opmap.checking.interpreter import run_network

        worst = 0.0
        for seen in self.samples:
            nb = NetworkBuilder(self.backend, self.graph, None, self.weights, self.strategies)
            feeds: dict[str, torch.Tensor] = {}
            for i, ref in enumerate(r for r in node.args.values() if isinstance(r, Ref) and r.node not in self.weights):
                value = seen[ref.node] if ref.index is None else seen[ref.node][ref.index]
                t = nb.network.add_input(f"in{i}", trt_dtype(nb.trt, str(value.dtype).removeprefix("torch.")), tuple(value.shape))
                nb.values[ref.node] = t if ref.index is None else [t] * (ref.index + 1)
                feeds[f"in{i}"] = value
            result = strat.emit_fn(EmitContext(nb, node, strat, "", precision or float_side(quant), quant), node)
            y = result[0] if isinstance(result, list) else result
            layers = [nb.network.get_layer(i).type.name for i in range(nb.network.num_layers)]
            if quant and "QUANTIZE" not in layers:
                raise ValueError(f"{strat.id} read none of {', '.join(quant)} through the planned Q/DQ")
            nb.network.mark_output(y)
            got = next(iter(run_network(nb.network, nb.trt, feeds).values())).double()
            ref_out = seen[node.name]
            ref_out = (ref_out[0] if isinstance(ref_out, (list, tuple)) else ref_out).double()
            scale = float(ref_out.abs().max()) or 1.0
            worst = max(worst, float((got - ref_out).abs().max()) / scale)
        return worst

    def residuals(self, plan: Any) -> list[str]:
        """TensorRT folds a residual add into the epilogue of the convolution or matrix product feeding it (conv -> batch
        norm -> add -> activation -> Q) only when the add's other operand arrives quantized: its precision is the fused
        kernel's, and a float residual leaves the kernel writing float, the next Quantize a kernel of its own (TensorRT's
        placement advice: quantize the residual input of skip connections). So where an add's one operand is an INT8
        node's (through batch norm, each the single consumer of what it reads) and the other
        is a calibrated activation, that other operand gets a Q/DQ pair — with the tensor's shared scale where another
        INT8 node already quantizes it (the same Quantize then), else the calibrated one — if the add's measured error
        with it fits the budget. Returns the plan's notes."""
        from opmap.building.builder import PRECISIONS

        by_name = {np_.node.name: np_ for np_ in plan.nodes}
        uses: dict[str, int] = {}
        for n in self.graph:
            for r in n.tensor_refs():
                uses[r.node] = uses.get(r.node, 0) + 1
        for r in self.graph.outputs:
            if isinstance(r, Ref):
                uses[r.node] = uses.get(r.node, 0) + 1

        def from_int8(ref: Any) -> bool:
            while isinstance(ref, Ref) and ref.node in by_name and uses.get(ref.node) == 1:
                np_ = by_name[ref.node]
                if np_.precision == "int8":
                    return True
                if np_.node.op not in EPILOGUE_OPS or np_.quant or np_.node.arg("train", False) or np_.node.arg("training", False):
                    return False
                ref = np_.node.arg("input")
            return False

        notes: list[str] = []
        for np_ in plan.nodes:
            node = np_.node
            if node.op != RESIDUAL_ADD or np_.quant or np_.subplan is not None or node.arg("alpha", 1) != 1:
                continue
            a, b = node.arg("self"), node.arg("other")
            metas = [node.meta("self"), node.meta("other"), node.out]
            if (not all(isinstance(r, Ref) for r in (a, b)) or any(m is None or m.dtype != "float32" for m in metas)
                    or not metas[0].shape == metas[1].shape == metas[2].shape):
                continue  # the fused epilogue adds a same-shaped float tensor, no broadcast
            arg = "other" if from_int8(a) else "self" if from_int8(b) else None
            key = self._activation(node.arg(arg)) if arg else None
            strat = self.strategies.get(np_.choice.strategy) if np_.choice else None
            if key is None or strat is None or strat.emit_fn is None:
                continue
            act = self.ranges.get("activations", {}).get(key)
            options = [self.shared[key]] if key in self.shared else (
                [] if act is None else sorted({max(act["amax" if m == "max" else "percentile"], 1e-12) / QMAX for m in METHODS}))
            precision = PRECISIONS.get(np_.precision) if np_.precision else "float32"
            best = None
            for scale in options:
                quant = {arg: (scale, None, "int8")}
                try:
                    error = self._measure(node, strat, quant, precision)
                except Exception:  # unmeasurable: left as it is
                    continue
                if best is None or error < best[0]:
                    best = (error, quant)
            if best is None or best[0] > self.budget:
                continue
            np_.quant = best[1]
            self.errors[node.name] = best[0]
            self.shared.setdefault(key, best[1][arg][0])
            np_.precision_why = (f"{np_.precision_why}; residual {arg} read through INT8 Q/DQ (the add joins the INT8 "
                                 f"node's fused epilogue): measured error {best[0]:.3g} of the output's range")
            notes.append(f"{node.name}: residual {arg} quantized for the INT8 node's fused epilogue")
        return notes + self._pools(plan)

    def _pools(self, plan: Any) -> list[str]:
        """A max pooling whose output every reader quantizes (one shared scale) reads its input through a Q/DQ pair at
        that scale: TensorRT then runs it on INT8 between the two (its quantized pooling), and the Quantize moves into
        the kernel that produced its input (a convolution's epilogue) instead of running after the pooling. Exact: the
        max of quantized values is the quantized max. Returns the plan's notes."""
        from opmap.building.builder import PRECISIONS

        readers: dict[str, list[tuple[Any, str | None]]] = {}
        for np_ in plan.nodes:
            for arg, value in np_.node.args.items():
                for ref in (value if isinstance(value, (list, tuple)) else [value]):
                    if isinstance(ref, Ref):  # a reader through a list argument takes no Q/DQ: arg None
                        readers.setdefault(ref.node, []).append((np_, arg if ref is value else None))
        outputs = {r.node for r in self.graph.outputs if isinstance(r, Ref)}
        notes = []
        for np_ in plan.nodes:
            node = np_.node
            scale = self.shared.get(node.name)
            if node.op not in MAX_POOLS or np_.quant or np_.subplan is not None or scale is None or node.name in outputs:
                continue
            if not all(arg is not None and arg in r.quant and r.quant[arg][0] == scale and r.quant[arg][1] is None
                       for r, arg in readers.get(node.name, [])):
                continue
            strat = self.strategies.get(np_.choice.strategy) if np_.choice else None
            key = self._activation(node.arg("self"))
            if key is None or strat is None or strat.emit_fn is None:
                continue
            quant = {"self": (scale, None, "int8")}
            try:
                error = self._measure(node, strat, quant, PRECISIONS.get(np_.precision) if np_.precision else "float32")
            except Exception:  # unmeasurable: left as it is
                continue
            if error > self.budget:
                continue
            np_.quant = quant
            self.errors[node.name] = error
            self.shared.setdefault(key, scale)
            np_.precision_why = (f"{np_.precision_why}; input read through INT8 Q/DQ at its output's scale (every reader "
                                 f"quantizes its output: the pooling runs on INT8): measured error {error:.3g}")
            notes.append(f"{node.name}: max pooling between INT8 Q/DQ (its readers all quantize its output)")
        return notes


def _describe(quant: dict[str, tuple]) -> str:
    """What the Q/DQ pairs are, for the plan's reason: which arguments, per tensor or per channel (how many)."""
    parts = []
    for name, (scale, axis, _dtype) in quant.items():
        parts.append(f"{name} per tensor" if axis is None else
                     f"{name} per {'output channel' if axis == 0 else 'output column'} x{len(scale)}")
    return ", ".join(parts)


FIT_MARGIN = 0.5  # of verify's INT8 tolerance: the calibration batches are not the data the network will see
FIT_ROUNDS = 4  # then every INT8 node upstream of an output still over goes back


def output_errors(plan: Any, program: Any, strategies: dict, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Per float graph output (``node`` or ``node#i``): max |network - PyTorch| / max |PyTorch| over the batches, the
    network being the plan's, run by the reference interpreter."""
    from opmap.checking.discrete import network_values, pytorch_values

    refs = [r for r in plan.graph.outputs if isinstance(r, Ref) and r.node in plan.graph.nodes]
    worst: dict[str, float] = {}
    for seed, batch in enumerate(batches):
        expected = pytorch_values(program, batch, {r.node for r in refs}, seed)
        built, values = network_values(plan, program, strategies, batch, seed)
        for r in refs:
            exp = expected.get(r.node)
            exp = exp[r.index or 0] if isinstance(exp, (list, tuple)) else exp
            names = built.node_tensors.get(r.node, [])
            got = values.get(names[r.index or 0]) if len(names) > (r.index or 0) else None
            if not isinstance(exp, torch.Tensor) or not exp.is_floating_point() or got is None or got.shape != exp.shape:
                continue  # discrete outputs are discrete.py's; a padded layout is verify's
            key = r.node if r.index is None else f"{r.node}#{r.index}"
            scale = float(exp.abs().max()) or 1.0
            worst[key] = max(worst.get(key, 0.0), float((got.double() - exp.double()).abs().max()) / scale)
    return worst


def fit_outputs(plan: Any, program: Any, strategies: dict, batches: list[dict[str, torch.Tensor]], errors: dict[str, float],
                label: str) -> list[str]:
    """Keep the INT8 plan's outputs within ``FIT_MARGIN`` of verify's INT8 tolerance on ``batches``: each round, the
    residual adds and poolings upstream of an output over it that read an input through Q/DQ go back to float first;
    when none is left, the quarter of the INT8 nodes upstream with the largest measured errors go back to fp32 (after
    ``FIT_ROUNDS``, all of them). Returns notes for the plan."""
    from opmap.checking.discrete import demote, float_cone
    from opmap.checking.verify import INT8_RANGE_TOLERANCE

    limit = INT8_RANGE_TOLERANCE * FIT_MARGIN
    by_name = {np_.node.name: np_ for np_ in plan.nodes}
    notes: list[str] = []
    int8_round = 0
    for _ in range(FIT_ROUNDS + 2):  # one round for the inputs read through Q/DQ, then FIT_ROUNDS + 1 for INT8 nodes
        if not any(np_.quant for np_ in by_name.values()) or not batches:
            break
        over = {k: e for k, e in output_errors(plan, program, strategies, batches).items() if e > limit}
        if not over:
            break
        upstream = set()
        for key in over:
            node = key.split("#")[0]
            upstream |= {node, *float_cone(plan.graph, plan.graph[node])}
        suspects = sorted((n for n in upstream if n in by_name and by_name[n].quant), key=lambda n: -errors.get(n, 0.0))
        if not suspects:
            break
        inputs_only = [n for n in suspects if by_name[n].precision != "int8"]  # residuals, poolings read through Q/DQ
        if inputs_only:  # they go back first: each gains little, and the residual stream loses most
            take = inputs_only
        else:
            take = suspects if int8_round == FIT_ROUNDS else suspects[: max(1, len(suspects) // 4)]
            int8_round += 1
        outputs = ", ".join(f"{k} {e:.3g}" for k, e in sorted(over.items()))
        for name in take:
            why = (f"with INT8 here (measured error {errors.get(name, 0.0):.3g}) the outputs {outputs} of their range "
                   f"exceeded {limit:g} on {len(batches)} {label} batches")
            if by_name[name].precision == "int8":
                demote(by_name[name], f"fp32 (INT8 end to end): {why}")
            else:  # an input read through Q/DQ: the node keeps its precision, its input goes back to float
                by_name[name].quant = {}
                by_name[name].precision_why += f"; input back to float (INT8 end to end): {why}"
        moved = "read their inputs in float again" if inputs_only else "moved to fp32"
        notes.append(f"INT8 end to end: outputs {outputs} of their range over {limit:g}; {', '.join(take)} {moved}")
    return notes
