"""INT8 and discrete protection end to end: calibrate, place per node by measured error, build on TensorRT-RTX, verify.

Real everything: torch.export, the catalog on SQLite, TensorRT-RTX builds, the reference interpreter."""

import json

import pytest
import torch
from torch import nn

from opmap.checking.verify import draw_inputs
from tests.conftest import export_to


class Threshold(nn.Module):
    """A linear layer whose outputs sit just above 0 in some channels (a threshold at 0 follows): INT8 flips them."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(64, 16)
        with torch.no_grad():
            margin = torch.full((16,), 10.0)
            margin[:8] = 1e-5  # half the channels: 1e-5 above the threshold on the calibration batches' first input
            self.lin.bias.copy_(margin - self.lin.weight @ x0[0])

    def forward(self, x):
        y = self.lin(x)
        return y > 0, y


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, image):
        return self.fc(self.features(image).mean((2, 3)))


@pytest.fixture(scope="module")
def threshold_pt2(tmp_path_factory):
    x = torch.randn(1, 64)
    path = export_to(tmp_path_factory.mktemp("m") / "thr.pt2", Threshold(x), x)
    from opmap.loading.capture import capture

    x0 = draw_inputs(capture(path).graph, 0)[0]["x"]  # the first generated batch: rebuild with the margin on it
    return export_to(tmp_path_factory.mktemp("m") / "thr.pt2", Threshold(x0), x0)


def test_int8_needs_a_calibration(cli, threshold_pt2):
    r = cli("suggest", threshold_pt2, "--backend", "tensorrt_rtx", "--precision", "int8")
    assert r.code == 2 and "opmap calibrate" in r.err


def test_calibrate_refuses_bad_data(cli, threshold_pt2, tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save([{"x": torch.zeros(1, 3)}], bad)
    r = cli("calibrate", threshold_pt2, "--data", bad)
    assert r.code == 2 and "dim 1 is 3" in r.err
    assert cli("calibrate", threshold_pt2).code == 2  # neither --data nor --generate


def test_calibrate_from_data_stores_ranges(cli, threshold_pt2, tmp_path):
    data = tmp_path / "cal"
    data.mkdir()
    for i in range(2):
        torch.save({"x": torch.randn(1, 64)}, data / f"b{i}.pt")
    r = cli("calibrate", threshold_pt2, "--data", data, "--json")
    assert r.code == 0, r.err + r.out
    info = json.loads(r.out)
    assert info["batches"] == 2 and not info["generated"]
    lin = [w for name, w in info["ranges"]["weights"].items() if name.endswith("weight")][0]
    assert len(lin["channels"]) == 16 and max(lin["channels"]) == pytest.approx(lin["amax"])
    act = info["ranges"]["activations"]["x"]
    assert 0 < act["percentile"] <= act["amax"]


def test_protection_keeps_the_threshold_exact_and_int8_flips_it_without(cli, threshold_pt2):
    assert cli("calibrate", threshold_pt2, "--generate", "2").code == 0
    protected = cli("verify", threshold_pt2, "--backend", "tensorrt_rtx", "--precision", "int8", "--json")
    unprotected = cli("verify", threshold_pt2, "--backend", "tensorrt_rtx", "--precision", "int8", "--no-protect-discrete", "--json")
    p, u = json.loads(protected.out), json.loads(unprotected.out)
    assert protected.code == 0 and p["discrete"]["outputs"] == 1 and p["discrete"]["agree"] == 1
    assert unprotected.code == 1 and u["discrete"]["agree"] == 0 and u["discrete"]["items"][0]["mismatched"] > 0
    plan = json.loads(cli("suggest", threshold_pt2, "--backend", "tensorrt_rtx", "--precision", "int8", "--json").out)
    (lin,) = [n for n in plan["nodes"] if n["op"] == "aten.linear.default"]
    assert lin["choice"]["precision"] is None and "discrete protection" in lin["choice"]["precision_why"]
    plan = json.loads(cli("suggest", threshold_pt2, "--backend", "tensorrt_rtx", "--precision", "int8", "--no-protect-discrete",
                          "--json").out)
    (lin,) = [n for n in plan["nodes"] if n["op"] == "aten.linear.default"]
    assert lin["choice"]["precision"] == "int8" and "measured error" in lin["choice"]["precision_why"]


def test_cnn_builds_in_int8_and_verifies(cli, tmp_path, db_url):
    from opmap.db import Catalog

    model = export_to(tmp_path / "cnn.pt2", SmallCNN(), torch.randn(1, 3, 16, 16))
    assert cli("calibrate", model, "--generate", "2").code == 0
    built = cli("build", model, "-o", tmp_path / "cnn.engine", "--backend", "tensorrt_rtx", "--precision", "int8", "--json")
    assert built.code == 0, built.err
    placed = json.loads(built.out)["node_precision"]
    assert sum(1 for v in placed.values() if v == "int8") >= 2  # the convolutions (and the linear where it fits)
    r = cli("verify", model, "--backend", "tensorrt_rtx", "--precision", "int8", "--json")
    assert r.code == 0, r.err + r.out
    assert cli("suggest", model, "--backend", "tensorrt_rtx", "--precision", "int8").code == 0
    catalog = Catalog(db_url)
    run = catalog.run(max(r.id for r in catalog.runs()))
    assert any(d.precision == "int8" and "measured error" in d.precision_why for d in run.decisions)


def test_end_to_end_check_demotes_int8_nodes_whose_outputs_miss(cli, tmp_path, monkeypatch):
    """With a margin no INT8 network meets, every round of the end-to-end check moves INT8 nodes back, and says why."""
    from opmap.checking import int8

    model = export_to(tmp_path / "cnn.pt2", SmallCNN(), torch.randn(1, 3, 16, 16))
    assert cli("calibrate", model, "--generate", "2").code == 0
    monkeypatch.setattr(int8, "FIT_MARGIN", 1e-9)
    built = cli("build", model, "-o", tmp_path / "cnn.engine", "--backend", "tensorrt_rtx", "--precision", "int8", "--json")
    assert built.code == 0, built.err
    plan = json.loads(built.out)["plan"]
    assert not [n for n in plan if n.get("precision") == "int8"]
    demoted = [n for n in plan if "INT8 end to end" in (n.get("precision_why") or "")]
    assert {n["op"] for n in demoted} >= {"aten.conv2d.default"} and all("exceeded" in n["precision_why"] for n in demoted)


@pytest.mark.parametrize("precision, reason", [("fp8", "SM89"), ("int4", "cannot check it")])
def test_fp8_and_int4_are_refused_with_the_reason(cli, threshold_pt2, tmp_path, precision, reason):
    for command in (["suggest"], ["build", "-o", tmp_path / "e"], ["verify"]):
        r = cli(*command, threshold_pt2, "--backend", "tensorrt_rtx", "--precision", precision)
        assert r.code == 2 and reason in r.err and "Traceback" not in r.err, (command, r.err)


def _matmul_network(trt, weight_dtype):
    """x[16,64] @ w[64,32] with Q/DQ on both (FP8), or an INT4 weight dequantized per 32-element block (weight-only)."""
    import numpy as np

    from opmap.building.backend import logger, strongly_typed_network

    builder = trt.Builder(logger(trt))
    net = strongly_typed_network(trt, builder)
    keep = []

    def const(a):
        keep.append(a)
        return net.add_constant(a.shape, trt.Weights(a)).get_output(0)

    x = net.add_input("x", trt.float16, (16, 64))
    if weight_dtype == "fp8":
        s = const(np.array(0.05, np.float16))
        w = const(np.random.default_rng(0).standard_normal((64, 32)).astype(np.float16))
        xq = net.add_dequantize(net.add_quantize(x, s, trt.fp8).get_output(0), s, trt.float16).get_output(0)
        wq = net.add_dequantize(net.add_quantize(w, s, trt.fp8).get_output(0), s, trt.float16).get_output(0)
        out = net.add_matrix_multiply(xq, trt.MatrixOperation.NONE, wq, trt.MatrixOperation.NONE)
    else:
        q = np.random.default_rng(0).integers(-8, 8, size=(32, 64)).astype(np.int8)
        packed = ((q[:, 0::2] & 0xF) | ((q[:, 1::2] & 0xF) << 4)).astype(np.uint8)  # two INT4 per byte
        keep.append(packed)
        w = net.add_constant((32, 64), trt.Weights(trt.int4, packed.ctypes.data, 32 * 64)).get_output(0)
        wq = net.add_dequantize(w, const(np.full((32, 2), 0.01, np.float16)), trt.float16).get_output(0)
        out = net.add_matrix_multiply(x, trt.MatrixOperation.NONE, wq, trt.MatrixOperation.TRANSPOSE)
    net.mark_output(out.get_output(0))
    return builder, net, keep


@pytest.mark.parametrize("kind, builds_for, fails_for", [("fp8", "SM89", "SM86"), ("int4", "SM80", "SM75")])
def test_the_refusal_reasons_hold_on_tensorrt_rtx(kind, builds_for, fails_for):
    """The facts NOT_PLACED states: FP8 builds only for SM89+, INT4 weight-only builds (SM80+) — real AOT builds."""
    from opmap.building.backend import import_backend

    trt = import_backend("tensorrt_rtx")
    results = {}
    for target in (builds_for, fails_for):
        builder, net, _keep = _matmul_network(trt, kind)
        config = builder.create_builder_config()
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, target), 0)
        results[target] = builder.build_serialized_network(net, config) is not None
    assert results == {builds_for: True, fails_for: False}


class Conv1DProjection(nn.Module):
    """GPT-2's Conv1D: a [K, N] weight, ``addmm(bias, x, weight)``; one column scaled far beyond the others."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.weight = nn.Parameter(torch.randn(32, 24) * 0.1)
        with torch.no_grad():
            self.weight[:, 0] *= 50.0  # per tensor, this column's range would swamp the other 23
        self.bias = nn.Parameter(torch.zeros(24))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, 32), self.weight).view(x.shape[0], -1, 24)


def test_addmm_weights_are_quantized_per_output_column(cli, tmp_path):
    model = export_to(tmp_path / "proj.pt2", Conv1DProjection(), torch.randn(2, 8, 32))
    cal = json.loads(cli("calibrate", model, "--generate", "2", "--json").out)
    w = cal["ranges"]["weights"]["p_weight"]
    assert len(w["columns"]) == 24 and max(w["columns"]) == pytest.approx(w["amax"])
    built = cli("build", model, "-o", tmp_path / "p.engine", "--backend", "tensorrt_rtx", "--precision", "int8", "--json")
    assert built.code == 0, built.err
    (addmm,) = [n for n in json.loads(built.out)["plan"] if n["op"] == "aten.addmm.default"]
    assert addmm["precision"] == "int8" and "mat2 per output column x24" in addmm["precision_why"]
    r = cli("verify", model, "--backend", "tensorrt_rtx", "--precision", "int8", "--json")
    assert r.code == 0 and json.loads(r.out)["ok"], r.out


# -- placement: one Quantize per tensor, INT8 chains, residual adds in the convolution's epilogue ------------------------
class SharedInput(nn.Module):
    """Three projections of one tensor (as Q, K and V read one layer-norm output)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)

    def forward(self, x):
        return self.q(x) * self.k(x) + self.v(x)


class ConvChain(nn.Module):
    """conv -> relu -> conv, or with a max pooling before the second convolution."""

    def __init__(self, pool: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pool = pool
        self.a, self.b = nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(nn.functional.max_pool2d(h, 2) if self.pool else h)


class Residual(nn.Module):
    """A ResNet basic block: conv -> bn -> relu -> conv -> bn, + the block input, relu; then a convolution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a, self.b = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn_a, self.bn_b = nn.BatchNorm2d(16), nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        y = torch.relu(self.bn_b(self.b(torch.relu(self.bn_a(self.a(h))))) + h)
        return self.head(y)


def _int8_network(tmp_path, module, example):
    """Calibrate (2 generated batches), plan for INT8 and build the network for real: (plan, built, captured)."""
    from opmap import service as svc
    from opmap.calibration import calibrate
    from opmap.building.backend import profile
    from opmap.building.builder import build_network, serialize
    from opmap.loading.capture import capture
    from opmap.planning.fixtures import Settings

    path = export_to(tmp_path / "m.pt2", module, example)
    catalog, ruleset = svc.open_catalog(str(tmp_path / "c.db"))
    captured = capture(path)
    calibrate(catalog, captured, str(path), generate=2)
    plan = svc.make_plan(captured, catalog, ruleset, profile("tensorrt_rtx"), Settings(tolerance=1e-2, precision="int8"),
                         for_build=True)
    built = serialize(build_network(plan, captured.program, ruleset.strategies, precision="int8"))
    return plan, built, captured


def _layers(built, kind):
    net = built.network
    return [net.get_layer(i) for i in range(net.num_layers) if net.get_layer(i).type.name == kind]


def test_a_tensor_read_by_several_int8_nodes_is_quantized_once(tmp_path):
    plan, built, captured = _int8_network(tmp_path, SharedInput(), torch.randn(4, 32))
    assert sum(1 for n in plan.nodes if n.precision == "int8") == 3
    activations = [q for q in _layers(built, "QUANTIZE") if q.get_input(0).name == "x"]
    assert len(activations) == 1  # one Quantize of x (and one Dequantize of it) for q, k and v
    assert len([d for d in _layers(built, "DEQUANTIZE") if d.get_input(0).name == activations[0].get_output(0).name]) == 1
    assert not _layers(built, "CAST") or all(c.get_input(0).name != "x" for c in _layers(built, "CAST"))
    from opmap.checking.verify import verify_built

    report = verify_built(built, captured.program, draw_inputs(captured.graph, 0)[0], precision="int8")
    assert report.ok, [o.note for o in report.outputs]


def test_a_conv_relu_conv_chain_stays_int8_between_the_convolutions(tmp_path):
    """conv -> relu -> conv: the relu's output is quantized once, in the first convolution's kernel (its epilogue), and
    the second reads INT8 and computes in INT8 — no float round trip, no cast, between the two."""
    from opmap.checking.costmodel import DeviceProfile, estimate
    from opmap.building.fusion import Fusion

    plan, built, captured = _int8_network(tmp_path, ConvChain(), torch.randn(2, 8, 16, 16))
    assert [n.precision for n in plan.nodes if n.node.op == "aten.conv2d.default"] == ["int8", "int8"]
    inputs = draw_inputs(captured.graph, 0)[0]
    est = estimate(built, inputs, DeviceProfile.load())
    kernels = [(kind, name) for name, kind, _ms in est.by_layer if "(fused)" not in kind]
    # the input's Q and two convolutions: any cast (to the relu's precision, to the output's dtype) and the relu's Q
    # run in the first convolution's epilogue
    assert [k for k, _ in kernels] == ["QUANTIZE", "CONVOLUTION", "CONVOLUTION"], kernels
    relu = built.node_tensors["relu"][0]
    assert len([q for q in _layers(built, "QUANTIZE") if q.get_input(0).name == relu]) == 1
    fusion = Fusion(built.network)
    (second,) = [c for c in _layers(built, "CONVOLUTION") if "conv2d_1" in c.name]
    assert fusion.compute_dtype(second, [], torch.float16) == torch.int8
    from opmap.checking.verify import verify_built

    assert verify_built(built, captured.program, inputs, precision="int8").ok


def test_a_max_pool_between_int8_convolutions_runs_on_int8(tmp_path):
    """conv -> relu -> max pool -> conv: the pooling reads through Q/DQ at its output's scale (exact: max commutes with
    the quantization), so the Quantize runs in the first convolution's epilogue and the pooling reads INT8."""
    from opmap.checking.costmodel import DeviceProfile, estimate

    plan, built, captured = _int8_network(tmp_path, ConvChain(pool=True), torch.randn(2, 8, 16, 16))
    (pool,) = [n for n in plan.nodes if n.node.op == "aten.max_pool2d.default"]
    assert list(pool.quant) == ["self"] and "runs on INT8" in pool.precision_why, pool.precision_why
    inputs = draw_inputs(captured.graph, 0)[0]
    est = estimate(built, inputs, DeviceProfile.load())
    kernels = [kind for _name, kind, _ms in est.by_layer if "(fused)" not in kind]
    assert kernels == ["QUANTIZE", "CONVOLUTION", "POOLING", "CONVOLUTION"], kernels  # the image's Q only
    from opmap.checking.verify import verify_built

    assert verify_built(built, captured.program, inputs, precision="int8").ok


def test_a_residual_add_joins_the_convolution_epilogue_through_a_dequantize(tmp_path):
    plan, built, captured = _int8_network(tmp_path, Residual().eval(), torch.randn(2, 3, 16, 16))
    (add,) = [n for n in plan.nodes if n.node.op == "aten.add.Tensor"]
    assert add.quant and "residual" in add.precision_why, add.precision_why
    (ew,) = [layer for layer in _layers(built, "ELEMENTWISE") if layer.name.startswith("add/")]
    residual = [built.network.get_layer(i) for i in range(built.network.num_layers)
                if built.network.get_layer(i).get_output(0).name in {ew.get_input(j).name for j in range(2)}]
    assert "DEQUANTIZE" in {layer.type.name for layer in residual}
    # the block input h is quantized once: for convolution a and for the residual
    (relu,) = [n for n in captured.graph if n.name == "relu"]
    h = built.node_tensors[relu.name][0]
    assert len([q for q in _layers(built, "QUANTIZE") if q.get_input(0).name == h]) == 1
    from opmap.checking.costmodel import DeviceProfile, estimate
    from opmap.checking.verify import verify_built

    inputs = draw_inputs(captured.graph, 0)[0]
    est = estimate(built, inputs, DeviceProfile.load())
    assert [kind for _n, kind, _ms in est.by_layer if "(fused)" not in kind].count("QUANTIZE") == 1  # the image's only
    assert verify_built(built, captured.program, inputs, precision="int8").ok


def _hand_network(residual_quantized: bool):
    """conv -> add(residual) -> relu -> Q -> DQ -> conv, written with INetworkDefinition directly (as an ONNX parser
    would): the fusion rules read the structure, not opmap's names."""
    import numpy as np

    from opmap.building.backend import import_backend, logger, strongly_typed_network

    trt = import_backend("tensorrt_rtx")
    net = strongly_typed_network(trt, trt.Builder(logger(trt)))
    keep = []

    def const(a):
        keep.append(a)
        return net.add_constant(a.shape, trt.Weights(a)).get_output(0)

    def qdq(t, scale):
        s = const(np.array(scale, np.float16))
        return net.add_dequantize(net.add_quantize(t, s, trt.int8).get_output(0), s, trt.float16).get_output(0)

    def conv(t):  # t dequantized from INT8
        w = qdq(const(np.random.default_rng(0).standard_normal((8, 8, 3, 3)).astype(np.float16)), 0.02)
        layer = net.add_convolution_nd(t, 8, (3, 3), trt.Weights(), trt.Weights())
        layer.set_input(1, w)
        layer.padding_nd = (1, 1)
        return layer.get_output(0)

    x = net.add_input("x", trt.float16, (1, 8, 8, 8))
    xq = qdq(x, 0.05)
    y = net.add_activation(net.add_elementwise(conv(xq), xq if residual_quantized else x, trt.ElementWiseOperation.SUM).get_output(0),
                           trt.ActivationType.RELU).get_output(0)
    net.mark_output(conv(qdq(y, 0.05)))
    return trt, net, keep


@pytest.mark.parametrize("residual_quantized", [True, False])
def test_fusion_folds_the_quantize_into_a_conv_epilogue_only_with_a_quantized_residual(residual_quantized):
    """TensorRT's rule: a float residual keeps the fused convolution's output float, so the next Quantize runs as a kernel
    of its own; with the residual dequantized from INT8 the whole conv -> add -> relu -> Q is one kernel."""
    from types import SimpleNamespace

    from opmap.checking.costmodel import DeviceProfile, estimate

    trt, net, _keep = _hand_network(residual_quantized)
    est = estimate(SimpleNamespace(network=net, trt=trt, attention={}, layer_map={}), {"x": torch.randn(1, 8, 8, 8).half()},
                   DeviceProfile.load())
    standalone = [name for name, kind, _ms in est.by_layer if kind == "QUANTIZE"]
    assert len(standalone) == (1 if residual_quantized else 2), est.by_layer  # x's Q; + the Q after the float add
