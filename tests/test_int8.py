"""INT8 and discrete protection end to end: calibrate, place per node by measured error, build on TensorRT-RTX, verify.

Real everything: torch.export, the catalog on SQLite, TensorRT-RTX builds, the reference interpreter."""

import json

import pytest
import torch
from torch import nn

from opmap.engine.verify import draw_inputs
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
    from opmap.engine.capture import capture

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
