"""The cost model's precision and fusion terms, on real tensorrt_rtx networks run by the reference interpreter.

Each network is written with TensorRT's own network API so the test states exactly which layers exist; the numbers
come from the shipped H200 profile (measured on the card, bench/device/README.md)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from opmap.building.backend import import_backend, logger, strongly_typed_network
from opmap.checking.costmodel import DeviceProfile, estimate

trt = import_backend("tensorrt_rtx")
pytestmark = pytest.mark.skipif(trt is None, reason="tensorrt_rtx is not installed")
PROFILE = DeviceProfile.load()
F32 = None if trt is None else trt.DataType.FLOAT


class Net:
    """A strongly typed network under construction, and the estimate of what it became."""

    def __init__(self) -> None:
        self.builder = trt.Builder(logger(trt))
        self.net = strongly_typed_network(trt, self.builder)
        self.keep: list = []
        self.inputs: dict[str, torch.Tensor] = {}

    def input(self, name, shape):
        self.inputs[name] = torch.randn(*shape)
        return self.net.add_input(name, F32, shape)

    def const(self, value: np.ndarray):
        self.keep.append(value)
        return self.net.add_constant(value.shape, trt.Weights(value)).get_output(0)

    def conv(self, x, cout, weight=None):
        cin = x.shape[1]
        if weight is None:
            w = np.random.default_rng(0).standard_normal((cout, cin, 3, 3)).astype(np.float32)
            self.keep.append(w)
            layer = self.net.add_convolution_nd(x, cout, (3, 3), trt.Weights(w))
        else:  # the kernel as a tensor (how a Q/DQ'd weight reaches the convolution)
            layer = self.net.add_convolution_nd(x, cout, (3, 3), trt.Weights(), trt.Weights())
            layer.set_input(1, weight)
        layer.padding_nd = (1, 1)
        return layer.get_output(0)

    def qdq(self, t, scale=0.05):
        s = self.const(np.array(scale, dtype=np.float32))
        q = self.net.add_quantize(t, s, trt.DataType.INT8).get_output(0)
        return self.net.add_dequantize(q, s, F32).get_output(0)

    def estimate(self, *outputs):
        for t in outputs:
            self.net.mark_output(t)
        built = SimpleNamespace(network=self.net, trt=trt, attention={}, layer_map={})
        return estimate(built, self.inputs, PROFILE)


def by_kind(est):
    return {label: ms for _, label, ms in est.by_layer}


def test_reduced_precision_matrix_throughput_and_bytes():
    """fp16 halves the bytes and runs on the Tensor Cores: a 4096^3 product is estimated well under fp32's time;
    int8 at least as fast as fp16 (measured on the card: _int_mm vs fp16 GEMM)."""
    n = 4096
    flops = 2.0 * n**3
    fp32 = PROFILE.predict("MATRIX_MULTIPLY", flops, 3 * n * n * 4, torch.float32)
    fp16 = PROFILE.predict("MATRIX_MULTIPLY", flops, 3 * n * n * 2, torch.float16)
    int8 = PROFILE.predict("MATRIX_MULTIPLY", flops, n * n * (1 + 1 + 4), torch.int8)
    assert fp16 < 0.75 * fp32
    assert int8 <= fp16
    assert PROFILE.predict("CONVOLUTION", flops, 0, torch.float16) < PROFILE.predict("CONVOLUTION", flops, 0, torch.float32)
    # bandwidth-bound work pays by the element size: the same element count in fp16 moves half the bytes
    assert PROFILE.memory_ms("ELEMENTWISE", 2e8, torch.float16) < 0.6 * PROFILE.memory_ms("ELEMENTWISE", 4e8, torch.float32)


def test_profile_fallbacks_use_measured_numbers_only():
    """The old H100 profile has no int8 or convolution numbers: the nearest measured one stands in, nothing invented."""
    old = DeviceProfile.load(str(__import__("opmap.data", fromlist=["x"]).__path__[0] + "/device_h100.json"))
    assert old.throughput("MATRIX_MULTIPLY", torch.int8) == old.micro["matmul_tflops_fp16"]
    assert old.throughput("CONVOLUTION", torch.float32) == old.micro["matmul_tflops_fp32_tf32"]
    assert old.launch_ms == old.micro["launch_ms"]
    assert "H200" in PROFILE.card and PROFILE.launch_ms == PROFILE.micro["graph_launch_ms"]


def test_cast_after_conv_costs_nothing():
    net = Net()
    y = net.conv(net.input("x", (1, 64, 160, 160)), 64)
    half = net.net.add_cast(y, trt.DataType.HALF).get_output(0)
    est = net.estimate(half)
    assert est.kernels == 1 and est.fused == 1
    assert by_kind(est)["CAST (fused)"] == 0.0  # its output (fp16) is smaller than its input: no extra traffic


def test_cast_of_a_shared_tensor_is_a_kernel():
    """The conv output is also a network output, so it must be written anyway: the cast reads it back."""
    net = Net()
    y = net.conv(net.input("x", (1, 64, 160, 160)), 64)
    half = net.net.add_cast(y, trt.DataType.HALF).get_output(0)
    est = net.estimate(y, half)
    assert est.kernels == 2 and est.fused == 0
    assert by_kind(est)["CAST"] > PROFILE.launch_ms


def test_pointwise_chain_is_one_kernel():
    """conv -> bias-like add -> relu -> sigmoid: one kernel; the same chain on a network input: one kernel too (the
    first layer launches, the rest ride on it); the residual add pays only for reading the residual."""
    net = Net()
    x = net.input("x", (1, 64, 80, 80))
    y = net.conv(x, 64)
    b = net.const(np.ones((1, 64, 1, 1), dtype=np.float32))
    y = net.net.add_elementwise(y, b, trt.ElementWiseOperation.SUM).get_output(0)
    y = net.net.add_activation(y, trt.ActivationType.RELU).get_output(0)
    y = net.net.add_elementwise(y, x, trt.ElementWiseOperation.SUM).get_output(0)  # residual
    y = net.net.add_activation(y, trt.ActivationType.SIGMOID).get_output(0)
    est = net.estimate(y)
    assert est.kernels == 1 and est.fused == 4
    residual = [ms for name, label, ms in est.by_layer if label == "ELEMENTWISE (fused)"]
    assert max(residual) == pytest.approx(PROFILE.memory_ms("ELEMENTWISE", 64 * 80 * 80 * 4, torch.float32))

    unfused = Net()
    x = unfused.input("x", (1, 64, 80, 80))
    a = unfused.net.add_activation(x, trt.ActivationType.RELU).get_output(0)
    b = unfused.net.add_activation(a, trt.ActivationType.SIGMOID).get_output(0)
    est = unfused.estimate(a, b)  # relu's output is a network output: sigmoid cannot ride on it
    assert est.kernels == 2


def test_qdq_fuses_into_an_int8_convolution():
    """Activation and weight Q/DQ around a conv: the weight's pair folds at build time, the activation's Quantize is
    one kernel (its input is a network input), the conv reads int8 and computes in int8 — cheaper than fp32."""
    def conv_net(int8: bool):
        net = Net()
        x = net.input("x", (1, 128, 80, 80))
        w = net.const(np.random.default_rng(0).standard_normal((128, 128, 3, 3)).astype(np.float32))
        if int8:
            x, w = net.qdq(x), net.qdq(w)
        return net.estimate(net.conv(x, 128, weight=w))

    fp32, int8 = conv_net(False), conv_net(True)
    labels = [label for _, label, _ in int8.by_layer]
    assert labels == ["QUANTIZE", "CONVOLUTION"], labels  # weight Q/DQ folded, activation DQ fused into the conv
    conv32 = by_kind(fp32)["CONVOLUTION"]
    conv8 = by_kind(int8)["CONVOLUTION"]
    assert conv8 < conv32
    flops = 2.0 * 128 * 80 * 80 * 128 * 9
    assert conv8 >= flops / (PROFILE.throughput("CONVOLUTION", torch.int8) * 1e9)  # charged at int8's throughput


def test_reshape_is_a_view_and_transpose_is_not():
    net = Net()
    x = net.input("x", (8, 128, 768))
    r = net.net.add_shuffle(x)
    r.reshape_dims = (8, 128, 12, 64)
    t = net.net.add_shuffle(r.get_output(0))
    t.first_transpose = (0, 2, 1, 3)
    est = net.estimate(t.get_output(0))
    assert est.kernels == 1 and est.by_layer[0][1] == "SHUFFLE"


def test_pointwise_after_a_reshape_still_fuses():
    net = Net()
    y = net.conv(net.input("x", (1, 64, 56, 56)), 64)
    r = net.net.add_shuffle(y)
    r.reshape_dims = (1, 64, 56 * 56)
    out = net.net.add_activation(r.get_output(0), trt.ActivationType.RELU).get_output(0)
    est = net.estimate(out)
    assert est.kernels == 1 and est.fused == 1


def test_a_gather_reads_the_rows_it_selects_not_its_table():
    net = Net()
    table = net.const(np.zeros((30522, 768), dtype=np.float32))
    ids = net.net.add_input("ids", trt.DataType.INT32, (8, 128))
    net.inputs["ids"] = torch.randint(0, 30522, (8, 128), dtype=torch.int32)
    est = net.estimate(net.net.add_gather(table, ids, 0).get_output(0))
    rows = 8 * 128 * 768 * 4
    assert est.ms == pytest.approx(PROFILE.predict("GATHER", 0, 2 * rows + 8 * 128 * 4))
