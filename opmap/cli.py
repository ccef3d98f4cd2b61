"""The ``opmap`` command line (Typer + Rich). Every reporting command takes ``--json``.

Exit codes: 0 success; 1 the plan has unmapped nodes / rule examples failed; 2 bad
input (one line on stderr, nothing changed in the catalog); 3 an internal error.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

import opmap
from opmap.errors import OpmapError, first_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Map PyTorch (ATen) graphs onto TensorRT: a judged, audited strategy per node.",
)
rules_app = typer.Typer(no_args_is_help=True, help="List, add, remove and test the rules that judge strategies.")
app.add_typer(rules_app, name="rules")

out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


class State:
    db: str | None = None


state = State()


def _print_version(value: bool) -> None:
    if value:  # eager: runs before Click asks for a command
        out.print(f"opmap {opmap.__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    db: Optional[str] = typer.Option(None, "--db", help="Catalog: a SQLAlchemy URL or a SQLite file path (default: $OPMAP_DB, "
                                     "else the per-user catalog)."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    state.db = db


class _NoProgress:
    """What a hidden progress bar does (nothing), without importing rich.progress (~0.2 s) for --json or a pipe."""

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        return None

    def advance(self, *args, **kwargs) -> None:
        return None


def _progress(enabled: bool):
    """A transient rich progress bar on stderr when it is a terminal (and ``enabled``: not for --json)."""
    if not enabled or not err.is_terminal:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


def _emit_json(data) -> None:
    from opmap.nonfinite import dumps

    sys.stdout.write(dumps(data, indent=2, default=str) + "\n")


# Both names mean the same: the file may run code when loaded (pickle, native code, TorchScript).
_TRUST_OPTION = typer.Option(False, "--trust-model", "--unsafe-pickle",
                             help="Trust the model file: allow loaders that run its code (pickle, TorchScript, native code). "
                                  "Without it, opmap refuses such files (see README, Security model).")


_PROTECT_OPTION = typer.Option(True, "--protect-discrete/--no-protect-discrete",
                               help="Keep producers of comparisons, argmax/topk/sort, indices and counts at the precision that "
                                    "reproduces PyTorch's discrete result (measured); off only to see what it prevents.")


_INT8_BUDGET_OPTION = typer.Option(2e-2, "--int8-budget", help="int8: the error a node may add, relative to its output's range.")


# -- suggest ---------------------------------------------------------------------------------------
@app.command()
def suggest(
    model: Path = typer.Argument(..., help="torch.export .pt2, or (with --trust-model) a TorchScript archive or a pickled nn.Module."),
    backend: Optional[str] = typer.Option(None, "--backend", help="tensorrt | tensorrt_rtx (default: tensorrt if importable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as one JSON object (schema in the README)."),
    reasons: bool = typer.Option(False, "-r", "--reasons", help="List every rejection and rule error with its reason."),
    all_verdicts: bool = typer.Option(False, "--all-verdicts", help="With the rejections, also list NOT_APPLICABLE skips."),
    tolerance: float = typer.Option(1e-3, "--tolerance", help="Accuracy budget: max relative error an approximate strategy, "
                                    "or a node placed below fp32, may add."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | bf16 | int8: the lowest precision a node may be placed in."),
    int8_budget: float = _INT8_BUDGET_OPTION,
    protect_discrete: bool = _PROTECT_OPTION,
    unsafe_pickle: bool = _TRUST_OPTION,
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224[:dtype] for pickled or scripted models."),
    dynamic: List[str] = typer.Option([], "--dynamic", help="NAME:DIM=MIN..MAX: make a TorchScript input dim dynamic "
                                      "(traced shapes stay static otherwise)."),
    bound: List[str] = typer.Option([], "--bound", help="NODE=N or SYMBOL=N: an upper bound for a data-dependent size "
                                    "(repeatable); the count output still carries the true count."),
    record: bool = typer.Option(True, "--record/--no-record", help="Store the run in the catalog for `opmap audit`."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the plan as a self-contained HTML page."),
    objective: str = typer.Option("latency", "--objective", help="latency | build-time | size: the cost to minimise."),
) -> None:
    """Plan every node of a model: chosen strategy, cost, runner-up, and why the others were rejected.

    Exits 1 when a node has no mapping, so CI can gate on it.
    """
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.loading.capture import DynamicSpec, InputSpec, capture
    from opmap.planning.fixtures import Settings

    _check_backend_and_precision(backend, precision)
    if not tolerance >= 0:
        raise OpmapError(f"--tolerance must be a non-negative number, got {tolerance}")
    if objective not in svc.OBJECTIVES:
        raise OpmapError(f"unknown objective {objective!r}: choose {', '.join(svc.OBJECTIVES)}")
    specs = [InputSpec.parse(s) for s in input_shape]
    dynamics = [DynamicSpec.parse(s) for s in dynamic]
    if html is not None:
        _check_target(html, "--html")
    with _progress(not as_json) as progress:
        task = progress.add_task("opening catalog", total=None)
        catalog, ruleset = svc.open_catalog(state.db)  # first: user rules may import the custom ops the model calls
        progress.update(task, description="capturing")
        captured = capture(model, unsafe_pickle=unsafe_pickle, input_shapes=specs, dynamic=dynamics)
        progress.update(task, description="planning", total=len(captured.graph), completed=0)
        plan = svc.make_plan(
            captured, catalog, ruleset, profile(backend), Settings(tolerance=tolerance, precision=precision, declared_bounds=_bounds(bound)),
            on_node=lambda _node: progress.advance(task), objective=objective, int8_budget=int8_budget, protect=protect_discrete,
        )
    def write_html(run_id: int | None) -> None:
        if html is not None:
            from opmap.atomic import write_atomic
            from opmap.report import plan_html

            try:
                write_atomic({html: plan_html(plan, run_id, str(model)).encode("utf-8")})
            except OSError as exc:
                raise OpmapError(f"cannot write {html}: {exc.strerror or exc}") from None

    # The run is recorded only if the HTML page could be written too (one transaction).
    run_id = svc.record(catalog, plan, captured, str(model), before_commit=write_html) if record else None
    if not record:
        write_html(None)
    if as_json:
        _emit_json(svc.plan_json(plan, run_id, str(model)))
    else:
        from opmap.report import print_plan

        print_plan(out, plan, run_id, reasons=reasons, all_verdicts=all_verdicts)
    raise typer.Exit(0 if plan.complete else 1)


def _bounds(specs: list[str]) -> tuple[tuple[str, int], ...]:
    """``--bound NODE=N`` / ``--bound u0=N``: user-declared upper bounds of data-dependent sizes."""
    from opmap.grammar import bounded, natural, shown

    out = []
    for spec in specs:
        name, _, value = bounded(spec, "--bound").partition("=")
        if not name or not value:
            raise OpmapError(f"bad --bound {shown(spec)}: expected NODE=N or SYMBOL=N with N >= 1 (e.g. --bound nonzero=64)")
        out.append((name, natural(value, "--bound", spec, low=1)))
    return tuple(out)


def _capture_and_open(model, unsafe_pickle, input_shape, progress, dynamic=()):
    from opmap import app as svc
    from opmap.loading.capture import DynamicSpec, InputSpec, capture

    specs = [InputSpec.parse(s) for s in input_shape]
    dynamics = [DynamicSpec.parse(s) for s in dynamic]
    task = progress.add_task("opening catalog", total=None)
    catalog, ruleset = svc.open_catalog(state.db)  # first: user rules may import the custom ops the model calls
    progress.update(task, description="capturing")
    captured = capture(model, unsafe_pickle=unsafe_pickle, input_shapes=specs, dynamic=dynamics)
    progress.update(task, description="planning and building", total=len(captured.graph), completed=0)
    return captured, catalog, ruleset, task


def _check_target(path: Path, flag: str) -> None:
    """Fail before any work if ``path`` cannot be written: a directory, or a parent that is missing or read-only."""
    parent = path.parent
    if path.is_dir():
        raise OpmapError(f"cannot write {flag} {path}: it is a directory; give a file name")
    if not parent.is_dir():
        raise OpmapError(f"cannot write {flag} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OpmapError(f"cannot write {flag} {path}: the directory {parent} is not writable")


def _check_backend_and_precision(backend, precision):
    from opmap.building.backend import BACKENDS
    from opmap.building.builder import PRECISIONS
    from opmap.checking.int8 import refuse_unplaced

    if backend is not None and backend not in BACKENDS:
        raise OpmapError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    refuse_unplaced(precision)
    if precision not in PRECISIONS:
        raise OpmapError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")


@app.command()
def build(
    model: Path = typer.Argument(..., help="The model file (as for suggest)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the serialized engine (a .json sidecar goes beside it)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="tensorrt | tensorrt_rtx (default: tensorrt if importable)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | bf16 | int8: per-node precision, with explicit casts/Q-DQ."),
    int8_budget: float = _INT8_BUDGET_OPTION,
    protect_discrete: bool = _PROTECT_OPTION,
    shape: List[str] = typer.Option([], "--shape", help="NAME=MIN:OPT:MAX optimization profile for a dynamic input (dims like 1x128)."),
    unsafe_pickle: bool = _TRUST_OPTION,
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224[:dtype] for pickled or scripted models."),
    dynamic: List[str] = typer.Option([], "--dynamic", help="NAME:DIM=MIN..MAX: make a TorchScript input dim dynamic "
                                      "(traced shapes stay static otherwise)."),
    bound: List[str] = typer.Option([], "--bound", help="NODE=N or SYMBOL=N: an upper bound for a data-dependent size "
                                    "(repeatable); the count output still carries the true count."),
    check: bool = typer.Option(True, "--check/--no-check", help="Before writing, run the built network through the reference "
                               "interpreter at one drawn point (a dynamic model's opt point) against PyTorch; on a mismatch "
                               "write nothing, name the diverging node and exit 1. --no-check skips it."),
    as_json: bool = typer.Option(False, "--json", help="Print the sidecar as JSON."),
) -> None:
    """Build a real TensorRT engine through the network API (ahead-of-time; no GPU needed on TensorRT-RTX).

    By default the network is checked against PyTorch at one drawn point before the engine is written (see README,
    What "verified" means)."""
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.building.builder import write_engine
    from opmap.planning.fixtures import Settings

    _check_backend_and_precision(backend, precision)
    shapes = svc.parse_shapes(shape)
    _check_target(output, "-o")
    with _progress(not as_json) as progress:
        captured, catalog, ruleset, task = _capture_and_open(model, unsafe_pickle, input_shape, progress, dynamic)
        svc.check_shapes(captured.graph, shapes)
        plan, built = svc.build(captured, catalog, ruleset, profile(backend), Settings(precision=precision, declared_bounds=_bounds(bound)), precision, shapes,
                                on_node=lambda _n: progress.advance(task), int8_budget=int8_budget, protect=protect_discrete)
        if check:
            progress.update(task, description="checking against PyTorch", total=1, completed=0)
            svc.check_built(plan, built, captured.program, shapes, precision=precision)
    sidecar = write_engine(built, plan, output, precision)
    if as_json:
        _emit_json(json.loads(sidecar.read_text()))
        return
    out.print(f"built {output} ({len(built.engine):,} bytes, {built.network.num_layers} layers, {built.build_seconds:.2f}s) "
              f"on {plan.backend}, {precision}; sidecar {sidecar}")
    from opmap.report import checked_line

    out.print(checked_line(built.checked), markup=False, highlight=False)
    for name, label in built.extra_outputs.items():
        out.print(f"  extra output {name}: {label} (the strategy changed the output contract)")
    for np_ in plan.nodes:
        if np_.contract:
            out.print(f"  {np_.node.name} ({np_.choice.strategy}): {np_.contract}")


@app.command()
def verify(
    model: Path = typer.Argument(..., help="The model file (as for suggest)."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="torch.save'd dict {input name: tensor} (default: seeded random)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed for the random inputs."),
    runtime: str = typer.Option("reference", "--runtime", help="reference (the interpreter, works anywhere) | trt (the real engine)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="tensorrt | tensorrt_rtx."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | bf16 | int8."),
    int8_budget: float = _INT8_BUDGET_OPTION,
    protect_discrete: bool = _PROTECT_OPTION,
    unsafe_pickle: bool = _TRUST_OPTION,
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224[:dtype] for pickled or scripted models."),
    dynamic: List[str] = typer.Option([], "--dynamic", help="NAME:DIM=MIN..MAX: make a TorchScript input dim dynamic "
                                      "(traced shapes stay static otherwise)."),
    bound: List[str] = typer.Option([], "--bound", help="NODE=N or SYMBOL=N: an upper bound for a data-dependent size "
                                    "(repeatable); the count output still carries the true count."),
    shape: List[str] = typer.Option([], "--shape", help="NAME=MIN:OPT:MAX optimization profile for a dynamic input (as for build)."),
    shapes: Optional[str] = typer.Option(None, "--shapes", help="Profile points to verify at: any of min,opt,max "
                                         "(default: all three for a dynamic model)."),
    point: List[str] = typer.Option([], "--point", help="NAME=DIMS: verify at these input dims instead (repeatable, one point)."),
    locate: bool = typer.Option(False, "--locate", help="Compare every node's value with PyTorch's (reference interpreter) at "
                                "the first point that mismatches and name the diverging node: strategy, arguments, error."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build the network, run the same inputs through PyTorch and through it; per output max abs / rel error.

    A dynamic model is verified at the profile's minimum, an interior point and its maximum. Exits 1 on a mismatch
    beyond the per-dtype tolerance. --locate finds the node the mismatch starts at."""
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.planning.fixtures import Settings
    from opmap.checking.verify import ReferenceFailed, draw_inputs, load_inputs, locate as locate_node, verify_built

    _check_backend_and_precision(backend, precision)
    if runtime not in ("reference", "trt"):
        raise OpmapError(f"unknown runtime {runtime!r}: choose reference or trt")
    prof = profile(backend)
    if runtime == "trt" and prof.is_rtx:
        raise OpmapError("--runtime trt needs full TensorRT (tensorrt) and a supported GPU; here the backend is tensorrt_rtx, "
                         "whose engines are built ahead-of-time but cannot run on this machine")
    profile_shapes = svc.parse_shapes(shape)
    if sum(bool(x) for x in (inputs, shapes, point)) > 1:
        raise OpmapError("--inputs, --shapes and --point each choose where to verify: give one of them")
    with _progress(not as_json) as progress:
        captured, catalog, ruleset, task = _capture_and_open(model, unsafe_pickle, input_shape, progress, dynamic)
        svc.check_shapes(captured.graph, profile_shapes)
        points = svc.verify_points(captured.graph, profile_shapes, shapes, point)
        plan, built = svc.build(captured, catalog, ruleset, prof, Settings(precision=precision, declared_bounds=_bounds(bound)), precision, profile_shapes,
                                on_node=lambda _n: progress.advance(task), int8_budget=int8_budget, protect=protect_discrete)
        reports, skipped = {}, {}
        progress.update(task, description="verifying", total=len(points) if not inputs else 1, completed=0)
        runs = [("given", *load_inputs(str(inputs), captured.graph))] if inputs else \
            [(label, *draw_inputs(captured.graph, seed, values)) for label, values in points.items()]
        for label, values, drawn in runs:
            try:
                reports[label] = verify_built(built, captured.program, values, runtime, seed=seed, precision=precision, drawn=drawn)
            except ReferenceFailed as exc:
                skipped[label] = str(exc)
            progress.advance(task)
        located = None
        if locate and reports:
            progress.update(task, description="locating", total=1, completed=0)
            where, values = svc.locate_point(reports, runs)
            located = locate_node(built, plan, captured.program, values, seed=seed, precision=precision, point=where)
    if not reports:
        raise OpmapError(f"nothing verified: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}", exit_code=1)
    ok = all(r.ok for r in reports.values())
    if as_json:
        _emit_json(svc.verify_json(reports, built, str(model), runtime, skipped, located))
    else:
        from opmap.report import print_locate, print_verify

        for label, report in reports.items():
            print_verify(out, report, built, runtime, label if len(runs) > 1 or label not in ("static", "given") else None)
        for label, why in skipped.items():
            out.print(f"point {label} skipped: {why}", markup=False, highlight=False)
        if located is not None:
            print_locate(out, located)
    raise typer.Exit(0 if ok else 1)


# -- compare ---------------------------------------------------------------------------------------
@app.command()
def compare(
    model: Path = typer.Argument(..., help="The model file (as for suggest)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="tensorrt | tensorrt_rtx (default: tensorrt if importable)."),
    check: bool = typer.Option(False, "--check", help="Where both routes build, run both networks through the reference "
                               "interpreter on the same inputs and compare their outputs."),
    seed: int = typer.Option(0, "--seed", help="Seed for --check's inputs."),
    unsafe_pickle: bool = _TRUST_OPTION,
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224[:dtype] for pickled or scripted models."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the graph page, with the ONNX route's outcome per node."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as one JSON object (schema in the README)."),
    estimate: bool = typer.Option(False, "--estimate", help="Estimate both networks' latency with the one cost model, fp32 "
                                  "and fp16, at the export's sizes and at served sizes its dynamic dims allow (an estimate: "
                                  "no engine runs)."),
) -> None:
    """opmap beside the ONNX route (torch.onnx dynamo export -> the backend's ONNX parser -> build), node by node.

    Exits 1 when opmap has a node without a mapping (as suggest does)."""
    from opmap.onnxroute import comparison_json, compare as run_compare, require_onnx
    from opmap.building.backend import profile
    from opmap.planning.fixtures import Settings

    _check_backend_and_precision(backend, "fp32")
    require_onnx()
    with _progress(not as_json) as progress:
        captured, catalog, ruleset, task = _capture_and_open(model, unsafe_pickle, input_shape, progress)
        result = run_compare(captured, catalog, ruleset, profile(backend), Settings(), check=check, seed=seed,
                             on_node=lambda _n: progress.advance(task), estimate=estimate)
    if html is not None:
        from opmap.graphpage import write_page

        write_page(html, result.plan, None, str(model), onnx=result)
    if as_json:
        _emit_json(comparison_json(result, str(model)))
    else:
        from opmap.report import print_compare

        print_compare(out, result)
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="The model file (as for suggest)."),
    data: Optional[Path] = typer.Option(None, "--data", help="torch.save'd input dict or list of them, or a directory of such files."),
    generate: Optional[int] = typer.Option(None, "--generate", help="No data: draw N batches as verify draws its inputs (labelled so)."),
    seed: int = typer.Option(0, "--seed", help="First seed for --generate."),
    percentile: float = typer.Option(99.99, "--percentile", help="The percentile of |x| recorded beside the max."),
    unsafe_pickle: bool = _TRUST_OPTION,
    input_shape: List[str] = typer.Option([], "--input-shape", help="NAME=1x3x224x224[:dtype] for pickled or scripted models."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run calibration batches through PyTorch; store activation ranges and per-channel weight ranges for --precision int8."""
    from opmap import app as svc
    from opmap import calibrate as cal
    from opmap.loading.capture import InputSpec, capture

    captured = capture(model, unsafe_pickle=unsafe_pickle, input_shapes=[InputSpec.parse(x) for x in input_shape])
    catalog, _ = svc.open_catalog(state.db)
    row = cal.calibrate(catalog, captured, str(model), data=data, generate=generate, seed=seed, percentile=percentile)
    summary = {"calibration_id": row.id, "model_sha256": row.model_sha256, "source": row.source, "generated": row.generated,
               "batches": row.batches, "percentile": row.percentile, "activations": len(row.ranges["activations"]),
               "weights": len(row.ranges["weights"])}
    if as_json:
        _emit_json({**summary, "ranges": row.ranges})
        return
    out.print(f"calibration {row.id} of {model} ({row.model_sha256[:12]}): {summary['activations']} activation ranges, "
              f"{summary['weights']} weights; {row.source}", highlight=False)


@app.command()
def measure(
    op: Optional[str] = typer.Option(None, "--op", help="Only strategies for this ATen op (e.g. aten.cumsum.default)."),
    strategy_id: Optional[str] = typer.Option(None, "--strategy", help="Only this strategy."),
    k: Optional[str] = typer.Option(None, "-k", help="Select strategies by id/name/op substring."),
    backend: Optional[str] = typer.Option(None, "--backend", help="tensorrt | tensorrt_rtx."),
    device_profile: Optional[Path] = typer.Option(None, "--profile", help="Device profile JSON (default: the shipped H200 profile)."),
    seeds: int = typer.Option(8, "--seeds", max=10_000, help="Seeded input redraws for approximate strategies' accuracy."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | float16 | bfloat16: measure with float inputs in this dtype."),
    model: Optional[Path] = typer.Option(None, "--model", help="Measure at the sizes of this model's nodes (its shapes become the buckets)."),
    trust_model: bool = _TRUST_OPTION,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure strategies (real builds, interpreter accuracy, estimated latency) and store the rows with provenance."""
    from opmap import app as svc
    from opmap import measure as meas
    from opmap.building.backend import BACKENDS, default_backend
    from opmap.planning.collect import select
    from opmap.checking.costmodel import DeviceProfile

    if backend is not None and backend not in BACKENDS:
        raise OpmapError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if seeds < 1:
        raise OpmapError("--seeds must be at least 1")
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise OpmapError(f"unknown --dtype {dtype!r}: choose float32, float16 or bfloat16")
    if device_profile is not None and not device_profile.is_file():
        raise OpmapError(f"{device_profile}: no such device profile")
    try:
        prof = DeviceProfile.load(str(device_profile) if device_profile else None)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OpmapError(f"{device_profile}: not a device profile ({type(exc).__name__}: {first_line(exc)})") from None
    catalog, ruleset = svc.open_catalog(state.db)
    chosen = [s for s in select(ruleset.strategies.values(), k, None)
              if (op is None or op in s.ops) and (strategy_id is None or s.id == strategy_id)]
    examples = None
    if model is not None:
        from opmap.loading.capture import capture

        examples = meas.node_examples(capture(model, trust_model=trust_model).graph, ruleset.strategies)
        chosen = [s for s in chosen if s.id in examples]
    if not chosen:
        raise OpmapError("no strategy matches the selection (see `opmap rules list`)")
    with _progress(not as_json) as progress:
        task = progress.add_task("measuring", total=len(chosen))
        rows = meas.run(catalog, ruleset, chosen, backend or default_backend(), prof, seeds, on_done=lambda _s: progress.advance(task),
                        dtype=dtype, examples=examples)
    if as_json:
        _emit_json(meas.to_json(rows))
        return
    from opmap.report import measurements_table

    out.print(measurements_table(rows))
    built = sum(1 for r in rows if r.build_ok)
    out.rule(f"{len(rows)} measurements of {len(chosen)} strategies: {built} built, {len(rows) - built} not buildable here; "
             f"latency estimated with {prof.card}")


@app.command()
def doctor(as_json: bool = typer.Option(False, "--json")) -> None:
    """What this machine can and cannot do: backends, plugins, probe builds, whether engines can run here."""
    from opmap.building.backend import BACKENDS, PROBES, default_backend, profile

    report = {"default_backend": default_backend(), "backends": {}}
    for name in BACKENDS:
        p = profile(name)
        report["backends"][name] = {
            "installed": p.installed, "version": p.version, "plugins": p.plugins,
            "probes": {probe: {"ok": r.ok, "message": r.message} for probe in PROBES for r in [p.builds(probe)]},
        }
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        gpu = None
    full = report["backends"]["tensorrt"]["installed"]
    report["gpu"] = gpu
    report["engines_run_here"] = bool(full and gpu)
    report["summary"] = (
        "engines are built ahead-of-time; none can be executed here"
        + ("" if gpu else " (no CUDA GPU visible)")
        + ("" if full else "; full TensorRT is not installed, so `verify --runtime trt` is unavailable")
        if not report["engines_run_here"]
        else f"engines can be built and executed here on {gpu}"
    )
    if as_json:
        _emit_json(report)
        return
    from opmap.report import print_doctor

    print_doctor(out, report)


# -- rules -----------------------------------------------------------------------------------------
@rules_app.command("list")
def rules_list(
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Show source, hash and doc."),
    k: Optional[str] = typer.Option(None, "-k", help="Select by id/name/op substring: 'nonzero and not plugin'."),
    m: Optional[str] = typer.Option(None, "-m", help="Select by tag, kind or origin: 'user or approximate'."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What rules exist, from where, which version."""
    from opmap import app as svc
    from opmap.planning.collect import select

    catalog, ruleset = svc.open_catalog(state.db, write=False)
    enabled = {row.id for row in catalog.strategy_rows()}
    chosen = [s for s in select(ruleset.strategies.values(), k, m) if s.id in enabled]
    if as_json:
        _emit_json([
            {"id": s.id, "kind": s.kind, "version": s.version, "origin": s.origin, "ops": list(s.ops), "tags": list(s.tags),
             "source": s.source_path, "source_hash": s.source_hash, "doc": s.doc, "contract": s.contract}
            for s in chosen
        ])
        return
    from opmap.report import rules_table

    out.print(rules_table(chosen, verbose))
    for problem in ruleset.problems:
        err.print(f"warning: {problem}", style="yellow")
    out.print(f"{len(chosen)} strategies selected (of {len(enabled)}), catalog {catalog.display_url} v{catalog.version}")


@rules_app.command("add")
def rules_add(
    path: Path = typer.Argument(..., help="A rule_*.py file, or a directory of them."),
    do_measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the added strategies at once (default), "
                                    "so they compete on cost; an unmeasured strategy never beats a measured one."),
) -> None:
    """Register a user's rule file(s) into the catalog (validated first; nothing is stored on error)."""
    from opmap import app as svc
    from opmap import measure as meas
    from opmap.building.backend import default_backend
    from opmap.planning.collect import rule_files
    from opmap.checking.costmodel import DeviceProfile

    files = rule_files(path)
    catalog, ruleset = svc.open_catalog(state.db)
    # every file loads, loads again from the stored text and runs its examples before the catalog commits, or nothing is stored
    loaded, ids, ruleset = svc.add_user_files(catalog, files, ruleset)
    for file, _, strategies in loaded:
        out.print(f"added {len(strategies)} strateg{'y' if len(strategies) == 1 else 'ies'} from {file}: {', '.join(s.id for s in strategies)}")
    if do_measure:
        rows = meas.run(catalog, ruleset, [ruleset.strategies[i] for i in ids], default_backend(), DeviceProfile.load(), seeds=3)
        built = sum(1 for r in rows if r.build_ok)
        out.print(f"measured {len(ids)} strateg{'y' if len(ids) == 1 else 'ies'}: {built} of {len(rows)} example builds succeeded"
                  + ("" if built == len(rows) else " (see `opmap measure --strategy ID` for the errors)"))
    out.print(f"catalog {catalog.display_url} is now v{catalog.version}")


@rules_app.command("remove")
def rules_remove(strategy_id: str = typer.Argument(..., help="The id of a user strategy.")) -> None:
    """Remove a user strategy from the catalog (past runs keep their verdicts)."""
    from opmap import app as svc

    catalog, _ = svc.open_catalog(state.db)
    catalog.remove_user_rule(strategy_id)
    out.print(f"removed {strategy_id}; catalog v{catalog.version}")


@rules_app.command("test")
def rules_test(
    path: Optional[Path] = typer.Argument(None, help="A rule file or directory (default: every rule in the catalog)."),
    k: Optional[str] = typer.Option(None, "-k", help="Select by id/name/op substring."),
    m: Optional[str] = typer.Option(None, "-m", help="Select by tag, kind or origin."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Show passing examples too."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run every rule's own accept/reject examples. Exits 1 if any fails."""
    from opmap import app as svc
    from opmap.planning.collect import RuleSet, load_source, rule_files, select
    from opmap.checking.examples import run_examples

    if path is not None:
        base = svc.load_rules(None)
        ruleset = RuleSet(fixtures=base.fixtures)
        for file in rule_files(path):
            ruleset.add(load_source(svc.read_rule_file(file), str(file.resolve()), origin="user"))
        ops = frozenset(op for s in list(base.strategies.values()) + list(ruleset.strategies.values()) for op in s.ops if op != "*")
    else:
        catalog, ruleset = svc.open_catalog(state.db, write=False)
        ops = frozenset(op for op in catalog.candidates_by_op() if op != "*")
    chosen = select(ruleset.strategies.values(), k, m)
    with _progress(not as_json) as progress:
        task = progress.add_task("rule examples", total=len(chosen))
        results = run_examples(chosen, ruleset, ops, on_done=lambda _s: progress.advance(task))
    if as_json:
        _emit_json([{"strategy": r.strategy, "example": r.label, "passed": r.passed, "message": r.message} for r in results])
    else:
        from opmap.report import print_example_results

        print_example_results(out, results, verbose)
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


# -- audit -----------------------------------------------------------------------------------------
@app.command()
def audit(
    run: Optional[int] = typer.Argument(None, min=1, max=2**63 - 1, help="A run id (see `opmap audit`)."),
    node: Optional[str] = typer.Option(None, "--node", help="Show every verdict for one node, with reason and evidence."),
    diff: Optional[int] = typer.Option(None, "--diff", min=1, max=2**63 - 1, help="Compare RUN with this later (or earlier) run."),
    limit: int = typer.Option(50, "--limit", min=1, max=2**31 - 1, help="How many runs to list."),
    as_json: bool = typer.Option(False, "--json"),
    html: Optional[Path] = typer.Option(None, "--html", help="Write RUN's decisions as the graph page (the model file is "
                                        "read again for the graph's edges; it must be unchanged)."),
) -> None:
    """Past runs; the decisions of one run; one node's verdicts; what changed between two runs."""
    from opmap import app as svc
    from opmap.db import Catalog
    from opmap.report import decisions_table, print_node, runs_table

    catalog = Catalog(state.db)
    if run is None:
        if node or diff is not None:
            raise OpmapError("--node and --diff need a RUN id (see `opmap audit`)")
        runs = catalog.runs(limit)
        if as_json:
            _emit_json([{"run_id": r.id, "created_at": r.created_at.isoformat(), "model": r.model_path, "backend": r.backend,
                         "catalog_version": r.catalog_version, "summary": r.summary} for r in runs])
        elif runs:
            out.print(runs_table(runs))
        else:
            out.print(f"no runs yet in {catalog.display_url}; `opmap suggest MODEL` records one")
        return
    the_run = catalog.run(run)
    if html is not None:
        from opmap.graphpage import run_graph, write_run_page

        write_run_page(html, the_run, run_graph(the_run))
    if diff is not None:
        result = svc.diff_runs(the_run, catalog.run(diff))
        if as_json:
            _emit_json(result)
            return
        _print_diff(result)
        return
    if node is not None:
        decision = next((d for d in the_run.decisions if d.node == node), None)
        if decision is None:
            raise OpmapError(f"run {run} has no node {node!r}")
        if as_json:
            _emit_json(svc.run_json(the_run, node))
        else:
            print_node(out, the_run, decision)
        return
    if as_json:
        _emit_json(svc.run_json(the_run))
    else:
        out.print(decisions_table(the_run))


def _print_diff(result: dict) -> None:
    a, b = result["from"], result["to"]
    out.print(f"[bold]run {a} -> run {b}[/bold]: catalog v{result['catalog_version'][0]} -> v{result['catalog_version'][1]}"
              + ("; the model file changed" if result["model_changed"] else "")
              + (f"; backend {result['backend'][0]} -> {result['backend'][1]}" if result["backend"][0] != result["backend"][1] else ""))
    if not result["changes"]:
        out.print("no decision changed")
        return
    for c in result["changes"]:
        x, y = c["choice"]
        head = f"[bold]{c['node']}[/bold] ({c['op']}): "
        head += f"{x or 'no mapping'} -> {y or 'no mapping'}" if c["change"] == "choice" else c["change"]
        out.print(head)
        for note in c["verdicts"]:
            out.print(f"    {note}", markup=False)
        if c.get("why") and c["change"] == "choice":
            out.print(f"    why: {c['why']}", markup=False)
    changed = sum(1 for c in result["changes"] if c["change"] == "choice")
    out.rule(f"{changed} decisions changed, {len(result['changes']) - changed} nodes with changed verdicts only")


# -- entry point -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None, _process: bool = False) -> int:
    """Console entry point: one-line errors, never a traceback (OPMAP_DEBUG=1 shows it). Ctrl-C: exit 130, one line."""
    from opmap import interrupt

    command = typer.main.get_command(app)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT)
    interrupt.install()
    try:
        try:
            code = command.main(args=argv, prog_name="opmap", standalone_mode=False)
        finally:
            if in_main:  # the command is over: a Ctrl-C from here on is too late to stop anything
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            interrupt.check()  # a Ctrl-C that something swallowed (or turned into another error) ends the command as interrupted
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted")
        code = 130
    except OpmapError as exc:
        if exc.exit_code == 3 and os.environ.get("OPMAP_DEBUG"):  # an internal error carrying its cause: show the trace
            raise
        internal = "internal error" if exc.exit_code == 3 else "error"
        hint = " (set OPMAP_DEBUG=1 for the traceback)" if exc.exit_code == 3 else ""
        err.print(f"{internal}: {exc}{hint}", style="red", highlight=False, soft_wrap=True, markup=False)
        code = exc.exit_code
    except OSError as exc:  # the file system refused a path the user gave (too long, read-only, not a directory, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"error: {where}{exc.strerror or first_line(exc)}", style="red", highlight=False, soft_wrap=True)
        code = 2
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # a usage error from Typer/Click
            err.print(f"error: {exc.format_message()}", style="red", highlight=False, soft_wrap=True)
            return 2
        # Anything else is a bug in opmap: say so in one line.
        if os.environ.get("OPMAP_DEBUG"):
            raise
        err.print(f"internal error: {type(exc).__name__}: {exc} (set OPMAP_DEBUG=1 for the traceback)", style="red",
                  highlight=False, soft_wrap=True)
        code = 3
    finally:
        if in_main:
            # int(): CPython's finalization resets a handler that is not exactly the int SIG_IGN back to SIG_DFL
            signal.signal(signal.SIGINT, int(signal.SIG_IGN) if _process else previous)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    return int(code or 0)


def _tune_gc() -> None:
    """One command, one process: torch's import and a loaded program leave ~10^6 long-lived objects, and CPython's
    default thresholds rescan them all in full collections again and again (seconds on a large model; a bare
    ``torch.export.load`` pays them too). Young garbage is still collected as usual; full collections become rare.
    Only at the process entry point: a library caller's collector stays its own."""
    gc.set_threshold(50_000, 20, 100)


def entry() -> None:
    _tune_gc()
    try:
        code = main(_process=True)
    except KeyboardInterrupt:  # a Ctrl-C noted twice (native code re-delivering it) while the first was reported
        code = 130  # not re-raised: CPython would end the process by SIGINT (-2) instead of exiting 130
    gc.freeze()  # the process ends here: the collection at interpreter exit would only rescan what the OS frees anyway
    if code == 130:
        # Interrupted: nothing is left to finish (catalog writes are transactions, engines are renamed into place), and
        # interpreter finalization could still deliver a pending SIGINT with the default action (exit -2, not 130).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        # A rule module left a thread running (reported as an error): exit anyway rather than hang on it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
