"""verify: the built network against PyTorch, output by output, through the reference interpreter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from opmap.engine.builder import Built
from opmap.engine.graph import TensorMeta
from opmap.engine.interpreter import run_network

# max |a-b| <= atol + rtol * |b|, per output dtype (the dtype the network computed in, for fp16/bf16 builds)
TOLERANCE = {
    "float32": (1e-4, 1e-4),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}


@dataclass
class OutputCheck:
    name: str
    node: str | None
    shape: tuple
    dtype: str
    max_abs: float
    max_rel: float
    mismatch: float  # fraction of elements outside the tolerance
    ok: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "shape": list(self.shape), "dtype": self.dtype, "max_abs_err": self.max_abs,
                "max_rel_err": self.max_rel, "mismatch_frac": self.mismatch, "ok": self.ok, "note": self.note}


@dataclass
class Report:
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)


def random_inputs(inputs: dict[str, TensorMeta], seed: int = 0, int_high: int = 10) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, meta in inputs.items():
        shape = [d if isinstance(d, int) else 2 for d in meta.shape]
        dtype = getattr(torch, meta.dtype)
        if dtype == torch.bool:
            out[name] = torch.rand(shape, generator=g) > 0.5
        elif dtype.is_floating_point:
            out[name] = torch.randn(shape, generator=g).to(dtype)
        else:
            out[name] = torch.randint(0, int_high, shape, generator=g, dtype=dtype)
    return out


def reference(program: Any, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """PyTorch's own outputs of the exported program, flattened in graph output order."""
    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    with torch.no_grad():
        result = program.module()(*[inputs[n] for n in names])
    flat, _ = torch.utils._pytree.tree_flatten(result)
    return [t for t in flat if isinstance(t, torch.Tensor)]


def padded_axes(program: Any) -> list[int]:
    """Per tensor output (in ``reference`` order): its first data-dependent dim — where a padded layout pads — or 0."""
    from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

    nodes = {n.name: n for n in program.graph.nodes}
    axes = []
    for spec in program.graph_signature.output_specs:
        val = getattr(nodes.get(getattr(spec.arg, "name", None)), "meta", {}).get("val") if spec.kind.name == "USER_OUTPUT" else None
        if isinstance(val, torch.Tensor):
            axes.append(next((a for a, d in enumerate(val.shape) if free_unbacked_symbols(d)), 0))
    return axes


def compare(expected: torch.Tensor, got: torch.Tensor, compute: str | None = None) -> tuple[float, float, float, bool]:
    """max abs, max rel, mismatch fraction, ok. ``compute``: the float dtype the network computed in, if not float32."""
    dtype = str(expected.dtype).removeprefix("torch.")
    if compute and expected.is_floating_point():
        dtype = compute
    if expected.shape != got.shape:
        return float("inf"), float("inf"), 1.0, False
    if not expected.is_floating_point():
        bad = (expected != got.to(expected.dtype)).float()
        frac = float(bad.mean()) if bad.numel() else 0.0
        return (float(bad.max()) if bad.numel() else 0.0), frac, frac, frac == 0
    atol, rtol = TOLERANCE.get(dtype, (1e-4, 1e-4))
    e, g = expected.double(), got.double()
    diff = (e - g).abs()
    both_nan = torch.isnan(e) & torch.isnan(g)
    diff = torch.where(both_nan, torch.zeros_like(diff), diff)
    if diff.numel() == 0:
        return 0.0, 0.0, 0.0, True
    rel = diff / e.abs().clamp_min(1e-12)
    bad = diff > atol + rtol * e.abs()
    return float(diff.max()), float(rel.max()), float(bad.double().mean()), not bool(bad.any())


def verify_built(built: Built, program: Any, inputs: dict[str, torch.Tensor], runtime: str = "reference", seed: int = 0,
                 precision: str = "fp32") -> Report:
    """Compare the network's outputs with PyTorch's, by the reference interpreter or (``trt``) the real engine.

    Both runs start from the same torch seed, so random ops draw the same samples in the interpreter."""
    torch.manual_seed(seed)
    expected = reference(program, inputs)
    torch.manual_seed(seed)
    if runtime == "trt":
        got = run_engine(built, inputs)
    else:
        got = run_network(built.network, built.trt, inputs, built.attention)
    report = Report()
    main = [n for n in built.outputs if n not in built.extra_outputs]
    axes = padded_axes(program)
    for i, (name, exp) in enumerate(zip(main, expected)):
        value = got[name]
        node = built.output_nodes[built.outputs.index(name)]
        note = ""
        count_name = next((k for k, label in built.extra_outputs.items() if k.startswith(name + ".") and label == "count"), None)
        if count_name is not None:
            count = int(got[count_name].reshape(-1)[0])
            axis = axes[i] if i < len(axes) else 0
            note = (f"padded output: compared the first {count} of {value.shape[axis]} rows"
                    f"{f' along dim {axis}' if axis else ''}; count {'exact' if count == exp.shape[axis] else 'WRONG'}")
            if count != exp.shape[axis]:
                report.outputs.append(OutputCheck(name, node, tuple(value.shape), str(exp.dtype).removeprefix("torch."),
                                                  float("inf"), float("inf"), 1.0, False, note))
                continue
            value = value.narrow(axis, 0, count)
        compute = {"fp16": "float16", "bf16": "bfloat16"}.get(precision)
        max_abs, max_rel, mismatch, ok = compare(exp, value, compute)
        report.outputs.append(OutputCheck(name, node, tuple(exp.shape), str(exp.dtype).removeprefix("torch."), max_abs, max_rel,
                                          mismatch, ok, note))
    return report


def load_inputs(path: str, expected: dict[str, TensorMeta]) -> dict[str, torch.Tensor]:
    """``--inputs``: a torch.save'd dict {input name: tensor} (loaded without running code)."""
    from opmap.errors import OpmapError, first_line

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise OpmapError(f"{path}: cannot load inputs: {first_line(exc)} (expected torch.save of {{name: tensor}})") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise OpmapError(f"{path}: expected a dict of input name -> tensor, got {type(data).__name__}")
    missing = sorted(set(expected) - set(data))
    if missing:
        raise OpmapError(f"{path}: no tensor for input(s) {', '.join(missing)} (the model takes {', '.join(expected)})")
    return {k: data[k] for k in expected}


def run_engine(built: Built, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Execute the serialized engine on the GPU with full TensorRT (``verify --runtime trt``)."""
    from opmap.engine.backend import logger
    from opmap.engine.builder import torch_dtype_of
    from opmap.errors import OpmapError

    trt = built.trt
    if not torch.cuda.is_available():
        raise OpmapError("--runtime trt needs a CUDA GPU; none is visible here (engines are built ahead-of-time only)")
    runtime = trt.Runtime(logger(trt))
    engine = runtime.deserialize_cuda_engine(built.engine)
    if engine is None:
        raise OpmapError(f"{built.trt.__name__} cannot run this engine on this GPU: {logger(trt).messages[-1:]}")
    context = engine.create_execution_context()
    buffers: dict[str, torch.Tensor] = {}
    for name, value in inputs.items():
        buffers[name] = value.cuda().contiguous()
        context.set_input_shape(name, tuple(value.shape))
        context.set_tensor_address(name, buffers[name].data_ptr())
    for name in built.outputs:
        shape = tuple(context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise OpmapError(f"output {name} has a data-dependent shape; its runtime needs an output allocator")
        buffers[name] = torch.empty(shape, dtype=torch_dtype_of(engine.get_tensor_dtype(name)), device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise OpmapError("TensorRT failed to execute the engine")
    stream.synchronize()
    return {name: buffers[name].cpu() for name in built.outputs}
