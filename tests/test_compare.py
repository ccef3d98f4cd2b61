"""opmap compare: the ONNX route (dynamo export -> TensorRT-RTX's ONNX parser -> build) beside opmap's, for real."""

import json
import os
import subprocess
import sys

import torch

from tests.conftest import ROOT, export_to


class Det(torch.nn.Module):
    def forward(self, x):
        return torch.linalg.det(x) + 1


class Spectrum(torch.nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3))).softmax(-1)


def test_export_failure_is_traced_to_its_aten_node(cli, detector_pt2):
    r = cli("compare", detector_pt2, "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["routes"]["opmap"]["ok"] and data["routes"]["opmap"]["engine_bytes"] > 0
    onnx = data["routes"]["onnx"]
    assert not onnx["ok"] and onnx["stage"] == "export" and "torch.onnx dynamo" in onnx["exporter"]
    by_name = {n["name"]: n for n in data["nodes"]}
    failing = by_name["fractional_max_pool2d"]
    assert failing["onnx"]["stage"] == "export" and "aten.fractional_max_pool2d" in failing["onnx"]["message"]
    assert failing["opmap"]["strategy"] and failing["opmap"]["kind"]
    assert {n["onnx"]["stage"] for n in data["nodes"] if n["name"] != "fractional_max_pool2d"} == {"stopped"}
    assert data["summary"]["onnx"]["export"] == 1 and data["summary"]["nodes"] == len(data["nodes"])


def test_parse_failures_are_traced_through_metadata_and_decompositions(cli, tmp_path):
    det = json.loads(cli("compare", export_to(tmp_path / "det.pt2", Det(), torch.randn(2, 3, 3)), "--json").out)
    assert det["routes"]["onnx"]["stage"] == "parse" and det["routes"]["onnx"]["opset"] >= 18
    stages = {n["name"]: n["onnx"]["stage"] for n in det["nodes"]}
    assert stages["linalg_det"] == "parse" and stages["add"] == "stopped"
    assert "checkDet" in next(n for n in det["nodes"] if n["name"] == "linalg_det")["onnx"]["message"]
    # the exporter decomposes fft_rfft into _fft_r2c: from_node provenance carries the blame back
    fft = json.loads(cli("compare", export_to(tmp_path / "fft.pt2", Spectrum(), torch.randn(2, 8)), "--json").out)
    node = next(n for n in fft["nodes"] if n["name"] == "fft_rfft")
    assert node["onnx"]["stage"] == "parse" and any("DFT" in o for o in node["onnx"]["onnx_nodes"]) and not fft["unattributed"]


def test_both_routes_build_and_the_networks_agree(cli, tmp_path):
    path = export_to(tmp_path / "conv.pt2", ConvNet(), torch.randn(2, 3, 8, 8))
    r = cli("compare", path, "--json", "--check")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    for route in ("opmap", "onnx"):
        got = data["routes"][route]
        assert got["ok"] and got["layers"] > 0 and got["engine_bytes"] > 0 and got["build_seconds"] > 0, got
    assert {n["onnx"]["stage"] for n in data["nodes"]} == {"ok"}
    assert data["check"]["ran"] and data["check"]["ok"] and len(data["check"]["outputs"]) == 1
    table = cli("compare", path)
    assert "builds" in table.out and "build time opmap/onnx" in table.out


def test_without_onnx_compare_says_what_to_install(tmp_path, detector_pt2):
    fake = tmp_path / "shadow" / "onnxscript"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'shadow'}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, "-m", "opmap.cli", "--db", str(tmp_path / "c.db"), "compare", str(detector_pt2)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "pip install 'opmap[onnx]'" in proc.stderr


def test_an_export_failure_of_a_builtin_exception_is_read_through_the_exporters_colours():
    """The exporter's text (as torch 2.13 words it for T5 and Swin) colours its boilerplate and names a builtin
    exception without a module: the reason is the exception's message, never the boilerplate's first line."""
    from opmap.onnxroute import _export_failure

    text = ("Failed to decompose the FX graph for ONNX compatibility. \x1b[96mThis is step 2/3\x1b[0m of exporting the model "
            "to ONNX. Next steps:\n- Create an issue in the PyTorch GitHub repository against the \x1b[96m*torch.export*\x1b[0m "
            "component and attach the full error stack as well as reproduction scripts.\n\n## Exception summary\n\n"
            "<class 'ValueError'>: Cannot view a tensor with shape torch.Size([2, 16, 4, 16]) and strides (1024, 16, 256, 1) "
            "as a tensor with shape (2, 16, 64)!\n\nWhile executing %view_4 : [num_users=1] = call_function[...]")
    node, reason = _export_failure(RuntimeError(text))
    assert reason.startswith("Cannot view a tensor with shape") and "\x1b" not in reason


def test_both_routes_are_estimated_by_the_one_cost_model_at_served_sizes(cli, tmp_path):
    """--estimate: each route's network through the same cost model on the same inputs, fp32 and fp16, at the export's
    sizes and at the served sizes the dynamic batch allows (clamped into its range, the half program's too); both fp16
    networks come from the module cast to half."""
    batch = torch.export.Dim("batch", min=1, max=16)
    path = export_to(tmp_path / "conv.pt2", ConvNet(), torch.randn(2, 3, 8, 8), dynamic_shapes=({0: batch},))
    r = cli("compare", path, "--json", "--estimate")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["routes"]["onnx"]["ok"], data["routes"]["onnx"]
    for route in ("opmap", "onnx"):
        rows = data["routes"][route]["estimated_latency_ms"]
        assert {(e["precision"], e["at"]) for e in rows} == {("fp32", "served"), ("fp16", "served")}, rows
        assert {tuple(e["sizes"]["x"]) for e in rows} == {(8, 3, 8, 8), (16, 3, 8, 8)}  # 32 clamped to the max 16
        assert all(e["ms"] > 0 and e["kernels"] > 0 for e in rows), rows
    # fp16: both networks from the one program cast to half, both taking and returning fp16 (like for like)
    assert {e["io"] for e in data["estimates"] if e["precision"] == "fp16"} == {"fp16"}
    for e in data["estimates"]:  # both were estimated on the same inputs: a ratio, and a breakdown per ATen op
        assert e["ratio"] == round(e["opmap"]["ms"] / e["onnx"]["ms"], 3)
        assert any(k.startswith("aten.conv2d") for k in e["opmap"]["by_op"]) and e["onnx"]["by_op"]
    table = cli("compare", path, "--estimate")
    assert "estimated latency fp16 at served (x=16x3x8x8): opmap" in table.out


def test_the_half_program_leaves_the_archive_float32(tmp_path):
    """compare's fp16 re-export casts a copy of the archive's module: the archive itself (planned and checked after it)
    keeps its float32 weights."""
    from opmap.loading.capture import capture
    from opmap.onnxroute import half_program

    captured = capture(export_to(tmp_path / "conv.pt2", ConvNet(), torch.randn(2, 3, 8, 8)))
    half = half_program(captured.program, captured.graph)
    assert {p.dtype for p in half.state_dict.values() if p.is_floating_point()} == {torch.float16}
    assert {p.dtype for p in captured.program.state_dict.values() if p.is_floating_point()} == {torch.float32}
    assert captured.program.module()(torch.randn(2, 3, 8, 8)).dtype == torch.float32
