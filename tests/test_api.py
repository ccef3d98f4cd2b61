"""The Python API (opmap.plan / build / verify / compare): real exports, real catalogs, real TensorRT-RTX builds."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

import opmap
from tests.conftest import ROOT, export_to


class Gate(torch.nn.Module):
    def forward(self, x, scale=None):
        y = torch.relu(x) * torch.sigmoid(x).sum(-1, keepdim=True)
        return y if scale is None else y * scale


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return str(tmp_path_factory.mktemp("api") / "catalog.db")


def _strict_json(data):
    return json.loads(json.dumps(data, allow_nan=False))


def test_import_is_light():
    code = "import sys, opmap; assert opmap.plan and opmap.Plan; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt', 'tensorrt_rtx', 'sqlalchemy')))"
    bare = subprocess.run([sys.executable, "-c", "import sys, opmap; print([m for m in sys.modules if m.split('.')[0] in "
                           "('torch', 'tensorrt', 'tensorrt_rtx', 'sqlalchemy')])"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert bare.returncode == 0 and bare.stdout.strip() == "[]", bare.stderr
    used = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120)
    assert used.returncode == 0 and "tensorrt" not in used.stdout, used.stderr  # the API module itself pulls no backend


def test_plan_of_a_module_with_keyword_inputs(db):
    plan = opmap.plan(Gate(), {"x": torch.randn(2, 8), "scale": torch.randn(8)}, db=db)
    assert isinstance(plan, opmap.Plan) and plan.complete and plan.run_id is not None
    assert [n.op for n in plan.nodes] == ["aten.relu.default", "aten.sigmoid.default", "aten.sum.dim_IntList",
                                          "aten.mul.Tensor", "aten.mul.Tensor"]
    data = _strict_json(plan.to_dict())
    assert data["summary"]["nodes"] == 5 and data["run_id"] == plan.run_id
    assert data["nodes"][0]["choice"]["strategy"] == plan.nodes[0].strategy == "act/relu"
    html = plan._repr_html_()
    assert html.startswith("<!doctype html>") or "<html" in html
    assert "act/relu" in html and "aten.sigmoid.default" in html
    assert "Gate on tensorrt_rtx: 5 nodes" in str(plan)


def test_plan_of_a_program_and_of_a_file_agree(db, tmp_path):
    program = torch.export.export(Gate(), (torch.randn(2, 8),), strict=False)
    path = export_to(tmp_path / "gate.pt2", Gate(), torch.randn(2, 8))
    a = opmap.plan(program, db=db, record=False)
    b = opmap.plan(path, db=db)
    assert a.run_id is None and b.run_id is not None and b.model == str(path)
    assert [(n.name, n.strategy) for n in a.nodes] == [(n.name, n.strategy) for n in b.nodes]


def test_unmapped_plan_and_build_error(db):
    from opmap.rules.custom import custom_call

    class Custom(torch.nn.Module):
        def forward(self, x):
            return custom_call(x)

    plan = opmap.plan(Custom(), torch.randn(2, 3), db=db, backend="tensorrt_rtx", record=False)
    assert not plan.complete
    (node,) = [n for n in plan.nodes if n.strategy is None]
    assert "cannot add plugin layers" in node.why
    with pytest.raises(opmap.OpmapError, match="cannot build: .*opmap_examples.scale") as info:
        opmap.build(Custom(), torch.randn(2, 3), db=db, backend="tensorrt_rtx")
    assert info.value.exit_code == 1


def test_build_save_and_verify_at_profile_points(db, tmp_path):
    dynamic = ({0: torch.export.Dim("batch", max=16)},)
    engine = opmap.build(Gate(), (torch.randn(4, 8),), db=db, dynamic_shapes=dynamic)
    assert engine.data[:4] and engine.layers > 0 and engine.build_seconds > 0
    assert [(b.name, b.shape, b.dtype) for b in engine.inputs] == [("x", [-1, 8], "float32")]
    assert [(b.name, b.node) for b in engine.outputs] == [("output0", "mul")]
    sidecar = engine.save(tmp_path / "gate.engine")
    assert (tmp_path / "gate.engine").read_bytes() == engine.data
    assert json.loads(sidecar.read_text()) == _strict_json(engine.to_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate.engine", "gate.engine.json"]  # no temporary left behind
    with pytest.raises(opmap.OpmapError, match="is a directory"):
        engine.save(tmp_path)

    report = opmap.verify(engine)
    assert report.ok and [(p.point, p.shape) for p in report.points] == [("min", "x=1x8"), ("opt", "x=8x8"), ("max", "x=16x8")]
    data = _strict_json(report.to_dict())
    assert data["ok"] and data["points"][2]["outputs"][0]["shape"] == [16, 8]

    given = opmap.verify(engine, inputs={"x": torch.randn(3, 8)})
    assert given.ok and [p.point for p in given.points] == ["given"]
    with pytest.raises(opmap.OpmapError, match="dim 0 is 17, outside the export's range"):
        opmap.verify(engine, inputs={"x": torch.randn(17, 8)})


def test_verify_of_a_static_module_and_a_mismatch_is_reported(db):
    report = opmap.verify(Gate(), (torch.randn(2, 8),), db=db)
    assert report.ok and [p.point for p in report.points] == ["static"]
    assert report.points[0].compared == report.points[0].expected == 1


def test_bad_input_is_one_opmap_error(db, tmp_path):
    cases = [
        (lambda: opmap.plan(Gate(), db=db), "needs example_inputs"),
        (lambda: opmap.plan(42, db=db), "cannot plan a value of type int"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), backend="cuda", db=db), "unknown backend"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), precision="fp8", db=db), "unknown precision"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), tolerance=float("nan"), db=db), "non-negative"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), objective="speed", db=db), "unknown objective"),
        (lambda: opmap.plan(tmp_path / "missing.pt2", db=db), "no such file"),
        (lambda: opmap.plan(tmp_path, torch.randn(2), db=db), "example_inputs and dynamic_shapes are for an nn.Module"),
        (lambda: opmap.plan(Gate(), (torch.randn(2, 8), 1, 2, 3), db=db), "torch.export failed"),
        (lambda: opmap.verify(Gate(), torch.randn(2, 8), runtime="gpu", db=db), "unknown runtime"),
        (lambda: opmap.compare(Gate(), db=db), "an nn.Module needs example_inputs"),
    ]
    for call, words in cases:
        with pytest.raises(opmap.OpmapError, match=re.escape(words)) as info:
            call()
        assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert issubclass(opmap.CaptureError, opmap.OpmapError) and issubclass(opmap.BuildError, opmap.OpmapError)


def test_readme_example_runs(tmp_path, monkeypatch, db):
    """The README's Python API example, as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPMAP_DB", db)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "gate.engine").stat().st_size > 0 and (tmp_path / "gate.engine.json").exists()


def test_compare_against_the_onnx_route(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    result = opmap.compare(Gate(), torch.randn(2, 8), check=True, db=db)
    assert result["routes"]["opmap"]["ok"] and result["routes"]["onnx"]["ok"], result["routes"]
    assert result["check"]["ran"] and result["check"]["ok"], result["check"]
    assert json.dumps(result, allow_nan=False)


class Numel(torch.nn.Module):
    def forward(self, x):
        return torch.ops.aten.sym_numel.default(x)


@pytest.mark.parametrize("shape, dynamic", [((6,), None), ((2, 3, 4), None), ((3, 4), {0: torch.export.Dim("b", min=1, max=8)}),
                                            ((2, 3, 4), {0: torch.export.Dim("b", min=1, max=8), 2: torch.export.Dim("c", min=2, max=8)})])
def test_numel_as_the_only_output_builds(db, shape, dynamic):
    """x.numel() as the model's output: a product of the shape where dims are dynamic; a constant of the program where
    they are static (TensorRT needs an output: the constant becomes one, compared with PyTorch's value)."""
    engine = opmap.build(Numel(), (torch.randn(shape),), db=db, dynamic_shapes=(dynamic,) if dynamic else None)
    report = opmap.verify(engine)
    assert report.ok and report.points, report.to_dict()
    notes = [o["note"] for p in report.points for o in p.outputs]
    assert all(n.startswith("scalar: PyTorch") for n in notes), notes
