"""`opmap build`, `opmap verify` and `opmap doctor` end to end (real TensorRT-RTX builds)."""

import json

import torch

from tests.conftest import export_to
from tests.helpers import TwoLayer


def test_build_writes_engine_and_sidecar(cli, detector_pt2, tmp_path):
    engine = tmp_path / "det.engine"
    r = cli("build", detector_pt2, "-o", engine)
    assert r.code == 0, r.err
    assert engine.stat().st_size > 100_000
    side = json.loads((tmp_path / "det.engine.json").read_text())
    assert side["backend"]["name"] == "tensorrt_rtx" and side["precision"] == "fp32"
    assert {o["name"] for o in side["outputs"]} >= {"output0", "output0.count"}
    assert all(set(v) >= {"node", "strategy"} for v in side["layers"].values())
    nz = next(p for p in side["plan"] if p["node"] == "nonzero")
    assert nz["strategy"] == "nonzero/static-bound" and "padded" in nz["contract"]
    assert "extra output output0.count" in r.out


def test_verify_detector_exact_on_valid_rows(cli, detector_pt2):
    r = cli("verify", detector_pt2, "--json")
    data = json.loads(r.out)
    assert r.code == 0 and data["ok"] and data["runtime"] == "reference"
    padded = [o for o in data["outputs"] if "padded output" in o["note"]]
    assert len(padded) == 3 and all("count exact" in o["note"] for o in padded)


def test_verify_with_given_inputs_and_seed(cli, tmp_path):
    model = export_to(tmp_path / "m.pt2", TwoLayer(), torch.randn(2, 4))
    inputs = tmp_path / "inputs.pt"
    torch.save({"x": torch.randn(2, 4)}, inputs)
    assert cli("verify", model, "--inputs", inputs).code == 0
    torch.save({"y": torch.randn(2, 4)}, inputs)
    bad = cli("verify", model, "--inputs", inputs)
    assert bad.code == 2 and "no tensor for input(s) x" in bad.err


def test_precision_is_placed_per_node_by_measured_accuracy(cli, tmp_path):
    model = export_to(tmp_path / "m.pt2", TwoLayer(), torch.randn(2, 4))
    strict = json.loads(cli("suggest", model, "--json", "--precision", "fp16", "--tolerance", "1e-5").out)
    linear = next(n for n in strict["nodes"] if n["op"] == "aten.linear.default")
    assert linear["choice"]["precision"] is None and "exceeds the tolerance" in linear["choice"]["precision_why"]
    loose = json.loads(cli("suggest", model, "--json", "--precision", "fp16", "--tolerance", "0.05").out)
    linear = next(n for n in loose["nodes"] if n["op"] == "aten.linear.default")
    assert linear["choice"]["precision"] == "fp16" and "within the tolerance" in linear["choice"]["precision_why"]
    relu = next(n for n in loose["nodes"] if n["op"] == "aten.relu.default")
    assert relu["choice"]["precision"] == "fp16" and "of the output's range" in relu["choice"]["precision_why"]
    r = cli("verify", model, "--precision", "fp16", "--json")
    data = json.loads(r.out)
    assert data["ok"] and 0 < data["outputs"][0]["max_abs_err"] < 1e-2
    engine = tmp_path / "m.engine"
    assert cli("build", model, "-o", engine, "--precision", "fp16").code == 0
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side["node_precision"] == {"linear": "fp16", "relu": "fp16"}  # both fit the default 1e-3 of their range


def test_dynamic_batch_gets_a_profile(cli, tmp_path):
    batch = torch.export.Dim("batch", min=1, max=32)
    model = export_to(tmp_path / "dyn.pt2", TwoLayer(), torch.randn(2, 4), dynamic_shapes={"x": {0: batch}})
    engine = tmp_path / "dyn.engine"
    assert cli("build", model, "-o", engine).code == 0
    side = json.loads((tmp_path / "dyn.engine.json").read_text())
    assert side["inputs"]["x"]["shape"][0] == "s" + side["inputs"]["x"]["shape"][0][1:]  # symbolic
    assert cli("build", model, "-o", engine, "--shape", "x=1x4:4x4:16x4").code == 0
    assert cli("verify", model).code == 0
    bad = cli("build", model, "-o", engine, "--shape", "x=1x4:4x4")
    assert bad.code == 2 and "bad --shape" in bad.err


def test_build_refuses_unmapped_and_runtime_trt_here(cli, tmp_path, detector_pt2):
    class Det(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.det(x)

    model = export_to(tmp_path / "det.pt2", Det(), torch.randn(3, 3))
    r = cli("build", model, "-o", tmp_path / "x.engine")
    assert r.code == 1 and "cannot build: linalg_det" in r.err
    r = cli("verify", detector_pt2, "--runtime", "trt")
    assert r.code == 2 and "needs full TensorRT" in r.err
    r = cli("build", detector_pt2, "-o", tmp_path)
    assert r.code == 2 and "is a directory" in r.err


def test_doctor_says_what_this_machine_can_do(cli):
    r = cli("doctor", "--json")
    data = json.loads(r.out)
    rtx = data["backends"]["tensorrt_rtx"]
    assert rtx["installed"] and rtx["plugins"] is False
    assert rtx["probes"]["non_zero"]["ok"] is False and "no runners" in rtx["probes"]["non_zero"]["message"]
    assert data["engines_run_here"] is False and "none can be executed here" in data["summary"]
    text = cli("doctor").out
    assert "engines are built ahead-of-time" in text


def test_max_pool_indices_read_by_the_graph_get_the_strategy_that_computes_them(cli, tmp_path):
    """PoolingNd MAX yields no positions: pool/max refuses a graph that reads ``return_indices=True``'s indices, and
    pool/max-with-indices serves it (the round trip through max_unpool2d verifies), never a crash in the builder.
    When only the values are read, the single Pooling layer stays the choice."""
    class Unpool(torch.nn.Module):
        def forward(self, x):
            values, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
            return torch.nn.functional.max_unpool2d(values, indices, 2)

    class Values(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.max_pool2d(x, 2, return_indices=True)[0] * 2

    model = export_to(tmp_path / "unpool.pt2", Unpool(), torch.randn(1, 3, 8, 8))
    plan = json.loads(cli("suggest", model, "-r", "--json", "--no-record").out)
    pool = next(n for n in plan["nodes"] if n["op"] == "aten.max_pool2d_with_indices.default")
    assert pool["choice"]["strategy"] == "pool/max-with-indices"
    refused = next(v for v in pool["verdicts"] if v["strategy"] == "pool/max")
    assert refused["outcome"] == "REJECTED" and "output 1 (indices) is used by max_unpool2d" in refused["reason"]
    r = cli("verify", model)
    assert r.code == 0, r.err
    model = export_to(tmp_path / "values.pt2", Values(), torch.randn(1, 3, 8, 8))
    plan = json.loads(cli("suggest", model, "--json", "--no-record").out)
    assert next(n for n in plan["nodes"] if n["op"] == "aten.max_pool2d_with_indices.default")["choice"]["strategy"] == "pool/max"
