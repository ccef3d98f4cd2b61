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
        self.samples = self._capture(batches[:max_batches])

    def _capture(self, batches: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
        """Per batch, PyTorch's values of every candidate node's arguments and outputs."""
        from opmap.checking.verify import node_values

        wanted = {n.name for n in self.graph if n.op in INT8_OPS}
        wanted |= {r.node for n in self.graph if n.op in INT8_OPS for r in n.args.values() if isinstance(r, Ref)}
        return [node_values(self.program, batch, wanted) for batch in batches]

    def __call__(self, node: Node, strategy_id: str) -> tuple[str | None, dict[str, tuple], str]:
        spec = INT8_OPS.get(node.op)
        if spec is None:
            return None, {}, f"not INT8: {node.op} is not a convolution or matrix product (INT8 pays only there)"
        strat = self.strategies.get(strategy_id)
        if strat is None or strat.emit_fn is None:
            return None, {}, f"not INT8: {strategy_id} cannot emit layers to measure"
        best: tuple[float, str, dict] | None = None
        for method in METHODS:
            quant, missing = self._scales(node, spec, method)
            if missing:
                return None, {}, f"not INT8: {missing}"
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
        return "int8", quant, (f"int8 ({_describe(quant)}): measured error {error:.3g} of the output's range with {method} "
                               f"scales, within the budget {self.budget:g}")

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
            a = self.ranges.get("activations", {}).get(ref.node if ref.index is None else f"{ref.node}#{ref.index}")
            if a is None:
                return {}, f"no calibrated range for input {ref}"
            quant[name] = (max(a["amax" if method == "max" else "percentile"], 1e-12) / QMAX, None, "int8")
        return quant, ""

    def _measure(self, node: Node, strat: Any, quant: dict[str, tuple]) -> float:
        """max |y - y_fp32| / max |y_fp32| over the captured batches, through the reference interpreter."""
        from opmap.building.builder import EmitContext, NetworkBuilder, trt_dtype
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
            result = strat.emit_fn(EmitContext(nb, node, strat, "", None, quant), node)
            y = result[0] if isinstance(result, list) else result
            nb.network.mark_output(y)
            got = next(iter(run_network(nb.network, nb.trt, feeds).values())).double()
            ref_out = seen[node.name]
            ref_out = (ref_out[0] if isinstance(ref_out, (list, tuple)) else ref_out).double()
            scale = float(ref_out.abs().max()) or 1.0
            worst = max(worst, float((got - ref_out).abs().max()) / scale)
        return worst


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
    quarter of the INT8 nodes upstream of an output over it with the largest measured errors go back to fp32 (after
    ``FIT_ROUNDS``, all of them). Returns notes for the plan."""
    from opmap.checking.discrete import demote, float_cone
    from opmap.checking.verify import INT8_RANGE_TOLERANCE

    limit = INT8_RANGE_TOLERANCE * FIT_MARGIN
    by_name = {np_.node.name: np_ for np_ in plan.nodes}
    notes: list[str] = []
    for round_ in range(FIT_ROUNDS + 1):
        if not any(np_.precision == "int8" for np_ in by_name.values()) or not batches:
            break
        over = {k: e for k, e in output_errors(plan, program, strategies, batches).items() if e > limit}
        if not over:
            break
        upstream = set()
        for key in over:
            node = key.split("#")[0]
            upstream |= {node, *float_cone(plan.graph, plan.graph[node])}
        suspects = sorted((n for n in upstream if n in by_name and by_name[n].precision == "int8"),
                          key=lambda n: -errors.get(n, 0.0))
        if not suspects:
            break
        take = suspects if round_ == FIT_ROUNDS else suspects[: max(1, len(suspects) // 4)]
        outputs = ", ".join(f"{k} {e:.3g}" for k, e in sorted(over.items()))
        for name in take:
            demote(by_name[name], f"fp32 (INT8 end to end): with INT8 here (measured error {errors.get(name, 0.0):.3g}) the "
                                  f"outputs {outputs} of their range exceeded {limit:g} on {len(batches)} {label} batches")
        notes.append(f"INT8 end to end: outputs {outputs} of their range over {limit:g}; {', '.join(take)} moved to fp32")
    return notes
