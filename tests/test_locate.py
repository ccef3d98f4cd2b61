"""verify --locate names the node a mismatch starts at; build refuses to write an engine its reference check finds
wrong. The wrong node is planted: a user rule (tests/planted/rule_planted.py) whose emitter adds a custom op's bias
twice, so only a comparison with PyTorch can tell."""

import json
import sys

import pytest
import torch
from torch import nn

import opmap
from tests.conftest import ROOT, export_to

PLANTED = ROOT / "tests" / "planted"


@pytest.fixture
def offset(cli):
    """The custom op, and the planted rule for it in the test's catalog (the only strategy that maps the op)."""
    sys.path.insert(0, str(PLANTED))
    try:
        from planted_op import offset as op  # the same module name the rule imports: registered once
    finally:
        sys.path.remove(str(PLANTED))
    added = cli("rules", "add", PLANTED / "rule_planted.py", "--no-measure")
    assert added.code == 0, added.err
    return op


class Planted(nn.Module):
    def __init__(self, op, bias: float) -> None:
        super().__init__()
        self.op, self.bias = op, bias
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.tanh(self.op(torch.relu(self.fc1(x)), self.bias)))


class Block(nn.Module):
    """Doubles its input exactly (weight 2*I) plus a small bias; block 0 also carries the planted offset."""

    def __init__(self, op=None, bias: float = 0.0) -> None:
        super().__init__()
        self.op, self.bias = op, bias
        self.fc = nn.Linear(8, 8)
        with torch.no_grad():
            self.fc.weight.copy_(2 * torch.eye(8))
            self.fc.bias.copy_(torch.linspace(-1e-3, 1e-3, 8))

    def forward(self, h):
        h = self.fc(h)
        return self.op(h, self.bias) if self.op is not None else h


class Deep(nn.Module):
    """Four blocks on a small signal (|h| < 0.1): an error of 2e-5 added in block 0 doubles with every block, while
    the tolerance (1e-4 + 1e-4 * |value|) barely grows: 0.2x tolerance after block 0, beyond it only after block 3."""

    def __init__(self, op) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(op, 2e-5)] + [Block() for _ in range(3)])

    def forward(self, x):
        h = x * 0.01
        for block in self.blocks:
            h = block(h)
        return h


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(y).softmax(-1)


def test_locate_names_the_planted_wrong_emitter(cli, offset, tmp_path):
    model = export_to(tmp_path / "planted.pt2", Planted(offset, 0.5).eval(), torch.randn(2, 8))
    r = cli("verify", model, "--locate", "--json")
    assert r.code == 1, r.err
    found = json.loads(r.out)["locate"]
    node = found["node"]
    assert node["op"] == "opmap_test.offset.default" and node["strategy"] == "planted/offset-twice"
    assert found["first_beyond"]["name"] == node["name"]  # it is the first node off, and off by its own doing
    assert node["args"]["bias"] == 0.5 and node["args"]["x"].endswith("float32[2, 16]")
    assert node["max_abs_err"] == pytest.approx(0.5, rel=1e-5) and not node["local"]["ok"]
    assert node["inputs_not_compared"] == [] and found["runtime"] == "reference" and found["point"] == "static"
    assert "computes the wrong thing" in found["why"]

    text = cli("verify", model, "--locate")
    assert text.code == 1
    assert f"diverging node: {node['name']}" in text.out and "via planted/offset-twice" in text.out
    assert "bias = 0.5" in text.out


def test_locate_names_a_small_error_that_crosses_tolerance_blocks_later(cli, offset, tmp_path):
    model = export_to(tmp_path / "deep.pt2", Deep(offset).eval(), torch.randn(2, 8))
    report = opmap.verify(str(model), locate=True)
    assert not report.ok
    found = report.locate
    node, first = found["node"], found["first_beyond"]
    # the output is the first node beyond tolerance; it only passes on what came in
    assert first["name"] != node["name"] and first["stack"].startswith("blocks.3") and first["local"]["ok"]
    # the planted node: within tolerance where it stands, yet the only node adding an error of its own
    assert node["strategy"] == "planted/offset-twice" and node["stack"].startswith("blocks.0")
    assert node["ok"] and 0.05 < node["local"]["tolerance_ratio"] < 1
    assert node["local"]["max_abs_err"] == pytest.approx(2e-5, rel=1e-2)
    assert "amplifies an error that comes in from upstream" in found["why"] and node["name"] in found["why"]


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_locate_on_a_correct_model_finds_nothing(cli, tmp_path, dynamic):
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=8)}} if dynamic else None
    model = export_to(tmp_path / "small.pt2", Small().eval(), torch.randn(2, 3, 8, 8), dynamic_shapes=shapes)
    r = cli("verify", model, "--locate", "--json")
    assert r.code == 0, r.err
    found = json.loads(r.out)["locate"]
    assert found["ok"] and found["node"] is None and found["first_beyond"] is None
    assert found["compared"] >= 6 and found["point"] == ("min" if dynamic else "static")
    text = cli("verify", model, "--locate")
    assert text.code == 0 and "no node diverges" in text.out


def test_build_refuses_an_engine_its_check_finds_wrong(cli, offset, tmp_path):
    model = export_to(tmp_path / "planted.pt2", Planted(offset, 0.5).eval(), torch.randn(2, 8))
    engine = tmp_path / "planted.engine"
    r = cli("build", model, "-o", engine)
    assert r.code == 1 and not engine.exists() and not engine.with_suffix(".engine.json").exists()
    assert "engine not written" in r.err and "planted/offset-twice" in r.err and "--no-check" in r.err

    r = cli("build", model, "-o", engine, "--no-check", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["checked"] is None and engine.exists()

    with pytest.raises(opmap.OpmapError, match="engine not written") as caught:
        opmap.build(str(model))
    assert caught.value.exit_code == 1 and caught.value.checked["locate"]["node"]["strategy"] == "planted/offset-twice"
    assert opmap.build(str(model), check=False).sidecar["checked"] is None


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_build_says_where_it_checked(cli, tmp_path, dynamic):
    shapes = {"x": {0: torch.export.Dim("batch", min=1, max=8)}} if dynamic else None
    model = export_to(tmp_path / "small.pt2", Small().eval(), torch.randn(2, 3, 8, 8), dynamic_shapes=shapes)
    r = cli("build", model, "-o", tmp_path / "small.engine", "--json")
    assert r.code == 0, r.err
    checked = json.loads(r.out)["checked"]
    assert checked["ok"] is True and checked["runtime"] == "reference" and checked["outputs"] == 1
    assert (checked["point"], checked["shape"]) == (("opt", "x=4x3x8x8") if dynamic else ("static", "x=2x3x8x8"))
    text = cli("build", model, "-o", tmp_path / "small.engine")
    assert text.code == 0 and "checked at" in text.out and "agree with PyTorch" in text.out


class Selected(nn.Module):
    """A data-dependent selection (padded to a bound in the network) whose rows feed more arithmetic."""

    def forward(self, x):
        rows = torch.nonzero(x > 0)
        return rows * 2, x.relu() + 1


def test_locate_leaves_out_what_a_padded_layout_changed(cli, tmp_path):
    model = export_to(tmp_path / "sel.pt2", Selected(), torch.randn(4, 5))
    r = cli("verify", model, "--locate", "--json")
    assert r.code == 0, r.err
    found = json.loads(r.out)["locate"]
    assert found["ok"] and found["compared"] >= 2
    padded = {name for reason, names in found["skipped"].items() if "output contract" in reason for name in names}
    assert padded == {"nonzero", "mul"}  # the selection and what computes on its padded rows
