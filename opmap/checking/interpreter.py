"""The reference interpreter: executes a built ``INetworkDefinition`` layer by layer in PyTorch.

Nothing on our machines can run a TensorRT engine, so this is the oracle: every layer is read
back through the TensorRT Python API (type, attributes, inputs, constants) and executed with
its documented semantics. Each result's dtype and known dims are checked against what
TensorRT itself inferred while the network was defined, a free cross-check of both sides.
An unknown layer kind is an error, never a silent skip.

Where TensorRT's documentation leaves a choice open, the choice is pinned here and in a named
test (tests/test_interpreter.py): integer DIV truncates toward zero, ROUND is half-to-even,
Gather accepts negative indices (counted from the end, as ONNX does). Quantize is TensorRT's explicit
quantization: ``x / scale``, rounded half to even, saturated to the type's range (INT8 [-128, 127], FP8 E4M3
[-448, 448]), zero point 0, the scale per tensor or 1-D along ``axis``; Dequantize is ``q * scale``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from opmap.checking import sampling
from opmap.building.builder import torch_dtype_of
from opmap.errors import OpmapError


class InterpreterError(OpmapError):
    """The interpreter met a layer it does not know, or a result contradicting TensorRT's inference."""


class AssertionFailed(InterpreterError):
    """An IAssertionLayer's condition was false for these inputs (the engine would fail the same way)."""


_CLASS_NAMES = {
    "ACTIVATION": "IActivationLayer", "ASSERTION": "IAssertionLayer", "CAST": "ICastLayer",
    "CONCATENATION": "IConcatenationLayer", "CONSTANT": "IConstantLayer", "CONVOLUTION": "IConvolutionLayer",
    "CUMULATIVE": "ICumulativeLayer", "DECONVOLUTION": "IDeconvolutionLayer", "ELEMENTWISE": "IElementWiseLayer",
    "FILL": "IFillLayer", "GATHER": "IGatherLayer", "IDENTITY": "IIdentityLayer", "MATRIX_MULTIPLY": "IMatrixMultiplyLayer",
    "NORMALIZATION": "INormalizationLayer", "PADDING": "IPaddingLayer", "POOLING": "IPoolingLayer", "REDUCE": "IReduceLayer",
    "RESIZE": "IResizeLayer", "SCATTER": "IScatterLayer", "SELECT": "ISelectLayer", "SHAPE": "IShapeLayer",
    "SHUFFLE": "IShuffleLayer", "SLICE": "ISliceLayer", "SOFTMAX": "ISoftMaxLayer", "SQUEEZE": "ISqueezeLayer",
    "TOPK": "ITopKLayer", "EINSUM": "IEinsumLayer", "RESIZE": "IResizeLayer", "NON_ZERO": "INonZeroLayer", "UNARY": "IUnaryLayer", "UNSQUEEZE": "IUnsqueezeLayer", "ONE_HOT": "IOneHotLayer",
    "QUANTIZE": "IQuantizeLayer", "DEQUANTIZE": "IDequantizeLayer", "GRID_SAMPLE": "IGridSampleLayer",
}

HANDLERS: dict[str, Callable] = {}


def handles(kind: str):
    def register(fn):
        HANDLERS[kind] = fn
        return fn

    return register


def _axes(mask: int, rank: int) -> list[int]:
    return [i for i in range(rank) if mask & (1 << i)]


def _dims(dims: Any, rank: int | None = None) -> list[int]:
    values = list(dims)
    return values[:rank] if rank is not None else values


def _scalar(t: torch.Tensor) -> int:
    return int(t.reshape(-1)[0].item())


# -- layers ---------------------------------------------------------------------------------------
@handles("CONSTANT")
def _constant(trt, layer, ins):
    arr = layer.weights
    shape = tuple(layer.shape)
    if not hasattr(arr, "copy"):  # a trt.Weights the bindings could not hand over as an array (the ONNX parser's)
        if arr.dtype == trt.DataType.BF16:
            raise InterpreterError(f"layer {layer.name}: a {arr.dtype.name} constant ({arr.size} elements) cannot be read back "
                                   "(pass its value under its output's name)")
        arr = arr.numpy()
    return [torch.from_numpy(arr.copy()).reshape(shape)]


@handles("IDENTITY")
def _identity(trt, layer, ins):
    return [ins[0].clone()]


@handles("CAST")
def _cast(trt, layer, ins):
    target = torch_dtype_of(layer.to_type)
    x = ins[0]
    if x.is_floating_point() and not target.is_floating_point and target != torch.bool:
        x = torch.trunc(x)  # float -> int casts truncate toward zero
    return [x.to(target)]


_EW: dict[str, Callable] = {
    "SUM": torch.add, "PROD": torch.mul, "MAX": torch.maximum, "MIN": torch.minimum, "SUB": torch.sub, "POW": torch.pow,
    "AND": torch.logical_and, "OR": torch.logical_or, "XOR": torch.logical_xor,
    "EQUAL": torch.eq, "GREATER": torch.gt, "LESS": torch.lt,
}


@handles("ELEMENTWISE")
def _elementwise(trt, layer, ins):
    a, b = ins
    if a.dim() != b.dim():
        raise InterpreterError(f"layer {layer.name}: ElementWise inputs of ranks {a.dim()} and {b.dim()} (TensorRT needs equal ranks)")
    op = layer.op.name
    if op == "DIV":
        out = torch.div(a, b, rounding_mode="trunc") if not a.is_floating_point() else a / b
    elif op == "FLOOR_DIV":
        out = torch.div(a, b, rounding_mode="floor")
    else:
        out = _EW[op](a, b)
    return [out]


_UNARY: dict[str, Callable] = {
    "EXP": torch.exp, "LOG": torch.log, "SQRT": torch.sqrt, "RECIP": torch.reciprocal, "ABS": torch.abs, "NEG": torch.neg,
    "SIN": torch.sin, "COS": torch.cos, "TAN": torch.tan, "SINH": torch.sinh, "COSH": torch.cosh, "ASIN": torch.asin,
    "ACOS": torch.acos, "ATAN": torch.atan, "ASINH": torch.asinh, "ACOSH": torch.acosh, "ATANH": torch.atanh,
    "CEIL": torch.ceil, "FLOOR": torch.floor, "ERF": torch.erf, "NOT": torch.logical_not, "SIGN": torch.sign,
    "ROUND": torch.round, "ISINF": torch.isinf, "ISNAN": torch.isnan,
}


@handles("UNARY")
def _unary(trt, layer, ins):
    return [_UNARY[layer.op.name](ins[0])]


@handles("ACTIVATION")
def _activation(trt, layer, ins):
    x, a, b = ins[0], layer.alpha, layer.beta
    kind = layer.type.name
    table = {
        "RELU": lambda: torch.relu(x),
        "SIGMOID": lambda: torch.sigmoid(x),
        "TANH": lambda: torch.tanh(x),
        "LEAKY_RELU": lambda: F.leaky_relu(x, a),
        "ELU": lambda: torch.where(x >= 0, x, a * (torch.exp(x) - 1)),
        "SELU": lambda: b * torch.where(x >= 0, x, a * (torch.exp(x) - 1)),
        "SOFTSIGN": lambda: x / (1 + x.abs()),
        "SOFTPLUS": lambda: a * torch.log(torch.exp(b * x) + 1),
        "CLIP": lambda: x.clamp(a, b),
        "HARD_SIGMOID": lambda: (a * x + b).clamp(0, 1),
        "SCALED_TANH": lambda: a * torch.tanh(b * x),
        "THRESHOLDED_RELU": lambda: torch.where(x > a, x, torch.zeros_like(x)),
        "GELU_ERF": lambda: F.gelu(x),
        "GELU_TANH": lambda: F.gelu(x, approximate="tanh"),
    }
    return [table[kind]()]


@handles("SHUFFLE")
def _shuffle(trt, layer, ins):
    x = ins[0]
    first = _dims(layer.first_transpose, x.dim())
    x = x.permute(first) if x.dim() else x
    if len(ins) > 1 and ins[1] is not None:
        dims = [int(v) for v in ins[1].tolist()]
        placeholder = layer.zero_is_placeholder
    else:
        try:
            dims = list(layer.reshape_dims)
        except (ValueError, TypeError):  # no reshape set
            dims = None
        placeholder = layer.zero_is_placeholder
    if dims is not None:
        if placeholder:
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        x = x.reshape(dims)
    second = _dims(layer.second_transpose, x.dim())
    return [x.permute(second) if x.dim() else x]


@handles("SLICE")
def _slice(trt, layer, ins):
    x = ins[0]
    rank = x.dim()
    start = [int(v) for v in ins[1].tolist()] if len(ins) > 1 and ins[1] is not None else list(layer.start)
    size = [int(v) for v in ins[2].tolist()] if len(ins) > 2 and ins[2] is not None else list(layer.shape)
    stride = [int(v) for v in ins[3].tolist()] if len(ins) > 3 and ins[3] is not None else list(layer.stride)
    fill = ins[4] if len(ins) > 4 and ins[4] is not None else None
    axes = [int(v) for v in ins[5].tolist()] if len(ins) > 5 and ins[5] is not None else list(layer.axes or ())
    if axes:  # start/size/stride name only these axes (the ONNX parser's Slice); the rest are taken whole
        full_start, full_size, full_stride = [0] * rank, list(x.shape), [1] * rank
        for j, axis in enumerate(axes):
            axis = axis + rank if axis < 0 else axis
            full_start[axis], full_size[axis], full_stride[axis] = start[j], size[j], stride[j]
        start, size, stride = full_start, full_size, full_stride
    mode = layer.mode.name
    out = x
    for axis in range(rank):
        n = x.shape[axis]
        idx = start[axis] + torch.arange(size[axis]) * stride[axis]
        if mode == "WRAP":
            idx = torch.remainder(idx, n)
        elif mode == "CLAMP":
            idx = idx.clamp(0, n - 1)
        elif mode == "REFLECT":
            period = 2 * (n - 1) if n > 1 else 1
            idx = torch.remainder(idx, period)
            idx = torch.where(idx >= n, period - idx, idx)
        valid = (idx >= 0) & (idx < n)
        if mode in ("STRICT_BOUNDS", "WRAP", "CLAMP", "REFLECT") and not bool(valid.all()):
            raise InterpreterError(f"layer {layer.name}: slice out of bounds on axis {axis} in {mode} mode")
        picked = out.index_select(axis, idx.clamp(0, max(n - 1, 0)))
        if mode == "FILL" and not bool(valid.all()):
            shape = [1] * rank
            shape[axis] = -1
            value = fill.reshape(()).to(picked.dtype) if fill is not None else torch.zeros((), dtype=picked.dtype)
            picked = torch.where(valid.reshape(shape), picked, value)
        out = picked
    return [out]


@handles("CONCATENATION")
def _concat(trt, layer, ins):
    return [torch.cat(ins, dim=layer.axis)]


@handles("GATHER")
def _gather(trt, layer, ins):
    data, idx = ins
    axis = layer.axis
    mode = layer.mode.name
    if mode == "DEFAULT":
        if layer.num_elementwise_dims != 0:
            raise InterpreterError(f"layer {layer.name}: Gather with num_elementwise_dims is not interpreted")
        n = data.shape[axis]
        flat = idx.reshape(-1).long()
        flat = torch.where(flat < 0, flat + n, flat)
        picked = data.index_select(axis, flat)
        shape = list(data.shape[:axis]) + list(idx.shape) + list(data.shape[axis + 1:])
        return [picked.reshape(shape)]
    if mode == "ELEMENT":
        return [torch.gather(data, axis, idx.long())]
    # ND: the last dim of idx indexes the leading dims of data (after num_elementwise_dims batch dims)
    b = layer.num_elementwise_dims
    k = idx.shape[-1]
    batch = data.shape[:b]
    out = []
    flat_idx = idx.reshape(-1, k).long() if b == 0 else None
    if b == 0:
        picked = data[tuple(flat_idx[:, j] for j in range(k))]
        return [picked.reshape(list(idx.shape[:-1]) + list(data.shape[k:]))]
    for bi in range(math.prod(batch)):
        d = data.reshape(-1, *data.shape[b:])[bi]
        i = idx.reshape(-1, *idx.shape[b:])[bi].reshape(-1, k).long()
        out.append(d[tuple(i[:, j] for j in range(k))])
    return [torch.stack(out).reshape(list(idx.shape[:-1]) + list(data.shape[b + k:]))]


_REDUCE = {"SUM": torch.sum, "PROD": None, "MAX": torch.amax, "MIN": torch.amin, "AVG": torch.mean}


@handles("REDUCE")
def _reduce(trt, layer, ins):
    x = ins[0]
    axes = _axes(layer.axes, x.dim())
    keep = layer.keep_dims
    op = layer.op.name
    if op == "PROD":
        out = x
        for a in sorted(axes, reverse=True):
            out = out.prod(dim=a, keepdim=keep)
        return [out.to(x.dtype)]  # torch's prod of int32 is int64; TensorRT's stays int32
    if op == "AVG" and not x.is_floating_point():
        raise InterpreterError(f"layer {layer.name}: Reduce AVG on {x.dtype}")
    out = _REDUCE[op](x, dim=axes, keepdim=keep) if axes else x
    return [out.to(x.dtype)]


@handles("SOFTMAX")
def _softmax(trt, layer, ins):
    (axis,) = _axes(layer.axes, ins[0].dim())
    return [torch.softmax(ins[0], dim=axis)]


@handles("MATRIX_MULTIPLY")
def _matmul(trt, layer, ins):
    def prep(t, op):
        name = op.name
        if name == "TRANSPOSE":
            return t.transpose(-1, -2)
        return t

    a, b = prep(ins[0], layer.op0), prep(ins[1], layer.op1)
    if layer.op0.name == "VECTOR":
        a = a.unsqueeze(-2)
    if layer.op1.name == "VECTOR":
        b = b.unsqueeze(-1)
    out = torch.matmul(a, b)
    if layer.op0.name == "VECTOR":
        out = out.squeeze(-2)
    if layer.op1.name == "VECTOR":
        out = out.squeeze(-1)
    return [out]


@handles("SELECT")
def _select(trt, layer, ins):
    cond, a, b = ins
    return [torch.where(cond, a, b)]


@handles("SHAPE")
def _shape(trt, layer, ins):
    return [torch.tensor(list(ins[0].shape), dtype=torch.int64)]


@handles("TOPK")
def _topk(trt, layer, ins):
    x = ins[0]
    (axis,) = _axes(layer.axes, x.dim())
    k = _scalar(ins[1]) if len(ins) > 1 and ins[1] is not None else layer.k
    values, indices = torch.topk(x, k, dim=axis, largest=layer.op.name == "MAX", sorted=True)
    return [values, indices.to(torch.int32)]


@handles("CUMULATIVE")
def _cumulative(trt, layer, ins):
    x, axis_t = ins
    axis = _scalar(axis_t)
    if layer.reverse:
        x = x.flip(axis)
    out = torch.cumsum(x, dim=axis).to(x.dtype)
    if layer.exclusive:
        out = out - x
    if layer.reverse:
        out = out.flip(axis)
    return [out]


@handles("SCATTER")
def _scatter(trt, layer, ins):
    data, idx, updates = ins
    if layer.mode.name == "ELEMENT":
        return [data.scatter(layer.axis, idx.long(), updates)]
    k = idx.shape[-1]
    out = data.clone()
    flat = idx.reshape(-1, k).long()
    upd = updates.reshape(flat.shape[0], *data.shape[k:])
    out[tuple(flat[:, j] for j in range(k))] = upd
    return [out]


@handles("FILL")
def _fill(trt, layer, ins):
    shape = [int(v) for v in ins[0].tolist()] if ins and ins[0] is not None else list(layer.shape)
    dtype = torch_dtype_of(layer.to_type) if hasattr(layer, "to_type") else torch.float32
    op = layer.operation.name
    if op == "LINSPACE":
        start = ins[1].reshape(()) if len(ins) > 1 and ins[1] is not None else torch.tensor(layer.alpha)
        delta = ins[2] if len(ins) > 2 and ins[2] is not None else torch.tensor([layer.beta] * len(shape))
        delta = delta.reshape(-1)
        out = torch.zeros(shape, dtype=torch.float64) + float(start)
        for axis in range(len(shape)):
            view = [1] * len(shape)
            view[axis] = -1
            out = out + torch.arange(shape[axis], dtype=torch.float64).reshape(view) * float(delta[axis])
        return [out.to(dtype)]
    # Random fills draw from torch's generator in float32, in layer order: seeded like the PyTorch run, the oracle
    # reproduces PyTorch's samples (a device for verification; a real engine has its own random stream).
    if op == "RANDOM_UNIFORM":
        return [(torch.rand(shape) * (layer.beta - layer.alpha) + layer.alpha).to(dtype)]
    if op == "RANDOM_NORMAL":
        return [(torch.randn(shape) * layer.beta + layer.alpha).to(dtype)]
    raise InterpreterError(f"layer {layer.name}: Fill {op} is not interpreted")


@handles("NORMALIZATION")
def _normalization(trt, layer, ins):
    x, scale, bias = ins
    axes = _axes(layer.axes, x.dim())
    groups = layer.num_groups
    eps = layer.epsilon
    if groups > 1:
        # TensorRT's operator docs: for group normalization scale and bias are [1, G, 1, ...], one per group.
        n = x.shape[0]
        g = x.reshape(n, groups, -1)
        mean = g.mean(-1, keepdim=True)
        var = g.var(-1, unbiased=False, keepdim=True)
        y = (g - mean) / torch.sqrt(var + eps)
        return [(y * scale.reshape(1, groups, 1) + bias.reshape(1, groups, 1)).reshape(x.shape)]
    else:
        mean = x.mean(dim=axes, keepdim=True)
        var = x.var(dim=axes, unbiased=False, keepdim=True)
        y = (x - mean) / torch.sqrt(var + eps)
    return [y * scale + bias]


def _kernel_and_bias(layer, ins):
    kernel = torch.from_numpy(layer.kernel.copy()) if layer.kernel is not None and layer.kernel.size else ins[1]
    if layer.bias is not None and layer.bias.size:
        bias = torch.from_numpy(layer.bias.copy())
    else:
        bias = ins[2] if len(ins) > 2 else None
    return kernel, bias


@handles("CONVOLUTION")
def _convolution(trt, layer, ins):
    x = ins[0]
    kernel, bias = _kernel_and_bias(layer, ins)
    spatial = x.dim() - 2
    kernel = kernel.reshape(layer.num_output_maps, x.shape[1] // layer.num_groups, *list(layer.kernel_size_nd)[:spatial])
    pre, post = list(layer.pre_padding)[:spatial], list(layer.post_padding)[:spatial]
    pad = []
    for p0, p1 in reversed(list(zip(pre, post))):
        pad += [p0, p1]
    x = F.pad(x, pad)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    return [conv(x, kernel.to(x.dtype), None if bias is None else bias.to(x.dtype), stride=list(layer.stride_nd)[:spatial],
                 dilation=list(layer.dilation_nd)[:spatial], groups=layer.num_groups)]


@handles("DECONVOLUTION")
def _deconvolution(trt, layer, ins):
    """The full transposed convolution (with dilation), then pre_padding cropped at the start of each spatial axis
    and post_padding at its end (TensorRT's output size: (in - 1) * stride + dilation * (kernel - 1) + 1 - pre - post)."""
    x = ins[0]
    kernel, bias = _kernel_and_bias(layer, ins)
    spatial = x.dim() - 2
    kernel = kernel.reshape(x.shape[1], layer.num_output_maps // layer.num_groups, *list(layer.kernel_size_nd)[:spatial])
    pre, post = list(layer.pre_padding)[:spatial], list(layer.post_padding)[:spatial]
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[spatial]
    out = conv(x, kernel.to(x.dtype), None if bias is None else bias.to(x.dtype), stride=list(layer.stride_nd)[:spatial],
               groups=layer.num_groups, dilation=list(layer.dilation_nd)[:spatial])
    for axis, (p0, p1) in enumerate(zip(pre, post)):
        out = out.narrow(axis + 2, p0, out.shape[axis + 2] - p0 - p1)
    return [out]


@handles("EINSUM")
def _einsum(trt, layer, ins):
    return [torch.einsum(layer.equation, *ins)]


@handles("POOLING")
def _pooling(trt, layer, ins):
    x = ins[0]
    spatial = x.dim() - 2
    window = list(layer.window_size_nd)[:spatial]
    stride = list(layer.stride_nd)[:spatial]
    pre, post = list(layer.pre_padding)[:spatial], list(layer.post_padding)[:spatial]
    kind = layer.type.name
    ceil = layer.padding_mode.name in ("EXPLICIT_ROUND_UP", "SAME_UPPER", "SAME_LOWER")
    if layer.padding_mode.name != "EXPLICIT_ROUND_DOWN" and layer.padding_mode.name != "EXPLICIT_ROUND_UP":
        raise InterpreterError(f"layer {layer.name}: padding mode {layer.padding_mode.name} is not interpreted")
    pad = []
    for p0, p1 in reversed(list(zip(pre, post))):
        pad += [p0, p1]
    if kind == "MAX":
        # TensorRT pads max pooling with -inf; round-up windows may start in the padding, as PyTorch's ceil_mode allows
        if ceil:
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
            if pre != post:
                raise InterpreterError(f"layer {layer.name}: asymmetric padding with round-up is not interpreted")
            return [fn(x, window, stride, padding=pre, ceil_mode=True)]
        padded = F.pad(x, pad, value=-math.inf) if any(pad) else x
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
        return [fn(padded, window, stride)]
    if ceil:
        raise InterpreterError(f"layer {layer.name}: average pooling with round-up windows is not interpreted (the divisor of partial windows is unspecified)")
    dtype = x.dtype  # window sums in float32, rounded once to the layer's type (PyTorch's CPU avg_pool3d has no half)
    padded = F.pad(x.float(), pad) if any(pad) else x.float()
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
    summed = fn(padded, window, stride) * math.prod(window)
    if layer.average_count_excludes_padding and any(pad):
        ones = F.pad(torch.ones_like(x, dtype=torch.float32), pad)
        count = fn(ones, window, stride) * math.prod(window)
        return [(summed / count).to(dtype)]
    return [(summed / math.prod(window)).to(dtype)]


@handles("RESIZE")
def _resize(trt, layer, ins):
    """The coordinate mappings opmap emits, pinned to PyTorch's: nearest = ASYMMETRIC + FLOOR; linear =
    HALF_PIXEL (sources below 0 clamp to 0, as PyTorch does) or ALIGN_CORNERS; cubic (any of the three, with the
    layer's coefficient and exclude_outside) by opmap/checking/sampling.py. Anything else is refused. With scales
    set, the output size is floor(in * scale) and coordinates map by 1 / scale (PyTorch's scale_factor without
    recompute_scale_factor); with a shape, by in / out."""
    x = ins[0]
    scales = list(layer.scales) if len(ins) < 2 or ins[1] is None else []
    if scales:
        if scales[:2] != [1.0, 1.0]:
            raise InterpreterError(f"layer {layer.name}: resizing the batch or channel dims is not interpreted")
        sizing = {"scale_factor": scales[2:], "recompute_scale_factor": False}
    else:
        shape = [int(v) for v in ins[1].tolist()] if len(ins) > 1 and ins[1] is not None else list(layer.shape)
        if list(shape[:2]) != list(x.shape[:2]):
            raise InterpreterError(f"layer {layer.name}: resizing the batch or channel dims is not interpreted")
        sizing = {"size": shape[2:]}
    mode, ct = layer.resize_mode.name, layer.coordinate_transformation.name
    if mode == "CUBIC" and ct in ("HALF_PIXEL", "ALIGN_CORNERS", "ASYMMETRIC"):  # opmap/checking/sampling.py
        spatial = x.dim() - 2
        sizes = sampling.resize_sizes(x, spatial, scales[2:] if scales else None, sizing.get("size"))
        return [sampling.cubic_resize(x, sizes, scales[2:] if scales else None, ct, layer.cubic_coeff, layer.exclude_outside)]
    if mode == "NEAREST" and ct == "ASYMMETRIC" and layer.nearest_rounding.name == "FLOOR":
        return [F.interpolate(x, mode="nearest", **sizing)]
    if mode == "LINEAR" and ct in ("HALF_PIXEL", "ALIGN_CORNERS"):
        kind = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.dim() - 2]
        return [F.interpolate(x, mode=kind, align_corners=ct == "ALIGN_CORNERS", **sizing)]
    raise InterpreterError(f"layer {layer.name}: Resize {mode} with {ct} is not interpreted")


@handles("GRID_SAMPLE")
def _grid_sample(trt, layer, ins):
    """Bilinear or nearest sampling with zero, border or reflection padding (opmap/checking/sampling.py)."""
    x, grid = ins
    if x.dim() != 4:
        raise InterpreterError(f"layer {layer.name}: GridSample of a {x.dim()}-D input is not interpreted")
    mode, padding = layer.interpolation_mode.name, layer.sample_mode.name
    if mode not in ("LINEAR", "NEAREST") or padding not in ("FILL", "CLAMP", "REFLECT"):
        raise InterpreterError(f"layer {layer.name}: GridSample {mode} with {padding} padding is not interpreted")
    return [sampling.grid_sample(x, grid, mode, padding, layer.align_corners)]


@handles("NON_ZERO")
def _non_zero(trt, layer, ins):
    """[rank, N] indices of the non-zero elements, in row-major order (as PyTorch's nonzero, transposed)."""
    return [torch.nonzero(ins[0]).T.contiguous().to(torch_dtype_of(layer.indices_type))]


@handles("ASSERTION")
def _assertion(trt, layer, ins):
    if not bool(ins[0].all()):
        raise AssertionFailed(f"layer {layer.name}: assertion failed: {layer.message}")
    return []


@handles("UNSQUEEZE")
def _unsqueeze(trt, layer, ins):
    x = ins[0]
    axes = sorted(int(a) % (x.dim() + len(ins[1].reshape(-1))) for a in ins[1].reshape(-1).tolist())
    for a in axes:
        x = x.unsqueeze(a)
    return [x]


@handles("SQUEEZE")
def _squeeze(trt, layer, ins):
    x = ins[0]
    if len(ins) > 1 and ins[1] is not None:
        axes = sorted((int(a) % x.dim() for a in ins[1].reshape(-1).tolist()), reverse=True)
    else:  # no axes: every dim that is statically 1 in the network definition (the ONNX parser's Squeeze)
        axes = sorted((i for i, d in enumerate(layer.get_input(0).shape) if d == 1), reverse=True)
    for a in axes:
        x = x.squeeze(a)
    return [x]


# the range a Quantize saturates to, per output type (TensorRT's IQuantizeLayer)
QUANT_RANGE = {torch.int8: (-128.0, 127.0), torch.float8_e4m3fn: (-448.0, 448.0)}


def _quant_scale(layer, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The scale broadcast against x: one value per tensor, or a 1-D vector along the layer's axis."""
    if scale.numel() == 1:
        return scale.reshape(()).float()
    if scale.dim() != 1:
        raise InterpreterError(f"layer {layer.name}: block quantization (a {scale.dim()}-D scale) is not interpreted")
    axis = layer.axis % x.dim()
    if scale.shape[0] != x.shape[axis]:
        raise InterpreterError(f"layer {layer.name}: {scale.shape[0]} scales along axis {axis} of a {tuple(x.shape)} tensor")
    shape = [1] * x.dim()
    shape[axis] = -1
    return scale.float().reshape(shape)


@handles("QUANTIZE")
def _quantize(trt, layer, ins):
    x, scale = ins[0], ins[1]
    if len(ins) > 2 and ins[2] is not None and bool(ins[2].ne(0).any()):
        raise InterpreterError(f"layer {layer.name}: a non-zero zero point (TensorRT supports only 0)")
    if layer.to_type.name not in ("INT8", "FP8"):
        raise InterpreterError(f"layer {layer.name}: Quantize to {layer.to_type.name} is not interpreted (torch has no "
                               "arithmetic for it)")
    target = torch_dtype_of(layer.to_type)
    lo, hi = QUANT_RANGE[target]
    y = x.float() / _quant_scale(layer, x, scale)
    if target == torch.int8:
        y = torch.round(y)  # torch.round is half to even, as TensorRT's quantization rounds
    return [y.clamp(lo, hi).to(target)]  # FP8: clamped, then rounded to nearest even by the cast


@handles("DEQUANTIZE")
def _dequantize(trt, layer, ins):
    q, scale = ins[0], ins[1]
    return [(q.float() * _quant_scale(layer, q, scale)).to(torch_dtype_of(layer.to_type))]


def _attention(helper: Any, q, k, v, mask) -> torch.Tensor:
    """TensorRT's Attention operator: BMM1 (Q·Kᵀ, unscaled), mask (bool: True attends; float: added),
    causal (upper-left diagonal), softmax over s_kv, BMM2 with V. K/V heads are repeated for grouped queries."""
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    scores = q @ k.transpose(-1, -2)
    if helper.causal:
        L, S = scores.shape[-2:]
        scores = scores.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    if helper.norm_op.name == "SOFTMAX":
        scores = torch.softmax(scores, dim=-1)
    return scores @ v


# -- the walk -------------------------------------------------------------------------------------
def run_network(network: Any, trt: Any, inputs: dict[str, torch.Tensor], attention: dict[str, Any] | None = None,
                observer: Callable | None = None, every: bool = False) -> dict[str, torch.Tensor]:
    """Execute the network on concrete inputs; returns every network output by name (``every``: every tensor's value,
    inputs and each layer's outputs, by tensor name; the walk keeps them all anyway, so this costs nothing more).

    ``attention`` maps each IAttention's name to the IAttention helper, whose attributes
    (causal, mask, normalization) the Python API exposes only there, not on the layers it adds.
    ``observer(layer, inputs, outputs)`` sees every executed layer with its concrete tensors (the cost model uses it).
    An ILoop (trip limit, iterators, recurrences, loop outputs and the layers between them) runs as one unit."""
    attention = attention or {}
    values: dict[str, Any] = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        if t.name not in inputs:
            raise InterpreterError(f"no value for network input {t.name}")
        values[t.name] = inputs[t.name].to(torch_dtype_of(t.dtype))
    for i in range(network.num_layers):  # a constant the bindings cannot hand back (a BF16 one the ONNX parser folded),
        out = network.get_layer(i).get_output(0)  # given by the caller under its output's name
        if network.get_layer(i).type.name == "CONSTANT" and out.name in inputs:
            values[out.name] = inputs[out.name]
    loops = _loops(network, trt)
    for unit in _topological(network, loops):
        if isinstance(unit, str):
            _run_loop(network, trt, loops[unit], values, attention, observer)
        else:
            _execute(network.get_layer(unit), trt, values, attention, observer)
    if every:
        return values
    return {network.get_output(i).name: values[network.get_output(i).name] for i in range(network.num_outputs)}


def _execute(layer: Any, trt: Any, values: dict[str, Any], attention: dict[str, Any], observer: Callable | None = None) -> None:
    kind = layer.type.name
    if observer is not None:
        ins = [values.get(layer.get_input(j).name) if layer.get_input(j) is not None else None for j in range(layer.num_inputs)]
        _execute(layer, trt, values, attention)
        outs = [values.get(layer.get_output(j).name) for j in range(layer.num_outputs)]
        observer(layer, ins, outs)
        return
    if kind == "CONSTANT" and layer.get_output(0).name in values:  # given by the caller (run_network)
        return
    if kind == "ATTENTION_INPUT":
        values[layer.get_output(0).name] = [values[layer.get_input(j).name] if layer.get_input(j) is not None else None
                                            for j in range(layer.num_inputs)]
        return
    if kind == "ATTENTION_OUTPUT":
        out = layer.get_output(0)
        helper = attention.get(layer.name.removesuffix("_AttentionOutput"))
        if helper is None:
            raise InterpreterError(f"layer {layer.name}: attention built outside opmap's builder cannot be interpreted")
        q, k, v, *rest = values[layer.get_input(0).name]
        mask = values[helper.mask.name] if helper.mask is not None else None
        result = _attention(helper, q, k, v, mask)
        _check(layer, out, result)
        values[out.name] = result
        return
    handler = HANDLERS.get(kind)
    cls = getattr(trt, _CLASS_NAMES.get(kind, ""), None)
    if handler is None or cls is None:
        raise InterpreterError(f"layer {layer.name}: the reference interpreter has no semantics for {kind} layers")
    layer.__class__ = cls  # TensorRT's Python downcast idiom (type checked above)
    ins = []
    for j in range(layer.num_inputs):
        t = layer.get_input(j)
        ins.append(values[t.name] if t is not None else None)
    try:
        outs = handler(trt, layer, ins)
    except InterpreterError:
        raise
    except Exception as exc:
        raise InterpreterError(f"layer {layer.name} ({kind}): {type(exc).__name__}: {exc}") from None
    for j, value in enumerate(outs):
        t = layer.get_output(j)
        _check(layer, t, value)
        values[t.name] = value


_BOUNDARY = {"TRIP_LIMIT": "ITripLimitLayer", "ITERATOR": "IIteratorLayer", "RECURRENCE": "IRecurrenceLayer",
             "LOOP_OUTPUT": "ILoopOutputLayer"}


def _loops(network: Any, trt: Any) -> dict[str, dict[str, Any]]:
    """Loop name -> {"boundary": {kind: [layer indices]}, "body": [indices]} (body: layers fed by the loop's
    iterators or recurrences, directly or not)."""
    loops: dict[str, dict[str, Any]] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = layer.type.name
        if kind in _BOUNDARY:
            layer.__class__ = getattr(trt, _BOUNDARY[kind])
            info = loops.setdefault(layer.loop.name, {"boundary": {k: [] for k in _BOUNDARY}, "body": []})
            info["boundary"][kind].append(i)
    for info in loops.values():
        live = {network.get_layer(i).get_output(0).name for k in ("ITERATOR", "RECURRENCE") for i in info["boundary"][k]}
        changed = True
        while changed:
            changed = False
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if layer.type.name in _BOUNDARY or i in info["body"]:
                    continue
                if any(layer.get_input(j) is not None and layer.get_input(j).name in live for j in range(layer.num_inputs)):
                    info["body"].append(i)
                    live.update(layer.get_output(j).name for j in range(layer.num_outputs))
                    changed = True
        info["members"] = set(info["body"]) | {i for idx in info["boundary"].values() for i in idx}
    return loops


def _run_loop(network: Any, trt: Any, info: dict[str, Any], values: dict[str, Any], attention: dict[str, Any],
              observer: Callable | None = None) -> None:
    layer = network.get_layer
    (trip_index,) = info["boundary"]["TRIP_LIMIT"]
    trip_layer = layer(trip_index)
    trip_layer.__class__ = trt.ITripLimitLayer
    if trip_layer.kind.name != "COUNT":
        raise InterpreterError(f"layer {trip_layer.name}: a WHILE loop is not interpreted")
    trips = _scalar(values[trip_layer.get_input(0).name])
    iterators = []
    for i in info["boundary"]["ITERATOR"]:
        it = layer(i)
        it.__class__ = trt.IIteratorLayer
        iterators.append((it, values[it.get_input(0).name]))
    state = {}
    recurrences = []
    for i in info["boundary"]["RECURRENCE"]:
        rec = layer(i)
        rec.__class__ = trt.IRecurrenceLayer
        recurrences.append(rec)
        state[rec.get_output(0).name] = values[rec.get_input(0).name]
    body = _body_order(network, info)
    collected: dict[int, list] = {i: [] for i in info["boundary"]["LOOP_OUTPUT"]}
    for step in range(trips):
        local = dict(values)
        for it, x in iterators:
            local[it.get_output(0).name] = x.select(it.axis, trips - 1 - step if it.reverse else step)
        local.update(state)
        for i in body:
            _execute(layer(i), trt, local, attention, observer)
        for i in collected:
            collected[i].append(local[layer(i).get_input(0).name])
        state = {rec.get_output(0).name: local[rec.get_input(1).name] for rec in recurrences}
    for i, items in collected.items():
        out = layer(i)
        out.__class__ = trt.ILoopOutputLayer
        kind = out.kind.name
        if kind == "LAST_VALUE":
            # TensorRT takes LAST_VALUE of a recurrence's output only, and yields the value after the last iteration
            # (the recurrence's next value then; its initial value when the loop runs no iteration)
            source = out.get_input(0).name
            if source not in state:
                raise InterpreterError(f"layer {out.name}: a LAST_VALUE loop output must read a recurrence's output")
            result = state[source]
        else:
            result = torch.stack(items[::-1] if kind == "REVERSE" else items, dim=out.axis)
        _check(out, out.get_output(0), result)
        values[out.get_output(0).name] = result


def _body_order(network: Any, info: dict[str, Any]) -> list[int]:
    produced_by = {network.get_layer(i).get_output(j).name: i for i in info["body"] for j in range(network.get_layer(i).num_outputs)}
    order: list[int] = []
    done: set[int] = set()

    def visit(i: int) -> None:
        if i in done:
            return
        layer = network.get_layer(i)
        for j in range(layer.num_inputs):
            t = layer.get_input(j)
            if t is not None and t.name in produced_by:
                visit(produced_by[t.name])
        done.add(i)
        order.append(i)

    for i in info["body"]:
        visit(i)
    return order


def _topological(network: Any, loops: dict[str, dict[str, Any]] | None = None) -> list[int | str]:
    """Execution units (layer indices, or a loop's name for all its layers) with producers first
    (a layer may be added before one of its inputs is set)."""
    loops = loops or {}
    unit_of: dict[int, int | str] = {}
    for name, info in loops.items():
        for i in info["members"]:
            unit_of[i] = name
    producer: dict[str, int | str] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = unit_of.get(i, i)
    members: dict[int | str, list[int]] = {}
    for i in range(network.num_layers):
        members.setdefault(unit_of.get(i, i), []).append(i)
    order: list[int | str] = []
    state: dict[int | str, int] = {}  # 1 visiting, 2 done
    for root in members:
        stack = [(root, False)]
        while stack:
            unit, expanded = stack.pop()
            if state.get(unit) == 2:
                continue
            if expanded:
                state[unit] = 2
                order.append(unit)
                continue
            if state.get(unit) == 1:
                raise InterpreterError(f"the network has a cycle through {unit}")
            state[unit] = 1
            stack.append((unit, True))
            for i in members[unit]:
                layer = network.get_layer(i)
                for j in range(layer.num_inputs):
                    t = layer.get_input(j)
                    if t is not None and t.name in producer and producer[t.name] != unit and state.get(producer[t.name]) != 2:
                        stack.append((producer[t.name], False))
    return order


def _check(layer: Any, t: Any, value: torch.Tensor) -> None:
    expected = torch_dtype_of(t.dtype)
    if value.dtype != expected:
        raise InterpreterError(f"layer {layer.name}: interpreted {value.dtype}, TensorRT infers {expected}")
    declared = tuple(t.shape)
    if len(declared) != value.dim() or any(d >= 0 and d != v for d, v in zip(declared, value.shape)):
        raise InterpreterError(f"layer {layer.name}: interpreted shape {tuple(value.shape)}, TensorRT infers {declared}")
