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
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), precision="fp12", db=db), "unknown precision"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), precision="fp8", db=db), "FP8 (E4M3) is not placed"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), bounds={"mul": 0}, db=db), "bad --bound 'mul=0'"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), input_shapes={"x": (2, 8)}, db=db), "input_shapes and dynamic are for"),
        (lambda: opmap.plan(tmp_path / "m.pt", input_shapes={"x": "2y8"}, db=db), "bad --input-shape 'x=2y8'"),
        (lambda: opmap.plan(tmp_path / "m.pt", dynamic={"x": {0: (4, 1)}}, db=db), "bad --dynamic 'x:0=4..1'"),
        (lambda: opmap.plan(Gate(), torch.randn(2, 8), html=tmp_path, db=db), "it is a directory"),
        (lambda: opmap.build(Gate(), torch.randn(2, 8), shapes={"y": ((1, 8), (2, 8), (4, 8))}, db=db), "--shape names y"),
        (lambda: opmap.verify(Gate(), torch.randn(2, 8), points="min", point={"x": (2, 8)}, db=db), "give one of them"),
        (lambda: opmap.audit(node="relu", db=db), "--node and --diff need a RUN id"),
        (lambda: opmap.measure(strategy="no/such", db=db), "no strategy matches"),
        (lambda: opmap.rules_remove("no/such", db=db), "no/such"),
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


# -- parity with the CLI: every option of suggest/build/verify has a keyword; calibrate, measure, audit, rules ------
class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, image):
        return self.fc(torch.relu(self.conv(image)).mean((2, 3)))


def test_int8_after_calibrating_the_module(db):
    """--precision int8 after `opmap calibrate`: a module's calibration is found again by its export's hash."""
    cnn, image = SmallCNN().eval(), (torch.randn(1, 3, 16, 16),)
    with pytest.raises(opmap.OpmapError, match="needs a calibration of this model"):
        opmap.plan(cnn, image, precision="int8", db=db, record=False)
    cal = opmap.calibrate(cnn, image, generate=2, db=db)
    assert cal["generated"] and cal["batches"] == 2 and cal["activations"] > 0 and cal["weights"] > 0
    plan = opmap.plan(cnn, image, precision="int8", db=db, record=False)
    assert {n.name: n.precision for n in plan.nodes}["conv2d"] == "int8"
    strict = opmap.plan(cnn, image, precision="int8", int8_budget=0.0, db=db, record=False)  # --int8-budget
    assert not any(n.precision == "int8" for n in strict.nodes)
    engine = opmap.build(cnn, image, precision="int8", db=db)
    assert engine.sidecar["precision"] == "int8" and engine.sidecar["checked"]["ok"]
    assert opmap.verify(engine).ok


class Threshold(torch.nn.Module):
    """tests/test_int8.py's model: outputs 1e-5 above a threshold at 0 in half the channels, where INT8 flips them."""

    def __init__(self, x0):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(64, 16)
        with torch.no_grad():
            margin = torch.full((16,), 10.0)
            margin[:8] = 1e-5
            self.lin.bias.copy_(margin - self.lin.weight @ x0[0])

    def forward(self, x):
        y = self.lin(x)
        return y > 0, y


def test_protect_discrete_keyword(db, tmp_path):
    from opmap.checking.verify import draw_inputs
    from opmap.loading.capture import capture

    x = torch.randn(1, 64)
    x0 = draw_inputs(capture(export_to(tmp_path / "t.pt2", Threshold(x), x)).graph, 0)[0]["x"]
    path = export_to(tmp_path / "thr.pt2", Threshold(x0), x0)
    opmap.calibrate(path, generate=2, db=db)
    protected = opmap.plan(path, precision="int8", db=db, record=False)
    unprotected = opmap.plan(path, precision="int8", protect_discrete=False, db=db, record=False)
    assert {n.name: n.precision for n in protected.nodes}["linear"] is None
    assert {n.name: n.precision for n in unprotected.nodes}["linear"] == "int8"


class Repeat(torch.nn.Module):
    def forward(self, x, r):
        return torch.repeat_interleave(x, r)


def test_declared_bounds_and_given_inputs(db, tmp_path):
    """--bound as bounds={...}; verify --inputs as a dict of tensors or the path of a torch.save'd one."""
    x, r = torch.arange(4.0), torch.tensor([1, 2, 0, 3])
    plan = opmap.plan(Repeat(), (x, r), db=db, record=False)
    (node,) = [n for n in plan.nodes if n.strategy is None]
    assert "--bound repeat_interleave=N" in node.why
    engine = opmap.build(Repeat(), (x, r), bounds={"repeat_interleave": 16}, db=db)
    given = {"x": torch.arange(4.0), "r": torch.tensor([3, 0, 2, 1])}
    report = opmap.verify(engine, inputs=given)
    assert report.ok and "count exact" in report.points[0].outputs[0]["note"]
    torch.save({"x": torch.arange(4.0), "r": torch.tensor([3, 3, 3, 3])}, tmp_path / "in.pt")  # 12 rows, bound 8
    report = opmap.verify(Repeat(), (x, r), bounds=["repeat_interleave=8"], inputs=tmp_path / "in.pt", db=db)
    assert not report.ok and "exceeds the bound 8" in report.points[0].outputs[0]["note"]


class Masked(torch.nn.Module):
    def forward(self, x):
        return (x * (x > 0)).sum(-1)


def test_torchscript_with_dynamic_dims_profiles_and_points(db, tmp_path):
    """--trust-model, --dynamic and --input-shape for a TorchScript file; --shape, --shapes, --point and --locate."""
    path = tmp_path / "masked.pt"
    torch.jit.save(torch.jit.trace(Masked().eval(), (torch.randn(2, 8),)), str(path))
    with pytest.raises(opmap.CaptureError, match="--trust-model"):
        opmap.plan(path, db=db)
    plan = opmap.plan(path, trust_model=True, input_shapes={"x": (3, 8)}, db=db, record=False)
    assert plan.complete and plan._plan.graph.inputs["x_1"].shape == (3, 8)
    engine = opmap.build(path, trust_model=True, dynamic={"x": {0: (1, 16)}}, shapes={"x_1": ((2, 8), (4, 8), (12, 8))}, db=db)
    assert [(b.name, b.shape) for b in engine.inputs] == [("x_1", [-1, 8])]
    report = opmap.verify(engine, points="min,max", locate=True)
    assert report.ok and [(p.point, p.shape) for p in report.points] == [("min", "x_1=2x8"), ("max", "x_1=12x8")]
    assert report.locate["ok"] and report.locate["point"] == "min"
    at = opmap.verify(path, trust_model=True, dynamic=["x:0=1..16"], point={"x_1": (5, 8)}, seed=3, db=db)
    assert at.ok and [(p.point, p.shape) for p in at.points] == [("point", "x_1=5x8")]


RULE = """
from opmap import strategy, accept, reject
import torch

@strategy("mine/relu-api", op="aten.relu.default", kind="direct",
          examples=[accept(torch.relu, torch.randn(2, 3)), reject(torch.relu, torch.randn(2, 3).half())])
def rule_relu_api(node):
    \"\"\"ReLU as one activation layer (a user's copy), float32 only.\"\"\"
    assert node.meta("self").dtype == "float32", "only float32"

@rule_relu_api.emit
def _(ctx, node):
    return ctx.activation(ctx.input("self"), "RELU")
"""


def test_audit_measure_and_rules(tmp_path):
    db = str(tmp_path / "catalog.db")
    x = torch.randn(2, 8)
    first = opmap.plan(Gate(), x, db=db, html=tmp_path / "plan.html")
    assert "act/relu" in (tmp_path / "plan.html").read_text()
    second = opmap.plan(Gate(), x, objective="size", db=db)
    runs = opmap.audit(db=db, limit=1)
    assert [r["run_id"] for r in runs] == [second.run_id]
    run = opmap.audit(first.run_id, db=db)
    assert [n["name"] for n in run["nodes"]] == [n.name for n in first.nodes]
    (relu,) = opmap.audit(first.run_id, node="relu", db=db)["nodes"]
    assert relu["choice"]["strategy"] == "act/relu" and relu["verdicts"]
    assert opmap.audit(first.run_id, diff=second.run_id, db=db)["to"] == second.run_id

    rows = opmap.measure(strategy="act/relu", seeds=1, db=db)
    assert rows and {r["strategy_id"] for r in rows} == {"act/relu"} and all(r["build_ok"] for r in rows)

    rule = tmp_path / "rule_relu_api.py"
    rule.write_text(RULE)
    assert [(r["example"], r["passed"]) for r in opmap.rules_test(rule)] == [("accept[0]", True), ("reject[0]", True)]
    assert opmap.rules_add(rule, measure=False, db=db) == ["mine/relu-api"]
    assert [r["id"] for r in opmap.rules_list(m="user", db=db)] == ["mine/relu-api"]
    assert all(r["passed"] for r in opmap.rules_test(k="relu-api", db=db))
    opmap.rules_remove("mine/relu-api", db=db)
    assert opmap.rules_list(m="user", db=db) == []
