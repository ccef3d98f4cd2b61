"""verify: the built network against PyTorch, output by output, through the reference interpreter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from opmap.engine.builder import Built
from opmap.engine.graph import TensorMeta
from opmap.engine.interpreter import run_network

# max |a-b| <= atol + rtol * |b|, per output dtype
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


def compare(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, float, float, bool]:
    dtype = str(expected.dtype).removeprefix("torch.")
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


def verify_built(built: Built, program: Any, inputs: dict[str, torch.Tensor]) -> Report:
    expected = reference(program, inputs)
    got = run_network(built.network, built.trt, inputs, built.attention)
    report = Report()
    main = [n for n in built.outputs if n not in built.extra_outputs]
    for i, (name, exp) in enumerate(zip(main, expected)):
        value = got[name]
        node = built.output_nodes[built.outputs.index(name)]
        note = ""
        count_name = next((k for k, label in built.extra_outputs.items() if k.startswith(name + ".") and label == "count"), None)
        if count_name is not None:
            count = int(got[count_name].reshape(-1)[0])
            note = f"padded output: compared the first {count} of {value.shape[0]} rows; count {'exact' if count == exp.shape[0] else 'WRONG'}"
            if count != exp.shape[0]:
                report.outputs.append(OutputCheck(name, node, tuple(value.shape), str(exp.dtype).removeprefix("torch."),
                                                  float("inf"), float("inf"), 1.0, False, note))
                continue
            value = value[:count]
        max_abs, max_rel, mismatch, ok = compare(exp, value)
        report.outputs.append(OutputCheck(name, node, tuple(exp.shape), str(exp.dtype).removeprefix("torch."), max_abs, max_rel,
                                          mismatch, ok, note))
    return report
