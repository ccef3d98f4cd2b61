"""The Python API: ``opmap.plan``, ``build``, ``verify``, ``compare``, ``calibrate``, ``measure``, ``audit`` and
``rules_list``/``rules_add``/``rules_remove``/``rules_test``: each calls the service its CLI command calls
(opmap/service.py) and returns objects.

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

from opmap.errors import OpmapError

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
        from opmap.service import plan_json

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
    _built: Any = field(default=None, repr=False, compare=False)  # the service's BuiltModel

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


def _result(plan: Any, run_id: int | None, model: str) -> Plan:
    nodes = [NodeChoice(n.node.name, n.node.op, n.choice.strategy if n.choice else None, n.choice.kind if n.choice else None,
                        n.why, n.runner_up.strategy if n.runner_up else None, n.contract, n.precision) for n in plan.nodes]
    return Plan(model, plan.backend.name, plan.backend.version, run_id, plan.summary(), nodes, list(plan.problems), plan)


# -- the API: each function calls its command's service (opmap/service.py) and wraps the result ------------------------
# The CLI's options and their keywords: --backend backend, --precision precision, --tolerance tolerance, --int8-budget
# int8_budget, --protect-discrete/--no-protect-discrete protect_discrete, --trust-model trust_model, --input-shape
# input_shapes, --dynamic dynamic, --bound bounds, --record/--no-record record, --html html, --objective objective,
# --shape shapes, --check/--no-check check, --inputs inputs, --seed seed, --runtime runtime, --shapes points, --point
# point, --locate locate, --db db; -o is Engine.save(path); --json is to_dict(). A spec option takes the CLI's strings
# or a mapping (README, "Python API").
def plan(model: Any, example_inputs: Any = None, *, backend: str | None = None, precision: str = "fp32",
         tolerance: float = 1e-3, int8_budget: float = 2e-2, protect_discrete: bool = True, objective: str = "latency",
         db: str | None = None, dynamic_shapes: Any = None, trust_model: bool = False, input_shapes: Any = None,
         dynamic: Any = None, bounds: Any = None, record: bool = True, html: str | Path | None = None) -> Plan:
    """Judge every node of ``model`` and choose its strategy, as ``opmap suggest`` does.

    ``model``: an ``nn.Module`` (with ``example_inputs``: a tensor, a tuple of positional inputs or a dict of keyword
    inputs; ``dynamic_shapes`` as ``torch.export.export`` takes it), a ``torch.export.ExportedProgram``, or a model file
    (``trust_model`` as ``--trust-model``; ``input_shapes`` and ``dynamic`` for a TorchScript or pickled file, as
    ``--input-shape`` and ``--dynamic``). ``precision="int8"`` needs a calibration of the model (:func:`calibrate`).
    ``bounds``: upper bounds of data-dependent sizes, ``{"nonzero": 64}`` (``--bound``). ``db``: the catalog (a
    SQLAlchemy URL or a SQLite path; default as the CLI). ``record``: store the run for :func:`audit` (its id is
    ``Plan.run_id``); ``html``: also write the plan's page."""
    from opmap import service

    done = service.suggest(model, example_inputs, db=db, backend=backend, precision=precision, tolerance=tolerance,
                           int8_budget=int8_budget, protect_discrete=protect_discrete, trust_model=trust_model,
                           input_shapes=input_shapes, dynamic=dynamic, dynamic_shapes=dynamic_shapes, bounds=bounds,
                           objective=objective, record=record, html=html)
    return _result(done.plan, done.run_id, done.model)


def build(model: Any, example_inputs: Any = None, *, backend: str | None = None, precision: str = "fp32",
          tolerance: float = 1e-3, int8_budget: float = 2e-2, protect_discrete: bool = True, db: str | None = None, dynamic_shapes: Any = None,
          trust_model: bool = False, input_shapes: Any = None, dynamic: Any = None, bounds: Any = None,
          shapes: Any = None, check: bool = True) -> Engine:
    """Plan with strategies that can emit layers and build a real engine, as ``opmap build`` does (nothing is written:
    :meth:`Engine.save` writes it). ``shapes``: input name -> (min, opt, max) dims of its optimization profile
    (``--shape``); by default the export's ranges give them. Raises :class:`opmap.BuildError` naming the node and
    strategy. ``check``: as ``build --check`` (the default), the network is compared with PyTorch at one drawn point
    before the engine is returned; on a mismatch an :class:`opmap.OpmapError` (exit code 1) names the diverging node,
    and its ``checked`` attribute holds the sidecar's ``checked`` object with the ``locate`` result. The sidecar's
    ``checked`` says whether and where the engine was checked (None with ``check=False``). Other keywords as
    :func:`plan`."""
    from opmap import service

    done = service.build_model(model, example_inputs, db=db, backend=backend, precision=precision, tolerance=tolerance,
                               int8_budget=int8_budget,
                               protect_discrete=protect_discrete, shapes=shapes, trust_model=trust_model,
                               input_shapes=input_shapes, dynamic=dynamic, dynamic_shapes=dynamic_shapes, bounds=bounds,
                               check=check)
    return _engine(done)


def _engine(done: Any) -> Engine:
    from opmap.building.builder import dtype_name

    built, made = done.built, done.plan
    net = built.network
    inputs = [Binding(t.name, list(t.shape), dtype_name(t.dtype)) for t in (net.get_input(i) for i in range(net.num_inputs))]
    outputs = [Binding(t.name, list(t.shape), dtype_name(t.dtype), node, built.extra_outputs.get(t.name))
               for t, node in zip((net.get_output(i) for i in range(net.num_outputs)), built.output_nodes)]
    return Engine(built.engine, built.sidecar(made, made.backend, done.precision), inputs, outputs, _result(made, None, done.model),
                  net.num_layers, built.build_seconds, done)


def verify(model: Any, example_inputs: Any = None, *, inputs: Mapping[str, Any] | str | Path | None = None, seed: int = 0,
           runtime: str = "reference", backend: str | None = None, precision: str = "fp32", int8_budget: float = 2e-2,
           protect_discrete: bool = True, db: str | None = None, dynamic_shapes: Any = None, trust_model: bool = False,
           input_shapes: Any = None, dynamic: Any = None, bounds: Any = None, shapes: Any = None, points: Any = None,
           point: Mapping[str, Any] | None = None, locate: bool = False) -> Report:
    """Build (or take an :class:`Engine` from :func:`build`) and compare every output with PyTorch, as ``opmap verify``
    does. A model with dynamic dims is verified at the optimization profile's minimum, an interior point and its
    maximum (``points``: some of them, ``"min,max"`` or ``("min", "max")``, as ``--shapes``), each with seeded inputs
    drawn valid at that size; ``point`` (input name -> dims, as ``--point``) verifies at those sizes instead, and
    ``inputs`` (input name -> tensor, or the path of a ``torch.save``'d such dict, checked against the export) at those
    values only. ``runtime``: ``reference`` (the interpreter) or ``trt`` (the real engine; full TensorRT and a GPU).
    ``locate``: as ``verify --locate``, every node compared with PyTorch's at the first point that mismatches (else the
    first point) and the diverging node named, in ``Report.locate``. Other keywords as :func:`build`."""
    from opmap import service

    engine = model._built if isinstance(model, Engine) else None
    done = service.verify(None if engine else model, example_inputs, engine=engine, inputs=inputs, seed=seed, runtime=runtime,
                          backend=backend, precision=precision, int8_budget=int8_budget, protect_discrete=protect_discrete,
                          trust_model=trust_model, input_shapes=input_shapes, dynamic=dynamic, dynamic_shapes=dynamic_shapes,
                          bounds=bounds, shapes=shapes, points=points, point=point, locate=locate, db=db, distinct=True)
    built = done.engine.built
    made = done.engine.plan
    report = Report(done.engine.model, made.backend.name, made.backend.version, runtime, len(built.engine) if built.engine else None,
                    built.build_seconds, [], dict(done.skipped))
    for label, r in done.reports.items():
        report.points.append(PointReport(label, r.shape, r.ok, r.compared, r.expected, r.inputs, [o.to_dict() for o in r.outputs]))
    if done.located is not None:
        report.locate = json_safe(done.located.to_dict())
    return report


def compare(model: Any, example_inputs: Any = None, *, backend: str | None = None, check: bool = False, seed: int = 0,
            db: str | None = None, dynamic_shapes: Any = None, trust_model: bool = False, input_shapes: Any = None,
            estimate: bool = False) -> dict[str, Any]:
    """opmap against the ONNX route (torch.onnx dynamo export -> the backend's ONNX parser -> build), node by node, as
    ``opmap compare`` does; returns its JSON object (schema in the README). Needs ``pip install 'opmap[onnx]'``."""
    from opmap import service
    from opmap.onnxroute import comparison_json

    result, name = service.compare(model, example_inputs, db=db, backend=backend, check=check, seed=seed,
                                   trust_model=trust_model, input_shapes=input_shapes, dynamic_shapes=dynamic_shapes,
                                   estimate=estimate)
    return json_safe(comparison_json(result, name))


def calibrate(model: Any, example_inputs: Any = None, *, data: str | Path | None = None, generate: int | None = None,
              seed: int = 0, percentile: float = 99.99, db: str | None = None, dynamic_shapes: Any = None,
              trust_model: bool = False, input_shapes: Any = None) -> dict[str, Any]:
    """Run calibration batches through PyTorch and store the ranges ``precision="int8"`` places by, as ``opmap
    calibrate`` does: ``data`` (a ``torch.save``'d input dict or list of them, or a directory of such files) or
    ``generate`` N batches drawn as verify draws its inputs (labelled so). A module's calibration is tied to its export
    (the same module and example inputs find it again). Returns ``calibrate --json``'s object."""
    from opmap import service

    row = service.calibrate(model, example_inputs, db=db, data=data, generate=generate, seed=seed, percentile=percentile,
                            trust_model=trust_model, input_shapes=input_shapes, dynamic_shapes=dynamic_shapes)
    return json_safe({**service.calibration_json(row), "ranges": row.ranges})


def measure(*, op: str | None = None, strategy: str | None = None, k: str | None = None, backend: str | None = None,
            device_profile: str | Path | None = None, seeds: int = 8, dtype: str | None = None, model: Any = None,
            trust_model: bool = False, db: str | None = None) -> list[dict[str, Any]]:
    """Measure strategies (real builds, interpreter accuracy, estimated latency) and store the rows in the catalog, as
    ``opmap measure`` does (``strategy`` is ``--strategy``, ``device_profile`` ``--profile``, ``model`` ``--model``: a
    model file). Returns ``measure --json``'s rows."""
    from opmap import measuring, service

    done = service.measure(db=db, op=op, strategy=strategy, k=k, backend=backend, device_profile=device_profile, seeds=seeds,
                           dtype=dtype, model=model, trust_model=trust_model)
    return json_safe(measuring.to_json(done.rows))


def audit(run: int | None = None, *, node: str | None = None, diff: int | None = None, limit: int = 50,
          html: str | Path | None = None, db: str | None = None) -> Any:
    """The catalog's record, as ``opmap audit --json`` gives it: the latest runs (a list), one run's decisions with
    their verdicts, one ``node``'s, or what changed between ``run`` and ``diff``; ``html`` writes the run's page."""
    from opmap import service

    return json_safe(service.audit(run, db=db, node=node, diff=diff, limit=limit, html=html).to_json())


def rules_list(*, k: str | None = None, m: str | None = None, db: str | None = None) -> list[dict[str, Any]]:
    """The enabled strategies, as ``opmap rules list --json`` (``k``: id/name/op substring expression, ``m``: tag,
    kind or origin expression)."""
    from opmap import service

    return json_safe([service.rule_json(s) for s in service.rules_list(db=db, k=k, m=m).strategies])


def rules_add(path: str | Path, *, measure: bool = True, db: str | None = None) -> list[str]:
    """Register a user rule file (or a directory of them) into the catalog, all or nothing, as ``opmap rules add``;
    ``measure``: measure the added strategies at once (``--measure``). Returns the added strategy ids."""
    from opmap import service

    return service.rules_add(path, db=db, measure=measure).ids


def rules_remove(strategy_id: str, *, db: str | None = None) -> int:
    """Remove a user strategy (past runs keep their verdicts), as ``opmap rules remove``; returns the catalog version."""
    from opmap import service

    return service.rules_remove(strategy_id, db=db)


def rules_test(path: str | Path | None = None, *, k: str | None = None, m: str | None = None,
               db: str | None = None) -> list[dict[str, Any]]:
    """Run rules' own accept/reject examples (of the file(s) at ``path``, else of the catalog's rules), as ``opmap
    rules test --json``; every item has ``passed``."""
    from opmap import service

    return [service.example_json(r) for r in service.rules_test(path, db=db, k=k, m=m)]
