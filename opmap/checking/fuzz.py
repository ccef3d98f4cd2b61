"""Differential fuzzing of strategies over their argument space (``make fuzz``, ``bench/FUZZ.md``).

A *case* is a call (a function and its inputs, static or with every dim dynamic) drawn for one strategy: from the
op's argument space by a family generator (groups from 1 to C, ranks, negative dims, keepdim, uneven pooling windows,
dtypes...) or by mutating one of the strategy's own accept examples (dtypes, sizes, ties, dynamic dims). Each case
ends in exactly one of:

- ``refused``: the strategy's rule rejects the node, with its reason (a visible "no mapping": a good answer);
- ``verified``: the network, built for real with the strategy pinned on the node, agrees with PyTorch (the reference
  interpreter; at min/opt/max for dynamic cases);
- ``wrong``: it builds and disagrees with PyTorch: the defect this fuzzer exists to find;
- ``build-failed``: the rule accepted, the build then failed: a promise the plan could not keep (a defect too);
- ``approximate``: an approximate strategy built and its error exceeds the exact tolerance — its documented trade,
  which the planner accepts only within the accuracy budget from its measured error (the largest error is listed);
- not counted: ``invalid`` (PyTorch or torch.export rejects the call: outside the op's space), ``absent`` (the export
  holds no node of the strategy's ops), ``blocked`` (another node of the case has no mapping).

Everything is seeded: a case is a pure function of (seed, strategy, index); a failure is shrunk (input dims made
smaller while it still fails) so it can be kept as a small regression test.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

DTYPES_FLOAT = (torch.float16, torch.bfloat16)
COUNTED = ("refused", "verified", "approximate", "wrong", "build-failed")


@dataclass
class Case:
    label: str  # how to reproduce the call: the generator's description with input shapes and dtypes
    fn: Callable
    inputs: tuple
    dynamic: bool = False  # every input dim Dim.AUTO (torch.export keeps a dim static where the program needs it)
    decompose: bool = False
    node: str | None = None
    dynamic_shapes: Any = None  # an accept example's own dynamic shapes (a callable makes them), where not ``dynamic``


@dataclass
class Trial:
    strategy: str
    case: Case
    status: str  # refused | verified | approximate | wrong | build-failed | invalid | absent | blocked
    reason: str = ""
    error: float = 0.0  # the worst max-abs error over the compared outputs (wrong/verified)


# -- running one case ---------------------------------------------------------------------------------------------
def _shape_check(case: Case) -> str | None:
    """The case run on fake tensors first (PyTorch's shape and dtype rules, no data): the reason where they refuse it,
    else None (also where fake tensors cannot tell: data-dependent shapes, ops without a fake kernel). Some CPU kernels
    check less than their shape rules — ``_weight_norm`` with a ``g`` longer or shorter than ``v``'s dim corrupts the
    heap and aborts the process later (fuzz seed 163) — so a mutated case must pass the rules before it runs for real."""
    from torch._subclasses import fake_tensor as ft

    undecided = (ft.DataDependentOutputException, ft.DynamicOutputShapeException, ft.UnsupportedOperatorException,
                 ft.UnsupportedFakeTensorException, ft.MetadataMismatchError, ft.MissingOpProfile,
                 ft.FakeTensorDeviceMismatchError, ft.UnsupportedMutationAliasingException, NotImplementedError)
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)  # it logs every refusal it raises; the refusal is the answer here
    try:
        with torch.no_grad(), ft.FakeTensorMode(allow_non_fake_inputs=True) as mode:
            case.fn(*[mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in case.inputs])
    except undecided:
        return None
    except Exception as exc:  # noqa: BLE001  (the shape rules' own refusal: a RuntimeError, ValueError, IndexError...)
        from opmap.errors import first_line

        return f"{type(exc).__name__}: {first_line(exc)}"
    finally:
        log.setLevel(level)
    return None


def run_case(strat: Any, case: Case, ruleset: Any, backend: str = "tensorrt_rtx") -> Trial:
    """Judge the case's node with ``strat``; where it applies, build for real with ``strat`` pinned and compare with
    PyTorch (at the case's own inputs when static, at the profile's min/opt/max when dynamic)."""
    from opmap.loading.capture import capture_callable
    from opmap.checking.examples import every_dim_dynamic, find_node, judged_build
    from opmap.errors import OpmapError, first_line

    def trial(status: str, reason: str = "", error: float = 0.0) -> Trial:
        return Trial(strat.id, case, status, reason, error)

    problem = _shape_check(case)
    if problem is not None:  # PyTorch's shape rules refuse it: its CPU kernel may not (and then writes out of bounds)
        return trial("invalid", f"PyTorch (shapes): {problem}")
    try:
        with torch.no_grad():
            case.fn(*[x.clone() if isinstance(x, torch.Tensor) else x for x in case.inputs])
    except Exception as exc:  # outside the op's argument space: PyTorch itself refuses
        return trial("invalid", f"PyTorch: {type(exc).__name__}: {first_line(exc)}")
    own = case.dynamic_shapes() if callable(case.dynamic_shapes) else case.dynamic_shapes
    dynamic = every_dim_dynamic(case.inputs) if case.dynamic else own
    try:
        captured = capture_callable(case.fn, *case.inputs, dynamic_shapes=dynamic, decompose=case.decompose)
    except Exception as exc:
        return trial("invalid", first_line(exc))
    try:
        find_node(captured.graph, strat, case.node)  # a wildcard strategy (torch/decomposition) takes the first real op
    except OpmapError as exc:
        return trial("absent", str(exc))
    try:
        result = judged_build(strat, captured, dict(zip(captured.graph.inputs, _tensors(case.inputs))), ruleset, backend,
                              node_name=case.node, resize=case.dynamic or own is not None)
    except Exception as exc:  # the rule said APPLIES; the build (or the reference run of the network) broke
        return trial("build-failed", f"{type(exc).__name__}: {first_line(exc)}")
    if not result.verdict.applies:
        return trial("refused", result.verdict.reason or str(result.verdict.outcome))
    if result.unmapped:
        return trial("blocked", "; ".join(f"{k}: {v}" for k, v in result.unmapped.items()))
    if not result.reports:
        return trial("invalid", "; ".join(f"{k}: {v}" for k, v in (result.skipped or {}).items()))
    worst = max((o.max_abs for r in result.reports.values() for o in r.outputs), default=0.0)
    bad = [(label, o) for label, r in result.reports.items() for o in r.outputs if not o.ok]
    bad += [(label, None) for label, r in result.reports.items() if r.compared != r.expected]
    if bad and strat.kind == "approximate":  # its error is its contract: measured, and budgeted by the planner
        return trial("approximate", f"max abs error {worst:.3g}", worst)
    if bad:
        label, o = bad[0]
        what = (f"{o.name} max abs {o.max_abs:.3g}, max rel {o.max_rel:.3g}, {o.mismatch:.1%} of elements off"
                f"{'; ' + o.note if o.note else ''}" if o is not None else "outputs missing")
        return trial("wrong", f"at {label}: {what}", worst)
    return trial("verified", "", worst)


def _tensors(inputs: Sequence[Any]) -> list[torch.Tensor]:
    return [x for x in inputs if isinstance(x, torch.Tensor)]


# -- drawing tensors ----------------------------------------------------------------------------------------------
def tensor(g: torch.Generator, shape: Sequence[int], dtype: torch.dtype = torch.float32, kind: str = "normal") -> torch.Tensor:
    """A seeded tensor: ``kind`` normal | ties (few distinct values) | positive | small-int."""
    shape = tuple(shape)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-4 if kind != "positive" else 1, 6, shape, generator=g, dtype=dtype)
    x = torch.randn(shape, generator=g)
    if kind == "ties":
        x = x.round()
    elif kind == "positive":
        x = x.abs() + 0.5
    return x.to(dtype)


def _desc(inputs: Sequence[Any]) -> str:
    parts = []
    for x in inputs:
        if isinstance(x, torch.Tensor):
            parts.append(f"{'x'.join(map(str, x.shape)) or 'scalar'}:{str(x.dtype).removeprefix('torch.')}")
        else:
            parts.append(repr(x))
    return ", ".join(parts)


# -- family generators: the op's argument space -------------------------------------------------------------------
# Each generator draws one call from an op family's argument space: ``gen(rng, g) -> (description, fn, inputs)``.
GENERATORS: list[tuple[frozenset[str], Callable]] = []


def generator(*ops: str):
    def register(fn: Callable) -> Callable:
        GENERATORS.append((frozenset(ops), fn))
        return fn

    return register


def _shape(rng: random.Random, rank: int, lo: int = 1, hi: int = 5) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rank)]


def _float_dtype(rng: random.Random) -> torch.dtype:
    return rng.choice([torch.float32] * 3 + list(DTYPES_FLOAT))


@generator("aten.group_norm.default", "aten.native_group_norm.default")
def _group_norm(rng, g):
    groups = rng.choice([1, 1, 2, 3, 4])
    channels = groups * rng.randint(1, 3)
    shape = [rng.randint(1, 3), channels] + _shape(rng, rng.randint(0, 3), 1, 6)
    affine = rng.random() < 0.7
    eps = rng.choice([1e-5, 1e-3])
    x = tensor(g, shape)
    if affine:
        w, b = tensor(g, [channels]), tensor(g, [channels])
        return f"F.group_norm(x, {groups}, w, b, eps={eps})", lambda x, w, b: F.group_norm(x, groups, w, b, eps), (x, w, b)
    return f"F.group_norm(x, {groups}, eps={eps})", lambda x: F.group_norm(x, groups, eps=eps), (x,)


@generator("aten.layer_norm.default", "aten.native_layer_norm.default")
def _layer_norm(rng, g):
    rank = rng.randint(1, 5)
    shape = _shape(rng, rank, 1, 5)
    k = rng.randint(1, rank)
    normalized = tuple(shape[rank - k:])
    x = tensor(g, shape, _float_dtype(rng))
    if rng.random() < 0.5:
        w, b = tensor(g, normalized, x.dtype), tensor(g, normalized, x.dtype)
        return f"F.layer_norm(x, {normalized}, w, b)", lambda x, w, b: F.layer_norm(x, normalized, w, b), (x, w, b)
    return f"F.layer_norm(x, {normalized})", lambda x: F.layer_norm(x, normalized), (x,)


@generator("aten.scaled_dot_product_attention.default")
def _attention(rng, g):
    rank = rng.choice([3, 4, 4, 5, 6])
    lead = _shape(rng, rank - 3, 1, 3)
    heads, L, S, E, Ev = rng.randint(1, 4), rng.randint(1, 7), rng.randint(1, 7), rng.choice([4, 8]), rng.choice([4, 8])
    gqa = rng.random() < 0.2 and heads % 2 == 0
    kv_heads = heads // 2 if gqa else heads
    dtype = _float_dtype(rng)
    q = tensor(g, lead + [heads, L, E], dtype)
    k = tensor(g, lead + [kv_heads, S, E], dtype)
    v = tensor(g, lead + [kv_heads, S, Ev], dtype)
    causal = rng.random() < 0.3
    scale = rng.choice([None, None, 0.3])
    mask_kind = "none" if causal else rng.choice(["none", "bool", "float"])
    desc = f"F.scaled_dot_product_attention(q, k, v, is_causal={causal}, scale={scale}, enable_gqa={gqa}, mask={mask_kind})"
    if mask_kind == "none":
        return desc, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa), (q, k, v)
    mshape = [rng.choice([1, d]) for d in lead + [heads]][rng.randint(0, rank - 2):] + [L, S]
    if mask_kind == "bool":
        m = torch.rand(mshape, generator=g) > rng.choice([0.3, 0.8])  # 0.8: rows masked entirely (PyTorch gives 0)
    else:
        m = tensor(g, mshape, dtype)
    return desc, lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, scale=scale, enable_gqa=gqa), (q, k, v, m)


@generator("aten._softmax.default", "aten.softmax.int", "aten._log_softmax.default", "aten.log_softmax.int")
def _softmax(rng, g):
    rank = rng.randint(0, 5)
    x = tensor(g, _shape(rng, rank), _float_dtype(rng))
    dim = rng.randint(-max(rank, 1), max(rank, 1) - 1)
    fn_name = rng.choice(["softmax", "log_softmax"])
    f = getattr(torch, fn_name)
    return f"torch.{fn_name}(x, {dim})", lambda x: f(x, dim), (x,)


_REDUCTIONS = {"sum": torch.sum, "mean": torch.mean, "amax": torch.amax, "amin": torch.amin, "prod": torch.prod,
               "var": torch.var, "std": torch.std}


@generator(*(f"aten.{n}.{o}" for n in ("sum", "mean", "amax", "amin", "prod", "var", "std")
             for o in ("dim_IntList", "default", "dim_int", "correction", "dim")))
def _reduce(rng, g):
    name = rng.choice(list(_REDUCTIONS))
    rank = rng.randint(1, 5)
    dtype = rng.choice([torch.float32, torch.float32, torch.float16, torch.int32, torch.int64, torch.bool]) \
        if name in ("sum", "amax", "amin", "prod") else _float_dtype(rng)
    x = tensor(g, _shape(rng, rank), dtype, rng.choice(["normal", "ties"]))
    dims = sorted(rng.sample(range(rank), rng.randint(1, rank)))
    dims = tuple(d - rank if rng.random() < 0.5 else d for d in dims)
    keep = rng.random() < 0.5
    f = _REDUCTIONS[name]
    if name == "prod":
        dims = dims[:1]
        return f"torch.prod(x, {dims[0]}, keepdim={keep})", lambda x: torch.prod(x, dims[0], keepdim=keep), (x,)
    return f"torch.{name}(x, {dims}, keepdim={keep})", lambda x: f(x, dims, keepdim=keep), (x,)


_UNARY = ["sin", "cos", "tan", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "reciprocal", "abs", "neg",
          "floor", "ceil", "round", "sign", "asin", "atan", "sinh", "cosh", "log1p", "expm1", "exp2", "log2", "trunc",
          "relu", "logical_not", "bitwise_not", "square"]


@generator(*(f"aten.{n}.default" for n in _UNARY))
def _unary(rng, g):
    name = rng.choice(_UNARY)
    dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool])
    x = tensor(g, _shape(rng, rng.randint(0, 4)), dtype, "positive" if name in ("log", "sqrt", "rsqrt", "log2") else "normal")
    f = getattr(torch, name)
    return f"torch.{name}(x)", lambda x: f(x), (x,)


@generator("aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default",
           "aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default",
           "aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default")
def _pool(rng, g):
    d = rng.choice([1, 2, 2, 3])
    kind = rng.choice(["max", "avg"])
    k = [rng.randint(1, 3) for _ in range(d)]
    s = [rng.randint(1, 3) for _ in range(d)]
    p = [rng.randint(0, kk // 2) for kk in k]
    ceil = rng.random() < 0.3
    spatial = [rng.randint(kk, kk + 5) for kk in k]
    x = tensor(g, [rng.randint(1, 2), rng.randint(1, 3)] + spatial, _float_dtype(rng) if kind == "max" else torch.float32)
    f = getattr(F, f"{kind}_pool{d}d")
    if kind == "max":
        dil = [rng.randint(1, 2) for _ in range(d)]
        desc = f"F.max_pool{d}d(x, {k}, {s}, {p}, dilation={dil}, ceil_mode={ceil})"
        return desc, lambda x: f(x, k, s, p, dil, ceil), (x,)
    incl = rng.random() < 0.5
    desc = f"F.avg_pool{d}d(x, {k}, {s}, {p}, ceil_mode={ceil}, count_include_pad={incl})"
    return desc, lambda x: f(x, k, s, p, ceil, incl), (x,)


@generator("aten.adaptive_avg_pool1d.default", "aten.adaptive_avg_pool2d.default", "aten.adaptive_avg_pool3d.default",
           "aten._adaptive_avg_pool2d.default", "aten._adaptive_avg_pool3d.default", "aten.adaptive_max_pool1d.default",
           "aten.adaptive_max_pool2d.default", "aten.adaptive_max_pool3d.default")
def _adaptive(rng, g):
    d = rng.choice([1, 2, 3])
    kind = rng.choice(["avg", "avg", "max"])
    spatial = [rng.randint(1, 9) for _ in range(d)]
    out = [rng.randint(1, n) for n in spatial]
    x = tensor(g, [rng.randint(1, 2), rng.randint(1, 3)] + spatial)
    f = getattr(F, f"adaptive_{kind}_pool{d}d")
    return f"F.adaptive_{kind}_pool{d}d(x, {out})", lambda x: f(x, out), (x,)


@generator("aten.convolution.default", "aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default",
           "aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input")
def _conv(rng, g):
    d = rng.choice([1, 2, 2, 3])
    groups = rng.choice([1, 1, 2])
    cin, cout = groups * rng.randint(1, 2), groups * rng.randint(1, 2)
    k = [rng.randint(1, 3) for _ in range(d)]
    s = [rng.randint(1, 2) for _ in range(d)]
    dil = [rng.randint(1, 2) for _ in range(d)]
    spatial = [rng.randint(3, 7) for _ in range(d)]
    x = tensor(g, [rng.randint(1, 2), cin] + spatial)
    bias = tensor(g, [cout]) if rng.random() < 0.6 else None
    if rng.random() < 0.3:
        op = [rng.randint(0, min(ss, dd) - 1) for ss, dd in zip(s, dil)]
        w = tensor(g, [cin, cout // groups] + k)
        f = getattr(F, f"conv_transpose{d}d")
        p = [rng.randint(0, 1) for _ in range(d)]
        desc = f"F.conv_transpose{d}d(x, w, bias, {s}, {p}, {op}, {groups}, {dil})"
        return desc, lambda x, w: f(x, w, bias, s, p, op, groups, dil), (x, w)
    padding = rng.choice(["same", "valid", [rng.randint(0, 2) for _ in range(d)]])
    if padding == "same":
        s = [1] * d
    w = tensor(g, [cout, cin // groups] + k)
    f = getattr(F, f"conv{d}d")
    desc = f"F.conv{d}d(x, w, bias, {s}, {padding!r}, {dil}, {groups})"
    return desc, lambda x, w: f(x, w, bias, s, padding, dil, groups), (x, w)


@generator("aten.upsample_nearest2d.vec", "aten.upsample_bilinear2d.vec", "aten.upsample_bicubic2d.vec",
           "aten.upsample_nearest1d.vec", "aten.upsample_linear1d.vec", "aten.upsample_trilinear3d.vec",
           "aten.upsample_nearest3d.vec", "aten.upsample_nearest2d.default", "aten.upsample_bilinear2d.default")
def _interpolate(rng, g):
    d = rng.choice([1, 2, 2, 3])
    mode = rng.choice({1: ["nearest", "linear"], 2: ["nearest", "bilinear", "bicubic"], 3: ["nearest", "trilinear"]}[d])
    x = tensor(g, [rng.randint(1, 2), rng.randint(1, 3)] + [rng.randint(1, 6) for _ in range(d)])
    align = None if mode == "nearest" else rng.choice([True, False])
    if rng.random() < 0.5:
        size = [rng.randint(1, 9) for _ in range(d)]
        return f"F.interpolate(x, size={size}, mode={mode!r}, align_corners={align})", \
            lambda x: F.interpolate(x, size=size, mode=mode, align_corners=align), (x,)
    sf = rng.choice([2.0, 0.5, 1.5, 3.0])
    return f"F.interpolate(x, scale_factor={sf}, mode={mode!r}, align_corners={align})", \
        lambda x: F.interpolate(x, scale_factor=sf, mode=mode, align_corners=align), (x,)


@generator("aten.cat.default", "aten.stack.default")
def _cat(rng, g):
    rank = rng.randint(1, 4)
    base = _shape(rng, rank)
    dim = rng.randint(-rank, rank - 1)
    n = rng.randint(1, 3)
    dtype = rng.choice([torch.float32, torch.int64, torch.bool, torch.float16])
    if rng.random() < 0.5:
        xs = []
        for _ in range(n):
            shape = list(base)
            shape[dim] = rng.randint(0, 3)
            xs.append(tensor(g, shape, dtype))
        return f"torch.cat(xs, {dim})", lambda *xs: torch.cat(xs, dim), tuple(xs)
    dim = rng.randint(-rank - 1, rank)
    xs = tuple(tensor(g, base, dtype) for _ in range(n))
    return f"torch.stack(xs, {dim})", lambda *xs: torch.stack(xs, dim), xs


@generator("aten.cumsum.default", "aten.cumprod.default")
def _cumulative(rng, g):
    rank = rng.randint(0, 4)
    x = tensor(g, _shape(rng, rank), rng.choice([torch.float32, torch.int32, torch.int64, torch.bool, torch.float16]))
    dim = rng.randint(-max(rank, 1), max(rank, 1) - 1)
    name = rng.choice(["cumsum", "cumprod"])
    f = getattr(torch, name)
    return f"torch.{name}(x, {dim})", lambda x: f(x, dim), (x,)


@generator("aten.argmax.default", "aten.argmin.default", "aten.max.dim", "aten.min.dim")
def _arg(rng, g):
    rank = rng.randint(0, 4)
    x = tensor(g, _shape(rng, rank), rng.choice([torch.float32, torch.int32, torch.int64, torch.float16]),
               rng.choice(["normal", "ties"]))
    keep = rng.random() < 0.5
    name = rng.choice(["argmax", "argmin", "max", "min"])
    f = getattr(torch, name)
    if rng.random() < 0.3 and name.startswith("arg"):
        return f"torch.{name}(x)", lambda x: f(x), (x,)
    dim = rng.randint(-max(rank, 1), max(rank, 1) - 1)
    return f"torch.{name}(x, {dim}, keepdim={keep})", lambda x: f(x, dim, keepdim=keep), (x,)


@generator("aten.topk.default", "aten.sort.default", "aten.sort.stable")
def _topk(rng, g):
    rank = rng.randint(1, 4)
    shape = _shape(rng, rank, 1, 6)
    dim = rng.randint(-rank, rank - 1)
    x = tensor(g, shape, rng.choice([torch.float32, torch.int64, torch.float16]))  # distinct values: ties order freely
    x = x.flatten()[torch.randperm(x.numel(), generator=g)].reshape(shape) if x.is_floating_point() else \
        torch.randperm(x.numel(), generator=g).reshape(shape).to(x.dtype)
    desc_flag = rng.random() < 0.5
    if rng.random() < 0.5:
        k = rng.randint(1, shape[dim])
        return f"torch.topk(x, {k}, {dim}, largest={desc_flag})", lambda x: torch.topk(x, k, dim, desc_flag), (x,)
    return f"torch.sort(x, {dim}, descending={desc_flag})", lambda x: torch.sort(x, dim, desc_flag), (x,)


@generator("aten.mm.default", "aten.bmm.default", "aten.matmul.default", "aten.linear.default", "aten.addmm.default")
def _matmul(rng, g):
    ra, rb = rng.randint(1, 4), rng.randint(1, 4)
    m, k, n = rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 5)
    batch = _shape(rng, max(ra, rb) - 2, 1, 3)
    dtype = _float_dtype(rng)
    a_shape = [k] if ra == 1 else [rng.choice([1, b]) for b in batch[len(batch) - (ra - 2):]] + [m, k] if ra > 2 else [m, k]
    b_shape = [k] if rb == 1 else [rng.choice([1, b]) for b in batch[len(batch) - (rb - 2):]] + [k, n] if rb > 2 else [k, n]
    a, b = tensor(g, a_shape, dtype), tensor(g, b_shape, dtype)
    if rng.random() < 0.3:
        w = tensor(g, [n, k], dtype)
        bias = tensor(g, [n], dtype) if rng.random() < 0.5 else None
        return "F.linear(a, w, bias)", lambda a, w: F.linear(a, w, bias), (tensor(g, a_shape[:-1] + [k], dtype), w)
    return "torch.matmul(a, b)", lambda a, b: torch.matmul(a, b), (a, b)


@generator("aten.transpose.int", "aten.permute.default", "aten.squeeze.dim", "aten.unsqueeze.default",
           "aten.flatten.using_ints", "aten.squeeze.dims", "aten.select.int", "aten.slice.Tensor", "aten.narrow.default")
def _shape_ops(rng, g):
    rank = rng.randint(1, 5)
    shape = _shape(rng, rank, 1, 4)
    x = tensor(g, shape, rng.choice([torch.float32, torch.int64, torch.bool]))
    d0, d1 = rng.randint(-rank, rank - 1), rng.randint(-rank, rank - 1)
    choice = rng.choice(["transpose", "permute", "squeeze", "unsqueeze", "flatten", "select", "slice", "narrow"])
    if choice == "transpose":
        return f"x.transpose({d0}, {d1})", lambda x: x.transpose(d0, d1) * 1, (x,)
    if choice == "permute":
        perm = list(range(rank))
        rng.shuffle(perm)
        return f"x.permute({perm})", lambda x: x.permute(perm) * 1, (x,)
    if choice == "squeeze":
        return f"x.squeeze({d0})", lambda x: x.squeeze(d0) * 1, (x,)
    if choice == "unsqueeze":
        d = rng.randint(-rank - 1, rank)
        return f"x.unsqueeze({d})", lambda x: x.unsqueeze(d) * 1, (x,)
    if choice == "flatten":
        a, b = sorted((d0 % rank, d1 % rank))
        return f"x.flatten({a}, {b})", lambda x: x.flatten(a, b) * 1, (x,)
    if choice == "select":
        i = rng.randint(-shape[d0], shape[d0] - 1)
        return f"x.select({d0}, {i})", lambda x: x.select(d0, i) * 1, (x,)
    n = shape[d0]
    start, step = rng.randint(-n, n), rng.randint(1, 3)
    if choice == "slice":
        end = rng.choice([None, rng.randint(-n, n + 2)])
        idx = tuple([slice(None)] * (d0 % rank) + [slice(start, end, step)])
        return f"x[{idx}]", lambda x: x[idx] * 1, (x,)
    start = rng.randint(0, n - 1)
    length = rng.randint(0, n - start)
    return f"x.narrow({d0}, {start}, {length})", lambda x: x.narrow(d0, start, length) * 1, (x,)


@generator("aten.gather.default", "aten.index_select.default", "aten.embedding.default")
def _gather(rng, g):
    rank = rng.randint(1, 4)
    shape = _shape(rng, rank, 1, 5)
    dim = rng.randint(-rank, rank - 1)
    x = tensor(g, shape, rng.choice([torch.float32, torch.int64, torch.float16]))
    choice = rng.choice(["gather", "index_select", "embedding"])
    if choice == "gather":
        ishape = [rng.randint(1, n) for n in shape]
        ishape[dim] = rng.randint(1, 6)
        idx = torch.randint(0, shape[dim], ishape, generator=g)
        return f"torch.gather(x, {dim}, idx)", lambda x, i: torch.gather(x, dim, i), (x, idx)
    if choice == "index_select":
        idx = torch.randint(-0, shape[dim], (rng.randint(0, 5),), generator=g)
        return f"torch.index_select(x, {dim}, idx)", lambda x, i: torch.index_select(x, dim, i), (x, idx)
    table = tensor(g, [rng.randint(2, 9), rng.randint(1, 4)])
    ids = torch.randint(0, table.shape[0], _shape(rng, rng.randint(0, 3), 1, 4), generator=g)
    return "F.embedding(ids, table)", lambda i, w: F.embedding(i, w), (ids, table)


@generator("aten.clamp.default", "aten.clamp.Tensor", "aten.where.self", "aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor")
def _pointwise(rng, g):
    rank = rng.randint(0, 4)
    shape = _shape(rng, rank)
    dtype = rng.choice([torch.float32, torch.int32, torch.int64, torch.float16])
    x = tensor(g, shape, dtype)
    choice = rng.choice(["clamp", "where", "pow"])
    if choice == "clamp":
        lo, hi = rng.choice([(-1, 1), (None, 0), (0, None), (-0.5, 0.5)])
        if not dtype.is_floating_point and isinstance(lo, float):
            lo, hi = -1, 1
        return f"torch.clamp(x, {lo}, {hi})", lambda x: torch.clamp(x, lo, hi), (x,)
    if choice == "where":
        m = tensor(g, [rng.choice([1, d]) for d in shape], torch.bool)
        y = tensor(g, shape, rng.choice([dtype, torch.float32]))
        return "torch.where(m, x, y)", lambda m, x, y: torch.where(m, x, y), (m, x, y)
    e = rng.choice([2, 3, 0.5, -1, 0]) if dtype.is_floating_point else rng.choice([0, 1, 2, 3])
    if e in (0.5, -1):
        x = x.abs() + 0.5
    return f"torch.pow(x, {e})", lambda x: torch.pow(x, e), (x,)


# -- mutations of the strategy's own examples ---------------------------------------------------------------------
def _mutate(rng: random.Random, g: torch.Generator, inputs: tuple) -> tuple[str, tuple, bool]:
    """One mutation of an accept example's inputs: dtypes, sizes, ties, a dynamic export."""
    kind = rng.choice(["dtype-half", "dtype-bf16", "dtype-int", "dtype-bool", "ties", "grow", "shrink", "dynamic", "dynamic"])
    if kind == "dynamic":
        return "every dim dynamic", inputs, True
    out = []
    floats = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.is_floating_point()]
    for i, x in enumerate(inputs):
        if not isinstance(x, torch.Tensor):
            out.append(x)
        elif kind.startswith("dtype") and i in floats:
            dtype = {"dtype-half": torch.float16, "dtype-bf16": torch.bfloat16, "dtype-int": torch.int32,
                     "dtype-bool": torch.bool}[kind]
            out.append(tensor(g, x.shape, dtype) if not dtype.is_floating_point else x.to(dtype))
        elif kind == "ties" and x.is_floating_point():
            out.append(x.round())
        elif kind in ("grow", "shrink") and x.dim() and i == 0:
            axis = rng.randrange(x.dim())
            shape = list(x.shape)
            shape[axis] = shape[axis] + rng.randint(1, 3) if kind == "grow" else 1
            out.append(tensor(g, shape, x.dtype))
        else:
            out.append(x)
    return kind, tuple(out), False


def cases_for(strat: Any, n: int, seed: int = 0) -> Iterator[Case]:
    """``n`` cases for a strategy: family generators of its ops (two in three) and mutations of its accept examples."""
    rng = random.Random(zlib.crc32(f"{seed}:{strat.id}".encode()))
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    gens = [gen for ops, gen in GENERATORS if ops & set(strat.ops)]
    examples = [ex for ex in strat.examples if ex.expect == "accept"]
    for i in range(n):
        if gens and (not examples or i % 3 != 2):
            desc, fn, inputs = rng.choice(gens)(rng, g)
            dynamic = rng.random() < 0.25
            yield Case(f"{desc} on ({_desc(inputs)}){' dynamic' if dynamic else ''}", fn, inputs, dynamic)
        elif examples:
            index = i % len(examples) if i < len(examples) else rng.randrange(len(examples))
            ex = examples[index]
            if i < len(examples):  # each example once as written, then mutated
                yield Case(f"accept example {index} on ({_desc(ex.inputs)}){' with its dynamic dims' if ex.dynamic_shapes else ''}",
                           ex.fn, ex.inputs, decompose=ex.decompose, node=ex.node, dynamic_shapes=ex.dynamic_shapes)
                continue
            kind, inputs, dynamic = _mutate(rng, g, ex.inputs)
            yield Case(f"accept example {index}, {kind}, on ({_desc(inputs)})", ex.fn, inputs, dynamic, ex.decompose, ex.node)


# -- shrinking ----------------------------------------------------------------------------------------------------
def shrink(strat: Any, trial: Trial, ruleset: Any, budget: int = 24) -> Trial:
    """Make a failing case's input dims smaller while it fails the same way (``wrong`` or ``build-failed``)."""
    best = trial
    g = torch.Generator().manual_seed(0)
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        for i, x in enumerate(best.case.inputs):
            if not isinstance(x, torch.Tensor):
                continue
            for axis, n in enumerate(x.shape):
                for smaller in sorted({1, n // 2, n - 1} - {n, 0}):
                    if tries >= budget:
                        return best
                    shape = list(x.shape)
                    shape[axis] = smaller
                    inputs = list(best.case.inputs)
                    inputs[i] = tensor(g, shape, x.dtype)
                    case = dataclasses.replace(best.case, inputs=tuple(inputs),
                                               label=best.case.label.split(" on (")[0] + f" on ({_desc(inputs)})" +
                                               (" dynamic" if best.case.dynamic else ""))
                    tries += 1
                    t = run_case(strat, case, ruleset)
                    if t.status == trial.status:
                        best, changed = t, True
                        break
                if changed:
                    break
            if changed:
                break
    return best


# -- a campaign ---------------------------------------------------------------------------------------------------
@dataclass
class StrategyTally:
    strategy: str
    kind: str
    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    failures: list[Trial] = field(default_factory=list)


def tally(trials: Sequence[Trial], kinds: dict[str, str]) -> dict[str, StrategyTally]:
    out: dict[str, StrategyTally] = {}
    for t in trials:
        row = out.setdefault(t.strategy, StrategyTally(t.strategy, kinds.get(t.strategy, "")))
        row.counts[t.status] += 1
        if t.status == "refused":
            row.reasons[_reason_key(t.reason)] += 1
        if t.status in ("wrong", "build-failed"):
            row.failures.append(t)
    return out


def _reason_key(reason: str) -> str:
    """A refusal reason with its numbers and shapes blanked, so that the same reason is counted once."""
    import re

    return re.sub(r"\d+", "N", reason)[:140]


def fuzzable(ruleset: Any) -> list[Any]:
    """The built-in strategies a campaign covers: every one that emits or expands (the others only refuse)."""
    return [s for s in ruleset.strategies.values() if s.emit_fn is not None or s.expand_fn is not None]


def summary_line(trials: Sequence[Trial]) -> str:
    c = Counter(t.status for t in trials)
    return (f"cases: {sum(c[s] for s in COUNTED)}, refused: {c['refused']}, verified: {c['verified']}, "
            f"wrong: {c['wrong']}, build failed: {c['build-failed']}, approximate: {c['approximate']}")


