"""The reference interpreter's pinned choices where TensorRT's documentation leaves room, and its refusals.

Each test builds a tiny network with the real TensorRT-RTX API, then interprets it."""

import numpy as np
import pytest
import torch

from opmap.building.backend import import_backend, logger, strongly_typed_network
from opmap.checking.interpreter import InterpreterError, run_network

trt = import_backend("tensorrt_rtx")


KEEP: list = []  # numpy arrays that TensorRT's Weights point into must outlive the network


@pytest.fixture
def net():
    builder = trt.Builder(logger(trt))
    network = strongly_typed_network(trt, builder)
    yield network
    KEEP.clear()


def const(network, array):
    KEEP.append(array)
    return network.add_constant(array.shape, trt.Weights(array)).get_output(0)


def run(network, **inputs):
    return run_network(network, trt, inputs)


def test_integer_div_truncates_toward_zero(net):
    a = net.add_input("a", trt.DataType.INT32, (4,))
    b = const(net, np.array([2, 2, -2, 3], np.int32))
    net.mark_output(net.add_elementwise(a, b, trt.ElementWiseOperation.DIV).get_output(0))
    (out,) = run(net, a=torch.tensor([7, -7, 7, -8], dtype=torch.int32)).values()
    assert out.tolist() == [3, -3, -3, -2]


def test_round_is_half_to_even(net):
    x = net.add_input("x", trt.DataType.FLOAT, (4,))
    net.mark_output(net.add_unary(x, trt.UnaryOperation.ROUND).get_output(0))
    (out,) = run(net, x=torch.tensor([0.5, 1.5, 2.5, -0.5])).values()
    assert out.tolist() == [0.0, 2.0, 2.0, -0.0]


def test_gather_negative_indices_count_from_the_end(net):
    x = net.add_input("x", trt.DataType.FLOAT, (5,))
    idx = const(net, np.array([-1, 0], np.int32))
    net.mark_output(net.add_gather(x, idx, 0).get_output(0))
    (out,) = run(net, x=torch.arange(5.0)).values()
    assert out.tolist() == [4.0, 0.0]


def test_topk_indices_are_int32_as_tensorrt_infers(net):
    x = net.add_input("x", trt.DataType.FLOAT, (2, 5))
    layer = net.add_topk(x, trt.TopKOperation.MAX, 2, 1 << 1)
    net.mark_output(layer.get_output(0))
    net.mark_output(layer.get_output(1))
    values, indices = run(net, x=torch.tensor([[1.0, 5, 3, 4, 2], [0, 1, 2, 3, 4]])).values()
    assert indices.dtype == torch.int32 and indices.tolist() == [[1, 3], [4, 3]] and values.tolist() == [[5, 4], [4, 3]]


def test_slice_fill_mode_pads_with_the_fill_value(net):
    x = net.add_input("x", trt.DataType.FLOAT, (3,))
    layer = net.add_slice(x, (-1,), (5,), (1,))
    layer.mode = trt.SampleMode.FILL
    layer.set_input(4, const(net, np.array(9.0, np.float32)))
    net.mark_output(layer.get_output(0))
    (out,) = run(net, x=torch.tensor([1.0, 2, 3])).values()
    assert out.tolist() == [9.0, 1, 2, 3, 9]


def test_unknown_layer_kind_is_an_error_not_a_skip(net):
    x = net.add_input("x", trt.DataType.FLOAT, (1, 1, 4, 4))
    net.mark_output(net.add_lrn(x, 3, 1.0, 0.5, 1.0).get_output(0))
    with pytest.raises(InterpreterError, match="no semantics for LRN layers"):
        run(net, x=torch.randn(1, 1, 4, 4))


def test_results_are_checked_against_tensorrts_inference(net, monkeypatch):
    """A wrong interpretation is caught by TensorRT's own shape/dtype inference, not silently propagated."""
    from opmap.checking import interpreter

    x = net.add_input("x", trt.DataType.FLOAT, (2, 3))
    net.mark_output(net.add_unary(x, trt.UnaryOperation.ABS).get_output(0))
    monkeypatch.setitem(interpreter._UNARY, "ABS", lambda t: t.double())
    with pytest.raises(InterpreterError, match="interpreted torch.float64, TensorRT infers torch.float32"):
        run(net, x=torch.randn(2, 3))


def test_layers_added_out_of_order_are_run_in_dependency_order(net):
    x = net.add_input("x", trt.DataType.FLOAT, (2, 3))
    shuffle = net.add_shuffle(x)  # its shape input is set from a layer added later
    shape = const(net, np.array([3, 2], np.int64))
    shuffle.set_input(1, shape)
    net.mark_output(shuffle.get_output(0))
    (out,) = run(net, x=torch.arange(6.0).reshape(2, 3)).values()
    assert out.shape == (3, 2)


# -- explicit quantization (Q/DQ) --------------------------------------------------------------------------------
def _qdq(network, x, scale, dtype, axis=None):
    s = const(network, np.asarray(scale, np.float32))
    q = network.add_quantize(x, s, dtype)
    d = network.add_dequantize(q.get_output(0), s, trt.float32)
    if axis is not None:
        q.axis = d.axis = axis
    return q.get_output(0), d.get_output(0)


def test_int8_quantize_rounds_half_to_even_and_saturates(net):
    x = net.add_input("x", trt.float32, (8,))
    q, d = _qdq(net, x, np.float32(0.5), trt.int8)
    net.mark_output(q)
    net.mark_output(d)
    values = torch.tensor([0.25, 0.75, 1.25, -0.25, -0.75, 100.0, -100.0, 63.4])
    qv, dv = run(net, x=values).values()
    # x / 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5 -> 0, 2, 2, -0, -2 (ties to even); ±200 saturate to 127 / -128
    assert qv.dtype == torch.int8 and qv.tolist() == [0, 2, 2, 0, -2, 127, -128, 127]
    assert dv.tolist() == [0.0, 1.0, 1.0, 0.0, -1.0, 63.5, -64.0, 63.5]


def test_int8_per_channel_scales_follow_the_axis(net):
    x = net.add_input("x", trt.float32, (2, 3))
    _, d = _qdq(net, x, np.array([1.0, 0.1, 0.01], np.float32), trt.int8, axis=1)
    net.mark_output(d)
    values = torch.tensor([[1.26, 1.26, 1.26], [-3.0, 300.0, 0.333]])
    (out,) = run(net, x=values).values()
    expected = torch.tensor([[1.0, 1.3, 1.26], [-3.0, 12.7, 0.33]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_fp8_quantize_saturates_to_448(net):
    x = net.add_input("x", trt.float32, (3,))
    q, d = _qdq(net, x, np.float32(2.0), trt.fp8)
    net.mark_output(d)
    (out,) = run(net, x=torch.tensor([2000.0, -2000.0, 3.0])).values()
    assert out.tolist() == [896.0, -896.0, 3.0]  # ±1000 saturate to ±448, times the scale


def test_int4_quantize_is_refused_not_guessed(net):
    x = net.add_input("x", trt.float32, (4,))
    _, d = _qdq(net, x, np.float32(1.0), trt.int4)
    net.mark_output(d)
    with pytest.raises(InterpreterError):
        run(net, x=torch.zeros(4))


def test_qdq_convolution_builds_per_channel_on_rtx(net):
    """INT8 Q/DQ around a convolution (per-tensor activation, per-channel weight) builds for real, and interprets."""
    x = net.add_input("x", trt.float32, (1, 2, 5, 5))
    w = const(net, np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32))
    _, xq = _qdq(net, x, np.float32(0.05), trt.int8)
    _, wq = _qdq(net, w, np.full(4, 0.03, np.float32), trt.int8, axis=0)
    conv = net.add_convolution_nd(xq, 4, (3, 3), trt.Weights(), trt.Weights())
    conv.set_input(1, wq)
    net.mark_output(conv.get_output(0))
    builder = trt.Builder(logger(trt))
    assert builder.build_serialized_network(net, builder.create_builder_config()) is not None
    (out,) = run(net, x=torch.randn(1, 2, 5, 5)).values()
    assert out.shape == (1, 4, 3, 3)


def test_slice_with_axes_takes_the_other_axes_whole(net):
    """The ONNX parser's Slice names only the sliced axes (``axes``): start/size/stride apply there, the rest whole."""
    x = net.add_input("x", trt.DataType.FLOAT, (2, 3, 4, 10))
    layer = net.add_slice(x, (1,), (4,), (2,))
    layer.axes = (-1,)
    net.mark_output(layer.get_output(0))
    data = torch.randn(2, 3, 4, 10)
    (out,) = run(net, x=data).values()
    assert torch.equal(out, data[..., 1:9:2])


def test_squeeze_without_axes_removes_the_static_unit_dims(net):
    x = net.add_input("x", trt.DataType.FLOAT, (2, 1, 3, 1))
    net.mark_output(net.add_squeeze(x).get_output(0))
    data = torch.randn(2, 1, 3, 1)
    (out,) = run(net, x=data).values()
    assert out.shape == (2, 3) and torch.equal(out, data.squeeze())


def test_an_onnx_parsed_network_runs_as_pytorch_does():
    """The ONNX route's own layers (dynamo export -> OnnxParser: Slice with axes, Squeeze, shape arithmetic) through
    the interpreter, against PyTorch on the module."""
    pytest.importorskip("onnxscript")
    from opmap.onnxroute import parse_onnx

    class Halves(torch.nn.Module):
        def forward(self, x):
            a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
            return torch.cat((-b, a), -1).unsqueeze(1).squeeze(1) * 2

    x = torch.randn(2, 3, 8)
    ep = torch.export.export(Halves(), (x,), strict=False)
    model = torch.onnx.export(ep, dynamo=True, verbose=False).model_proto
    _, _, network, _, ok = parse_onnx(trt, model.SerializeToString())
    assert ok
    kinds = {network.get_layer(i).type.name for i in range(network.num_layers)}
    assert "SLICE" in kinds
    (out,) = run_network(network, trt, {network.get_input(0).name: x}).values()
    assert torch.allclose(out, Halves()(x))
