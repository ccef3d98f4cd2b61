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
H100 = DeviceProfile.load(str(__import__("opmap.data", fromlist=["x"]).__path__[0] + "/device_h100.json"))
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

    def estimate(self, *outputs, profile=None):
        for t in outputs:
            self.net.mark_output(t)
        built = SimpleNamespace(network=self.net, trt=trt, attention={}, layer_map={})
        return estimate(built, self.inputs, profile or PROFILE)


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
    """A profile measured before a number was (no int8, convolution, graph-launch, layer-norm, row-gather or attention
    rate): the nearest measured one stands in, nothing invented."""
    keep = ("launch_ms", "elementwise_gbps_fp32", "elementwise_gbps_fp16", "matmul_tflops_fp32_tf32", "matmul_tflops_fp16",
            "gather_gbps", "reduce_gbps")
    old = DeviceProfile(card="old", micro={k: H100.micro[k] for k in keep}, source="test", sm_count=None)
    assert old.throughput("MATRIX_MULTIPLY", torch.int8) == old.micro["matmul_tflops_fp16"]
    assert old.throughput("CONVOLUTION", torch.float32) == old.micro["matmul_tflops_fp32_tf32"]
    assert old.throughput("ATTENTION_OUTPUT", torch.float16) == old.micro["matmul_tflops_fp16"]
    assert old.throughput("GROUPED_CONVOLUTION", torch.float16) == old.micro["matmul_tflops_fp16"]
    assert old.bandwidth("NORMALIZATION", torch.float32) == old.bandwidth("SOFTMAX", torch.float32) == old.micro["reduce_gbps"]
    assert old.bandwidth("ROW_GATHER", torch.float16) == old.micro["elementwise_gbps_fp16"]  # a streaming pass
    assert old.launch_ms == old.micro["launch_ms"]
    # without an SM count there are no waves to quantize: flops / peak
    assert old.predict("MATRIX_MULTIPLY", 1e9, 0, torch.float16, (48, 768)) == \
        pytest.approx(old.launch_ms + 1e9 / (old.micro["matmul_tflops_fp16"] * 1e9))
    assert "H200" in PROFILE.card and PROFILE.launch_ms == PROFILE.micro["graph_launch_ms"]
    assert "H100" in H100.card and H100.sm_count == 132


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
    assert est.ms == pytest.approx(PROFILE.predict("ROW_GATHER", 0, 2 * rows + 8 * 128 * 4))


def _matmul_net(m, k, n, dtype=None):
    net = Net()
    x = net.input("x", (m, k))
    w = net.const(np.random.default_rng(0).standard_normal((n, k)).astype(np.float32))
    if dtype is not None:  # both operands in reduced precision (the weight's cast folds at build time)
        x = net.net.add_cast(x, dtype).get_output(0)
        w = net.net.add_cast(w, dtype).get_output(0)
    op = trt.MatrixOperation
    return net.estimate(net.net.add_matrix_multiply(x, op.NONE, w, op.TRANSPOSE).get_output(0))


def test_a_small_product_pays_for_a_whole_wave_of_tiles():
    """8x128 tokens x 768 -> 768 (a BERT projection at batch 8) has 8 x 6 output tiles of 128x128, fewer than the SMs:
    it takes one tile's time however few tiles there are, so doubling N costs nothing more, and it is charged well
    above flops / peak (measured on the card: bench/device/PIECES.md)."""
    half = trt.DataType.HALF
    small, wider = by_kind(_matmul_net(1024, 768, 768, half))["MATRIX_MULTIPLY"], \
        by_kind(_matmul_net(1024, 768, 1536, half))["MATRIX_MULTIPLY"]
    peak = PROFILE.throughput("MATRIX_MULTIPLY", torch.float16) * 1e9
    one_tile = 2.0 * 128 * 128 * 768 / (peak / PROFILE.sm_count)
    assert small == pytest.approx(PROFILE.launch_ms + one_tile)
    assert wider == pytest.approx(small)
    assert small > PROFILE.launch_ms + 2.5 * (2.0 * 1024 * 768 * 768 / peak)
    # a large product fills its waves: within 5% of flops / peak
    big = by_kind(_matmul_net(16384, 768, 3072, half))["MATRIX_MULTIPLY"]
    assert big == pytest.approx(PROFILE.launch_ms + 2.0 * 16384 * 768 * 3072 / peak, rel=0.05)


def test_a_convolution_is_tiled_as_its_implicit_gemm_and_a_depthwise_one_is_not():
    net = Net()  # 1x64x56x56 3x3: M = 3136 pixels -> 25 tiles, N = 64 channels -> 1 tile, K = 576
    conv = by_kind(net.estimate(net.conv(net.input("x", (1, 64, 56, 56)), 64)))["CONVOLUTION"]
    rate = PROFILE.throughput("CONVOLUTION", torch.float32) * 1e9
    assert conv == pytest.approx(PROFILE.launch_ms + 2.0 * 128 * 128 * 576 / (rate / PROFILE.sm_count))
    dw = Net()
    w = np.random.default_rng(0).standard_normal((96, 1, 7, 7)).astype(np.float32)
    layer = dw.net.add_convolution_nd(dw.input("x", (8, 96, 56, 56)), 96, (7, 7), trt.Weights(w))
    layer.num_groups, layer.padding_nd = 96, (3, 3)
    est = dw.estimate(layer.get_output(0), profile=H100)
    moved = 2 * 8 * 96 * 56 * 56 * 4  # input and output (the kernel is a weight of the layer)
    assert est.ms == pytest.approx(H100.predict("GROUPED_CONVOLUTION", 2.0 * 8 * 96 * 56 * 56 * 49, moved))
    assert "dwconv_tflops_fp32" not in H100.micro or H100.throughput("GROUPED_CONVOLUTION", torch.float32) < \
        H100.throughput("CONVOLUTION", torch.float32) / 10


def test_a_product_with_few_tiles_splits_its_reduction_over_idle_sms():
    """8x128 tokens x 3072 -> 768 (BERT's FFN down-projection at batch 8): 48 tiles on 132 SMs, K = 3072: split in two
    (each part at least 1024 long), so it costs half a tile of K = 3072; a 3x3 convolution at 7x7 with 512 channels at
    batch 8 (16 tiles, K = 4608) splits in four."""
    half = trt.DataType.HALF
    down = by_kind(_matmul_net(1024, 3072, 768, half))["MATRIX_MULTIPLY"]
    per_sm = PROFILE.throughput("MATRIX_MULTIPLY", torch.float16) * 1e9 / PROFILE.sm_count
    assert down == pytest.approx(PROFILE.launch_ms + 2.0 * 128 * 128 * 1536 / per_sm)
    net = Net()
    conv = by_kind(net.estimate(net.conv(net.input("x", (8, 512, 7, 7)), 512)))["CONVOLUTION"]
    per_sm = PROFILE.throughput("CONVOLUTION", torch.float32) * 1e9 / PROFILE.sm_count
    assert conv == pytest.approx(PROFILE.launch_ms + 2.0 * 128 * 128 * 1152 / per_sm)


def test_a_stem_convolution_pads_its_three_channels_to_eight():
    net = Net()
    w = np.random.default_rng(0).standard_normal((64, 3, 7, 7)).astype(np.float32)
    layer = net.net.add_convolution_nd(net.input("x", (8, 3, 224, 224)), 64, (7, 7), trt.Weights(w))
    layer.stride_nd, layer.padding_nd = (2, 2), (3, 3)
    conv = by_kind(net.estimate(layer.get_output(0)))["CONVOLUTION"]
    per_sm = PROFILE.throughput("CONVOLUTION", torch.float32) * 1e9 / PROFILE.sm_count
    tiles = -(-8 * 112 * 112 // 128)  # 784 tiles of output pixels, one of channels
    assert conv == pytest.approx(PROFILE.launch_ms + -(-tiles // PROFILE.sm_count) * 2.0 * 128 * 128 * 8 * 49 / per_sm)


def test_row_kernels_have_their_own_rates():
    """Layer norm and softmax are charged at the rates measured for them (and a reduction's fixed cost where measured),
    a gather of columns of a hidden state (each row read from cache) at the streaming gather rate, and a gather of
    single elements scattered over a large tensor at the random-access rate, several times slower."""
    PROFILE = H100  # noqa: N806  (the profile that measured these rates)
    assert {"norm_gbps", "softmax_gbps", "row_gather_gbps"} <= set(PROFILE.micro)
    launch = max(PROFILE.launch_ms, PROFILE.micro.get("reduce_launch_ms", 0.0))
    net = Net()
    x = net.input("x", (8, 128, 768))
    scale, bias = (net.const(np.ones((1, 1, 768), dtype=np.float32)) for _ in range(2))
    norm = net.net.add_normalization(x, scale, bias, 1 << 2).get_output(0)
    sm = net.net.add_softmax(x)
    sm.axes = 1 << 2
    est = net.estimate(norm, sm.get_output(0), profile=PROFILE)
    e = 8 * 128 * 768 * 4
    assert by_kind(est)["NORMALIZATION"] == pytest.approx(launch + (2 * e + 2 * 768 * 4) / (PROFILE.micro["norm_gbps"] * 1e6))
    assert by_kind(est)["SOFTMAX"] == pytest.approx(launch + 2 * e / (PROFILE.micro["softmax_gbps"] * 1e6))

    def gather(shape, axis, n):
        g = Net()
        x = g.input("x", shape)
        idx = g.net.add_input("idx", trt.DataType.INT32, (n,))
        g.inputs["idx"] = torch.randint(0, shape[axis], (n,), dtype=torch.int32)
        return g.estimate(g.net.add_gather(x, idx, axis).get_output(0), profile=PROFILE).ms

    moved = 2 * 1024 * 768 * 4 + 768 * 4
    assert gather((1024, 768), 1, 768) == pytest.approx(PROFILE.predict("ROW_GATHER", 0, moved))  # spans 3 KB a row
    scattered = gather((1 << 20,), 0, 1 << 18)  # single elements over 4 MB
    assert scattered == pytest.approx(PROFILE.predict("GATHER", 0, 3 * 4 * (1 << 18)))
    assert PROFILE.micro["gather_gbps"] < PROFILE.micro["row_gather_gbps"] / 2


def test_a_gather_of_narrow_single_elements_is_charged_per_element():
    """Gathering fp16 columns (one element per index) took about as long on the card as gathering fp32 ones: such a
    gather is charged 4 bytes an element; a gather of fp16 rows is charged its bytes."""
    def gather(shape, axis, n, dtype):
        g = Net()
        x = g.net.add_input("x", dtype, shape)
        g.inputs["x"] = torch.randn(*shape).to(torch.float16 if dtype == trt.DataType.HALF else torch.float32)
        idx = g.net.add_input("idx", trt.DataType.INT32, (n,))
        g.inputs["idx"] = torch.randint(0, shape[axis], (n,), dtype=torch.int32)
        return g.estimate(g.net.add_gather(x, idx, axis).get_output(0), profile=H100).ms

    columns = [gather((16384, 768), 1, 768, dt) for dt in (trt.DataType.HALF, F32)]
    assert columns[0] == pytest.approx(columns[1], rel=0.02)  # the index bytes (int32) are the same in both
    rows = [gather((16384, 768), 0, 4096, dt) for dt in (trt.DataType.HALF, F32)]
    assert rows[0] < 0.6 * rows[1]


def test_attention_costs_the_cheaper_of_fused_and_decomposed():
    """IAttention at 8x12x512x64 costs the cheaper of its fused kernel and Q·Kᵀ, softmax, ·V: in fp16 the fused kernel
    (SDPA's measured rate) by far; in fp32, where SDPA's kernel runs at a tenth of TF32, the two are close (measured on
    the H100: 0.21 ms fused, 0.25 ms decomposed; bench/device/PIECES.md) and the decomposition is charged."""
    def attention(dtype):
        net = Net()
        q, k, v = (net.net.add_input(n, dtype, (8, 12, 512, 64)) for n in "qkv")
        net.inputs.update({n: torch.randn(8, 12, 512, 64) for n in "qkv"})
        attn = net.net.add_attention(q, k, v, trt.AttentionNormalizationOp.SOFTMAX, False)
        attn.decomposable, attn.name = True, "attention"
        net.net.mark_output(attn.get_output(0))
        built = SimpleNamespace(network=net.net, trt=trt, attention={attn.name: attn}, layer_map={})
        return by_kind(estimate(built, net.inputs, H100))["ATTENTION_OUTPUT"]

    flops = 4.0 * 8 * 12 * 512 * 512 * 64
    fused16 = attention(trt.DataType.HALF)
    assert fused16 == pytest.approx(H100.launch_ms + flops / (H100.micro["attention_tflops_fp16"] * 1e9), rel=0.05)
    fp32 = attention(F32)
    assert fp32 < flops / (H100.micro["attention_tflops_fp32"] * 1e9)  # the decomposition, not the fp32 kernel
    scores = 8 * 12 * 512 * 512 * 4
    assert fp32 > 2 * scores / (H100.micro["softmax_gbps"] * 1e6)  # ... which writes and reads the scores


def test_shape_arithmetic_runs_on_the_host_and_a_fill_of_its_size_does_not():
    net = Net()
    x = net.input("x", (8, 128, 768))
    shape = net.net.add_shape(x).get_output(0)  # Int64 [3]
    idx = net.const(np.array([0, 1], dtype=np.int64))
    lead = net.net.add_gather(shape, idx, 0).get_output(0)
    two = net.const(np.array([2], dtype=np.int64))
    doubled = net.net.add_elementwise(lead, net.const(np.array([1, 2], dtype=np.int64)),
                                      trt.ElementWiseOperation.PROD).get_output(0)
    half = net.net.add_elementwise(net.net.add_gather(shape, net.const(np.array([2], dtype=np.int64)), 0).get_output(0),
                                   two, trt.ElementWiseOperation.FLOOR_DIV).get_output(0)
    dims = net.net.add_concatenation([doubled, half]).get_output(0)
    r = net.net.add_shuffle(x)
    r.set_input(1, dims)
    fill = net.net.add_fill((1,), trt.FillOperation.LINSPACE, F32)
    fill.set_input(0, dims)
    fill.set_input(1, net.const(np.array(0.0, dtype=np.float32)))
    fill.set_input(2, net.const(np.array([0.0, 0.0, 1.0], dtype=np.float32)))
    est = net.estimate(r.get_output(0), fill.get_output(0))
    charged = [label for _, label, _ in est.by_layer]
    assert not any(k in label for label in charged for k in ("ELEMENTWISE", "GATHER", "CONCATENATION")), charged
    assert "FILL" in charged  # writes 8 x 256 x 384 floats at run time


def test_a_gemm_sweep_sets_the_int8_rates_of_a_profile(tmp_path):
    """bench/device/apply_sweep.py: a sweep's int8/fp16 ratio becomes the profile's, its int8 matrix and convolution
    rates the profile's own fp16 rates times it, and the method names where the ratio came from — once, however often
    it is applied."""
    import importlib.util
    import json
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("apply_sweep", root / "bench" / "device" / "apply_sweep.py")
    apply_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(apply_sweep)
    profile = tmp_path / "device.json"
    shutil.copy(root / "opmap" / "data" / "device_h200.json", profile)
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"card": "NVIDIA H100 80GB HBM3", "torch": "t", "triton": "x", "size": 8192,
                                 "cublas": {"fp16": 700.0, "int8": 800.0},
                                 "best": {"int8": {"tops": 1400.0}, "fp16": {"tops": 650.0}},
                                 "summary": {"int8_over_fp16_matrix": 2.0}}))
    for _ in range(2):
        apply_sweep.apply(str(sweep), [str(profile)])
    data = json.loads(profile.read_text())
    micro = data["micro"]
    assert micro["int8_over_fp16_matrix"] == 2.0
    assert micro["matmul_tflops_int8"] == 2.0 * micro["matmul_tflops_fp16"]
    assert micro["conv_tflops_int8"] == 2.0 * micro["conv_tflops_fp16"]
    assert data["method"].count("int8 rates (") == 1 and "a lent NVIDIA H100 80GB HBM3" in data["method"]
    loaded = DeviceProfile.load(str(profile))
    assert loaded.throughput("CONVOLUTION", torch.int8) == 2.0 * loaded.throughput("CONVOLUTION", torch.float16)
