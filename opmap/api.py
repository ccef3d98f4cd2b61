"""The Python API: ``opmap.plan``, ``opmap.build``, ``opmap.verify`` (and ``opmap.compare``), on the CLI's services.

A model is an ``nn.Module`` with example inputs (exported here with ``torch.export``), an ``ExportedProgram``, or a
model file (loaded as ``opmap suggest`` loads it). Results are dataclasses whose ``to_dict()`` is JSON-safe (no NaN
or infinity: a non-finite number is ``None``) and follows the CLI's ``--json`` schemas. Every error a caller can act on
is an :class:`opmap.OpmapError`; its ``exit_code`` is what the CLI would exit with.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from opmap.errors import CaptureError, OpmapError, first_line

PRECISIONS = ("fp32", "fp16", "bf16")


# -- results ---------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """``value`` with tuples as lists, non-finite floats as None and anything else not JSON as its ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


@dataclass
class NodeChoice:
    """One node of a plan: the chosen strategy (None: no mapping), its kind, and why."""

    name: str
    op: str
    strategy: str | None
    kind: str | None
    why: str
    runner_up: str | None = None
    contract: str | None = None  # how the strategy changes the node's outputs (e.g. padded, with a count output)
    precision: str | None = None  # "fp16"/"bf16" where the node computes below fp32


@dataclass
class Plan:
    """A judged plan: one :class:`NodeChoice` per node. Renders itself in a notebook (``_repr_html_``)."""

    model: str
    backend: str
    backend_version: str | None
    run_id: int | None  # the catalog run (``opmap audit RUN``), when recorded
    summary: dict[str, int]
    nodes: list[NodeChoice]
    problems: list[str] = field(default_factory=list)
    _plan: Any = field(default=None, repr=False, compare=False)

    @property
    def complete(self) -> bool:
        """Every node has a mapping (the CLI exits 1 otherwise)."""
        return all(n.strategy is not None for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        """The ``opmap suggest --json`` schema."""
        from opmap.app import plan_json

        return json_safe(plan_json(self._plan, self.run_id, self.model))

    def _repr_html_(self) -> str:
        from opmap.report import plan_html

        return plan_html(self._plan, self.run_id, self.model)

    def __str__(self) -> str:
        return f"{self.model} on {self.backend}: {self._plan.summary_line()}"


@dataclass
class Binding:
    """An engine input or output: its name, dims (-1 where dynamic), dtype, and for outputs the node behind it."""

    name: str
    shape: list[int]
    dtype: str
    node: str | None = None
    extra: str | None = None  # an output a strategy added to the contract (e.g. "count"), else None


@dataclass
class Engine:
    """A built TensorRT engine: its bytes, the sidecar (as ``opmap build`` writes it) and its bindings."""

    data: bytes
    sidecar: dict[str, Any]
    inputs: list[Binding]
    outputs: list[Binding]
    plan: Plan
    layers: int
    build_seconds: float
    _built: Any = field(default=None, repr=False, compare=False)
    _program: Any = field(default=None, repr=False, compare=False)

    def save(self, path: str | Path) -> Path:
        """Write the engine to ``path`` and its sidecar to ``path.json``, each atomically (a temporary file in the same
        directory, then a rename): a reader never sees half an engine. Returns the sidecar's path."""
        import json

        path = Path(path)
        if path.is_dir():
            raise OpmapError(f"{path} is a directory; give the engine's file name")
        sidecar = path.with_suffix(path.suffix + ".json")
        _atomic_write(path, self.data)
        _atomic_write(sidecar, (json.dumps(json_safe(self.sidecar), indent=2) + "\n").encode())
        return sidecar

    def to_dict(self) -> dict[str, Any]:
        """The sidecar (``opmap build --json``)."""
        return json_safe(self.sidecar)


@dataclass
class PointReport:
    """Verification at one input shape: every user output against PyTorch (``opmap verify --json``'s fields)."""

    point: str  # "static", or "min" / "opt" / "max" of the optimization profile
    shape: str  # the input shapes (``x=4x8``)
    ok: bool
    compared: int
    expected: int
    inputs: dict[str, str]  # input name -> how its values were drawn
    outputs: list[dict[str, Any]]


@dataclass
class Report:
    """``opmap.verify``'s result: one :class:`PointReport` per profile point (a static model has one, ``static``)."""

    model: str
    backend: str
    backend_version: str | None
    runtime: str
    engine_bytes: int | None
    build_seconds: float | None
    points: list[PointReport]
    skipped: dict[str, str] = field(default_factory=dict)  # point -> why PyTorch itself cannot run there
    locate: dict[str, Any] | None = None  # with locate=True: ``verify --json``'s ``locate`` object

    @property
    def ok(self) -> bool:
        """At least one point compared, and every compared point agrees with PyTorch on every output."""
        return bool(self.points) and all(p.ok for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "model": self.model, "runtime": self.runtime, "backend": {"name": self.backend, "version": self.backend_version},
            "engine_bytes": self.engine_bytes, "build_seconds": self.build_seconds, "ok": self.ok,
            "points": [vars(p) for p in self.points], "skipped": self.skipped,
            **({"locate": self.locate} if self.locate is not None else {}),
        })


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OpmapError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OpmapError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- models ----------------------------------------------------------------------------------------
def _capture(model: Any, example_inputs: Any, dynamic_shapes: Any, trust_model: bool):
    """A Captured from a path, an ExportedProgram or an nn.Module (exported here on its example inputs)."""
    from opmap.loading.capture import capture

    if isinstance(model, (str, os.PathLike)):
        if example_inputs is not None or dynamic_shapes is not None:
            raise OpmapError("example_inputs and dynamic_shapes are for an nn.Module; a model file carries its own")
        return capture(Path(model), trust_model=trust_model), str(model)
    import torch

    from opmap.loading.capture import _quiet, captured_from

    if isinstance(model, torch.export.ExportedProgram):
        if example_inputs is not None or dynamic_shapes is not None:
            raise OpmapError("example_inputs and dynamic_shapes are for an nn.Module; an ExportedProgram was exported already")
        program = model
    elif isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise OpmapError(f"{type(model).__name__}: an nn.Module needs example_inputs (a tensor, a tuple of "
                             "positional inputs, or a dict of keyword inputs) to be exported")
        if isinstance(example_inputs, Mapping):
            args, kwargs = (), dict(example_inputs)
        elif isinstance(example_inputs, (tuple, list)):
            args, kwargs = tuple(example_inputs), None
        else:
            args, kwargs = (example_inputs,), None
        try:
            with _quiet():
                program = torch.export.export(model, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as exc:  # torch.export raises many kinds; all mean "could not export"
            raise CaptureError(f"torch.export failed: {first_line(exc)}") from None
    else:
        raise OpmapError(f"cannot plan a value of type {type(model).__name__}: pass an nn.Module (with example_inputs), "
                         "a torch.export.ExportedProgram, or the path of a model file")
    name = type(model).__name__ if isinstance(model, torch.nn.Module) else "ExportedProgram"
    return captured_from(program, name, "export"), name


def _check(backend: str | None, precision: str, tolerance: float = 0.0, objective: str = "latency") -> None:
    from opmap.app import OBJECTIVES
    from opmap.building.backend import BACKENDS

    if backend is not None and backend not in BACKENDS:
        raise OpmapError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise OpmapError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if not tolerance >= 0:
        raise OpmapError(f"tolerance must be a non-negative number, got {tolerance}")
    if objective not in OBJECTIVES:
        raise OpmapError(f"unknown objective {objective!r}: choose {', '.join(OBJECTIVES)}")


def _result(plan: Any, run_id: int | None, model: str) -> Plan:
    nodes = [NodeChoice(n.node.name, n.node.op, n.choice.strategy if n.choice else None, n.choice.kind if n.choice else None,
                        n.why, n.runner_up.strategy if n.runner_up else None, n.contract, n.precision) for n in plan.nodes]
    return Plan(model, plan.backend.name, plan.backend.version, run_id, plan.summary(), nodes, list(plan.problems), plan)


# -- the API ---------------------------------------------------------------------------------------
def plan(model: Any, example_inputs: Any = None, *, backend: str | None = None, precision: str = "fp32",
         tolerance: float = 1e-3, objective: str = "latency", db: str | None = None, dynamic_shapes: Any = None,
         trust_model: bool = False, record: bool = True) -> Plan:
    """Judge every node of ``model`` and choose its strategy, as ``opmap suggest`` does.

    ``model``: an ``nn.Module`` (with ``example_inputs``: a tensor, a tuple of positional inputs or a dict of keyword
    inputs; ``dynamic_shapes`` as ``torch.export.export`` takes it), a ``torch.export.ExportedProgram``, or a model file
    (``trust_model`` as ``--trust-model``). ``db``: the catalog (a SQLAlchemy URL or a SQLite path; default as the CLI).
    ``record``: store the run for ``opmap audit`` (its id is ``Plan.run_id``)."""
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.planning.fixtures import Settings

    _check(backend, precision, tolerance, objective)
    captured, name = _capture(model, example_inputs, dynamic_shapes, trust_model)
    catalog, ruleset = svc.open_catalog(db)
    made = svc.make_plan(captured, catalog, ruleset, profile(backend), Settings(tolerance=tolerance, precision=precision),
                         objective=objective)
    run_id = svc.record(catalog, made, captured, str(model) if name == str(model) else "") if record else None
    return _result(made, run_id, name)


def build(model: Any, example_inputs: Any = None, *, backend: str | None = None, precision: str = "fp32",
          db: str | None = None, dynamic_shapes: Any = None, trust_model: bool = False,
          shapes: Mapping[str, tuple] | None = None, check: bool = True) -> Engine:
    """Plan with strategies that can emit layers and build a real engine, as ``opmap build`` does (nothing is written:
    :meth:`Engine.save` writes it). ``shapes``: input name -> (min, opt, max) dims of its optimization profile; by
    default the export's ranges give them. Raises :class:`opmap.BuildError` naming the node and strategy.
    ``check``: as ``build --check`` (the default), the network is compared with PyTorch at one drawn point before the
    engine is returned; on a mismatch an :class:`opmap.OpmapError` (exit code 1) names the diverging node, and its
    ``checked`` attribute holds the sidecar's ``checked`` object with the ``locate`` result. The sidecar's
    ``checked`` says whether and where the engine was checked (None with ``check=False``)."""
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.building.builder import dtype_name
    from opmap.planning.fixtures import Settings

    _check(backend, precision)
    captured, name = _capture(model, example_inputs, dynamic_shapes, trust_model)
    catalog, ruleset = svc.open_catalog(db)
    made, built = svc.build(captured, catalog, ruleset, profile(backend), Settings(precision=precision), precision,
                            {k: tuple(map(list, v)) for k, v in (shapes or {}).items()})
    if check:
        svc.check_built(made, built, captured.program, {k: tuple(map(list, v)) for k, v in (shapes or {}).items()},
                        precision=precision)
    net = built.network
    inputs = [Binding(t.name, list(t.shape), dtype_name(t.dtype)) for t in (net.get_input(i) for i in range(net.num_inputs))]
    outputs = [Binding(t.name, list(t.shape), dtype_name(t.dtype), node, built.extra_outputs.get(t.name))
               for t, node in zip((net.get_output(i) for i in range(net.num_outputs)), built.output_nodes)]
    return Engine(built.engine, built.sidecar(made, made.backend, precision), inputs, outputs, _result(made, None, name),
                  net.num_layers, built.build_seconds, built, captured.program)


def verify(model: Any, example_inputs: Any = None, *, inputs: Mapping[str, Any] | None = None, seed: int = 0,
           runtime: str = "reference", backend: str | None = None, precision: str = "fp32", db: str | None = None,
           dynamic_shapes: Any = None, trust_model: bool = False, shapes: Mapping[str, tuple] | None = None,
           locate: bool = False) -> Report:
    """Build (or take an :class:`Engine` from :func:`build`) and compare every output with PyTorch, as ``opmap verify``
    does. A model with dynamic dims is verified at the optimization profile's minimum, an interior point and its
    maximum, each with seeded inputs drawn valid at that size; ``inputs`` (input name -> tensor, checked against the
    export) verifies at those values only. ``runtime``: ``reference`` (the interpreter) or ``trt`` (the real engine;
    full TensorRT and a GPU). ``locate``: as ``verify --locate``, every node compared with PyTorch's at the first point
    that mismatches (else the first point) and the diverging node named, in ``Report.locate``."""
    from opmap.checking.verify import ReferenceFailed, check_inputs, draw_inputs, verify_built
    from opmap.building.profile import profile_points
    from opmap.checking.verify import locate as locate_node

    if runtime not in ("reference", "trt"):
        raise OpmapError(f"unknown runtime {runtime!r}: choose reference or trt")
    engine = model if isinstance(model, Engine) else build(
        model, example_inputs, backend=backend, precision=precision, db=db, dynamic_shapes=dynamic_shapes,
        trust_model=trust_model, shapes=shapes, check=False)
    built, program, graph = engine._built, engine._program, engine._built.graph
    if runtime == "trt" and built.trt.__name__ == "tensorrt_rtx":
        raise OpmapError("runtime 'trt' needs full TensorRT (tensorrt) and a supported GPU; tensorrt_rtx engines are built "
                         "ahead-of-time but cannot run here")
    if inputs is not None:
        values = check_inputs(dict(inputs), graph, "inputs")
        cases = {"given": (values, {k: f"{graph.inputs[k].dtype} {list(v.shape)}: given" for k, v in values.items()})}
    else:
        points = profile_points(graph, {k: tuple(v) for k, v in (shapes or {}).items()}) or {"static": {}}
        cases = {label: draw_inputs(graph, seed, point=point) for label, point in _by_point(points).items()}
    report = Report(engine.plan.model, engine.plan.backend, engine.plan.backend_version, runtime, len(engine.data),
                    engine.build_seconds, [])
    for label, (values, drawn) in cases.items():
        try:
            r = verify_built(built, program, values, runtime, seed=seed, precision=engine.sidecar["precision"], drawn=drawn)
        except ReferenceFailed as exc:  # the exported program itself is not valid at this point
            report.skipped[label] = str(exc)
            continue
        report.points.append(PointReport(label, r.shape, r.ok, r.compared, r.expected, r.inputs, [o.to_dict() for o in r.outputs]))
    if locate and report.points:
        where = next((p.point for p in report.points if not p.ok), report.points[0].point)
        found = locate_node(built, engine.plan._plan, program, cases[where][0], seed=seed, precision=engine.sidecar["precision"],
                            point=where)
        report.locate = json_safe(found.to_dict())
    return report


def _by_point(points: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """``{"min": {s0: 1}, ...}`` as given; a point equal to an earlier one is left out (a range of one value)."""
    out: dict[str, dict[str, int]] = {}
    for label, point in points.items():
        if point not in out.values():
            out[label] = point
    return out


def compare(model: Any, example_inputs: Any = None, *, backend: str | None = None, check: bool = False, seed: int = 0,
            db: str | None = None, dynamic_shapes: Any = None, trust_model: bool = False, estimate: bool = False) -> dict[str, Any]:
    """opmap against the ONNX route (torch.onnx dynamo export -> the backend's ONNX parser -> build), node by node, as
    ``opmap compare`` does; returns its JSON object (schema in the README). Needs ``pip install 'opmap[onnx]'``."""
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.planning.fixtures import Settings
    from opmap.onnxroute import compare as run, comparison_json, require_onnx

    require_onnx()
    _check(backend, "fp32", 1e-3, "latency")
    captured, name = _capture(model, example_inputs, dynamic_shapes, trust_model)
    catalog, ruleset = svc.open_catalog(db)
    return comparison_json(run(captured, catalog, ruleset, profile(backend), Settings(), check=check, seed=seed,
                               estimate=estimate), name)
