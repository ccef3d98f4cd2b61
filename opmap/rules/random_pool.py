"""Random sampling and FractionalMaxPool2d (whose windows come from random samples)."""

import torch
import torch.nn.functional as F

from opmap.planning.strategy import accept, reject, strategy
from opmap.rules.common import define, float_input, t

ns = globals()

def _emit_random(ctx, node):
    dims = list(node.out.shape)
    dtype = ctx.output_dtype()
    normal = "randn" in node.op
    op = ctx.trt.FillOperation.RANDOM_NORMAL if normal else ctx.trt.FillOperation.RANDOM_UNIFORM
    from opmap.building.builder import trt_dtype

    layer = ctx.net.add_fill(tuple(dims), op, trt_dtype(ctx.trt, "float32"))
    layer.alpha, layer.beta = (0.0, 1.0)  # uniform: [min, max); normal: mean, std
    return ctx.cast(ctx.out(layer, "random"), dtype)


define(ns, "random/fill", ["aten.rand.default", "aten.randn.default", "aten.rand_like.default", "aten.randn_like.default"],
       "direct", layers="Fill RANDOM_UNIFORM / RANDOM_NORMAL (same distribution, a different random stream than PyTorch)",
       example=(lambda a: torch.rand(2, 3) + a, t(2, 3)),
       examples=[(lambda a: torch.randn(4, 3) * a, t(4, 3)), (lambda a: torch.rand_like(a) + a, t(4, 3)),
                 (lambda a: torch.randn_like(a) + a, t(4, 3))], bad=(lambda a: torch.rand(2, 3, dtype=torch.float64) + a, t(2, 3)),
       contract="same distribution as PyTorch, different values: compare statistics, not elements",
       checks=[lambda node, **_: _static_out(node)], emit=_emit_random)


def _static_out(node):
    assert node.out is not None and node.out.is_static, f"output {node.out} has dynamic dims; the Fill shape is set at build time"

fmp = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s)  # noqa: E731
fmp_indices = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s, return_indices=True)  # noqa: E731


def _fmp_static(node):
    meta = node.meta("self")
    assert meta is not None and meta.is_static, f"input {meta} has dynamic dims; the window table is computed at build time"
    assert all(isinstance(k, int) for k in node.arg("kernel_size")), "kernel_size is not constant"


def _indices_unused(node, graph):
    for user in graph.consumers(node):
        if user.op == "operator.getitem" and user.arg("arg1") == 1:
            assert not user.users and not graph.is_output(user), (
                f"the indices output is used by {', '.join(user.users) or 'the graph output'}; this strategy computes values only"
            )


def _starts(ctx, u, size, out, k):
    """PyTorch's window starts, in float32 as ATen computes them: int((i + u)·α) − int(u·α); the last is size − k."""
    dt = "float32"
    if out == 1:
        return ctx.const(torch.tensor([size - k], dtype=torch.int32), "int32", shape=[1, 1, 1])
    alpha = ctx.const(torch.tensor((size - k) / (out - 1), dtype=torch.float32), dt, shape=[1, 1, 1])
    i = ctx.const(torch.arange(out - 1, dtype=torch.float32), dt, shape=[1, 1, out - 1])
    scaled = ctx.unary(ctx.elementwise(ctx.elementwise(i, u, "SUM"), alpha, "PROD"), "FLOOR")
    offset = ctx.unary(ctx.elementwise(u, alpha, "PROD"), "FLOOR")
    starts = ctx.cast(ctx.elementwise(scaled, offset, "SUB"), "int32")
    last = ctx.expand_to(ctx.const(size - k, "int32", shape=[1, 1, 1]), [starts.shape[0], starts.shape[1], 1])
    layer = ctx.net.add_concatenation([starts, last])
    layer.axis = 2
    return ctx.out(layer, "starts")


def _emit_fmp_exact(ctx, node):
    x = ctx.input("self")
    n, c, h, w = node.meta("self").shape
    kh, kw = node.arg("kernel_size")
    oh, ow = node.arg("output_size")
    samples = ctx.cast(ctx.input("random_samples"), "float32")  # [N, C, 2]: (width sample, height sample)
    u_w = ctx.out(ctx.net.add_slice(samples, (0, 0, 0), (n, c, 1), (1, 1, 1)), "u-w")
    u_h = ctx.out(ctx.net.add_slice(samples, (0, 0, 1), (n, c, 1), (1, 1, 1)), "u-h")
    rows = ctx.elementwise(ctx.reshape(_starts(ctx, u_h, h, oh, kh), [n, c, oh, 1]),
                           ctx.const(torch.arange(kh, dtype=torch.int32), "int32", shape=[1, 1, 1, kh]), "SUM")
    cols = ctx.elementwise(ctx.reshape(_starts(ctx, u_w, w, ow, kw), [n, c, ow, 1]),
                           ctx.const(torch.arange(kw, dtype=torch.int32), "int32", shape=[1, 1, 1, kw]), "SUM")
    row_idx = ctx.expand_to(ctx.reshape(rows, [n, c, oh * kh, 1]), [n, c, oh * kh, w])
    picked = ctx.net.add_gather_v2(x, row_idx, ctx.trt.GatherMode.ELEMENT)
    picked.axis = 2
    by_rows = ctx.out(picked, "rows")  # [N, C, oh*kh, W]
    col_idx = ctx.expand_to(ctx.reshape(cols, [n, c, 1, ow * kw]), [n, c, oh * kh, ow * kw])
    picked = ctx.net.add_gather_v2(by_rows, col_idx, ctx.trt.GatherMode.ELEMENT)
    picked.axis = 3
    windows = ctx.reshape(ctx.out(picked, "cols"), [n, c, oh, kh, ow, kw])
    values = ctx.out(ctx.net.add_reduce(windows, ctx.trt.ReduceOperation.MAX, (1 << 3) | (1 << 5), False), "max")
    return [values, None]


@strategy("fmp/exact-samples", op="aten.fractional_max_pool2d.default", kind="decompose",
          examples=[accept(fmp, t(1, 2, 8, 8), torch.rand(1, 2, 2)),
                    reject(fmp_indices, t(1, 2, 8, 8), torch.rand(1, 2, 2), match="indices output")])
def rule_fmp_exact_samples(node, graph):
    """Window starts from the samples as PyTorch computes them (floor((i+u)·α) − floor(u·α), last window at in−k),
    Gather of the kernel×kernel window elements, Reduce MAX. Exact for the same samples."""
    float_input(node)
    _fmp_static(node)
    assert node.arg("random_samples") is not None, "no random_samples input to compute the windows from"
    dtype = node.meta("self").dtype
    assert dtype == "float32", (f"input is {dtype}: PyTorch computes the window positions in the input's reduced precision, "
                                "whose rounding this strategy does not reproduce (the fuzzer found bfloat16 windows off by "
                                "one); run the pool in float32")
    _indices_unused(node, graph)


rule_fmp_exact_samples.emit(_emit_fmp_exact)


fmp_uneven = lambda x, s: F.fractional_max_pool2d(x, 2, output_size=(4, 4), _random_samples=s)  # noqa: E731


@strategy("fmp/maxpool-approx", op="aten.fractional_max_pool2d.default", kind="approximate",
          examples=[accept(fmp, t(1, 2, 8, 8), torch.rand(1, 2, 2)),  # α = 2: the windows do not depend on the samples
                    accept(fmp_uneven, t(1, 2, 11, 11), torch.rand(1, 2, 2)),  # α = 3: they do
                    reject(fmp_indices, t(1, 2, 8, 8), torch.rand(1, 2, 2), match="indices output")])
def rule_fmp_maxpool_approx(node, graph):
    """A deterministic MaxPool with stride floor(in/out) and the kernel that reaches the same output size.
    Its error against the random windows must be measured over many seeds before the planner may pick it."""
    float_input(node)
    _fmp_static(node)
    _indices_unused(node, graph)
    meta = node.meta("self")
    for size, out in zip(meta.shape[-2:], node.arg("output_size")):
        assert out <= size, f"output size {out} exceeds the input size {size}"


def _emit_fmp_maxpool(ctx, node):
    """MaxPool with stride floor(in/out) and the kernel that lands exactly on the output size."""
    x = ctx.input("self")
    spatial = node.meta("self").shape[-2:]
    out = node.arg("output_size")
    stride = [s // o for s, o in zip(spatial, out)]
    kernel = [s - (o - 1) * st for s, o, st in zip(spatial, out, stride)]
    layer = ctx.net.add_pooling_nd(x, ctx.trt.PoolingType.MAX, tuple(kernel))
    layer.stride_nd = tuple(stride)
    return [ctx.out(layer, "maxpool"), None]


rule_fmp_maxpool_approx.emit(_emit_fmp_maxpool)
