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


_TOLERANCE_OPTION = typer.Option(1e-3, "--tolerance", help="Accuracy budget: max relative error an approximate strategy, "
                                 "or a node placed below fp32 (fp16, bf16), may add.")
_INT8_BUDGET_OPTION = typer.Option(2e-2, "--int8-budget", help="int8: the error a node may add, relative to its output's range.")


# -- suggest ---------------------------------------------------------------------------------------
@app.command()
def suggest(
    model: Path = typer.Argument(..., help="torch.export .pt2, or (with --trust-model) a TorchScript archive or a pickled nn.Module."),
    backend: Optional[str] = typer.Option(None, "--backend", help="tensorrt | tensorrt_rtx (default: tensorrt if importable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as one JSON object (schema in the README)."),
    reasons: bool = typer.Option(False, "-r", "--reasons", help="List every rejection and rule error with its reason."),
    all_verdicts: bool = typer.Option(False, "--all-verdicts", help="With the rejections, also list NOT_APPLICABLE skips."),
    tolerance: float = _TOLERANCE_OPTION,
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
    from opmap import service as svc

    with _progress(not as_json) as progress:
        stage, advance = _stages(progress)
        result = svc.suggest(model, db=state.db, backend=backend, precision=precision, tolerance=tolerance,
                             int8_budget=int8_budget, protect_discrete=protect_discrete, trust_model=unsafe_pickle,
                             input_shapes=input_shape, dynamic=dynamic, bounds=bound, objective=objective, record=record,
                             html=html, stage=stage, on_node=advance)
    plan = result.plan
    if as_json:
        _emit_json(svc.plan_json(plan, result.run_id, str(model)))
    else:
        from opmap.report import print_plan

        print_plan(out, plan, result.run_id, reasons=reasons, all_verdicts=all_verdicts)
    raise typer.Exit(0 if plan.complete else 1)


def _stages(progress):
    """The service's progress hooks on one task of ``progress``: a stage begins (description, total), a step is done."""
    task = None

    def stage(description: str, total: int | None = None) -> None:
        nonlocal task
        if task is None:
            task = progress.add_task(description, total=total)
        else:
            progress.update(task, description=description, total=total, completed=0)

    return stage, lambda _item: progress.advance(task)


@app.command()
def build(
    model: Path = typer.Argument(..., help="The model file (as for suggest)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the serialized engine (a .json sidecar goes beside it)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="tensorrt | tensorrt_rtx (default: tensorrt if importable)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | bf16 | int8: per-node precision, with explicit casts/Q-DQ."),
    tolerance: float = _TOLERANCE_OPTION,
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
    from opmap import service as svc
    from opmap.building.builder import write_engine

    with _progress(not as_json) as progress:
        stage, advance = _stages(progress)
        result = svc.build_model(model, db=state.db, backend=backend, precision=precision, tolerance=tolerance,
                                 int8_budget=int8_budget,
                                 protect_discrete=protect_discrete, shapes=shape, trust_model=unsafe_pickle,
                                 input_shapes=input_shape, dynamic=dynamic, bounds=bound, check=check, output=output,
                                 stage=stage, on_node=advance)
    plan, built = result.plan, result.built
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
    from opmap import service as svc

    with _progress(not as_json) as progress:
        stage, advance = _stages(progress)
        result = svc.verify(model, inputs=inputs, seed=seed, runtime=runtime, backend=backend, precision=precision,
                            int8_budget=int8_budget, protect_discrete=protect_discrete, trust_model=unsafe_pickle,
                            input_shapes=input_shape, dynamic=dynamic, bounds=bound, shapes=shape, points=shapes,
                            point=point, locate=locate, db=state.db, stage=stage, on_node=advance)
    reports, skipped, located, built = result.reports, result.skipped, result.located, result.engine.built
    if not reports:
        raise OpmapError(f"nothing verified: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}", exit_code=1)
    ok = all(r.ok for r in reports.values())
    if as_json:
        _emit_json(svc.verify_json(reports, built, str(model), runtime, skipped, located))
    else:
        from opmap.report import print_locate, print_verify

        for label, report in reports.items():
            print_verify(out, report, built, runtime, label if result.runs > 1 or label not in ("static", "given") else None)
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
    from opmap import service as svc
    from opmap.onnxroute import comparison_json

    with _progress(not as_json) as progress:
        stage, advance = _stages(progress)
        result, _ = svc.compare(model, db=state.db, backend=backend, check=check, seed=seed, trust_model=unsafe_pickle,
                                input_shapes=input_shape, stage=stage, on_node=advance,
                                estimate=estimate)
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
    from opmap import service as svc

    row = svc.calibrate(model, db=state.db, data=data, generate=generate, seed=seed, percentile=percentile,
                        trust_model=unsafe_pickle, input_shapes=input_shape)
    summary = svc.calibration_json(row)
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
    from opmap import measuring
    from opmap import service as svc

    with _progress(not as_json) as progress:
        stage, advance = _stages(progress)
        result = svc.measure(db=state.db, op=op, strategy=strategy_id, k=k, backend=backend, device_profile=device_profile,
                             seeds=seeds, dtype=dtype, model=model, trust_model=trust_model, on_done=advance, stage=stage)
    rows = result.rows
    if as_json:
        _emit_json(measuring.to_json(rows))
        return
    from opmap.report import measurements_table

    out.print(measurements_table(rows))
    built = sum(1 for r in rows if r.build_ok)
    out.rule(f"{len(rows)} measurements of {result.strategies} strategies: {built} built, {len(rows) - built} not buildable here; "
             f"latency estimated with {result.card}")


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
    from opmap import service as svc

    listed = svc.rules_list(db=state.db, k=k, m=m)
    chosen = listed.strategies
    if as_json:
        _emit_json([svc.rule_json(s) for s in chosen])
        return
    from opmap.report import rules_table

    out.print(rules_table(chosen, verbose))
    for problem in listed.problems:
        err.print(f"warning: {problem}", style="yellow")
    out.print(f"{len(chosen)} strategies selected (of {listed.enabled}), catalog {listed.display_url} v{listed.version}")


@rules_app.command("add")
def rules_add(
    path: Path = typer.Argument(..., help="A rule_*.py file, or a directory of them."),
    do_measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the added strategies at once (default), "
                                    "so they compete on cost; an unmeasured strategy never beats a measured one."),
) -> None:
    """Register a user's rule file(s) into the catalog (validated first; nothing is stored on error)."""
    from opmap import service as svc

    # every file loads, loads again from the stored text and runs its examples before the catalog commits, or nothing is stored
    added = svc.rules_add(path, db=state.db, measure=do_measure)
    for file, _, strategies in added.loaded:
        out.print(f"added {len(strategies)} strateg{'y' if len(strategies) == 1 else 'ies'} from {file}: {', '.join(s.id for s in strategies)}")
    if added.measured is not None:
        rows, ids = added.measured, added.ids
        built = sum(1 for r in rows if r.build_ok)
        out.print(f"measured {len(ids)} strateg{'y' if len(ids) == 1 else 'ies'}: {built} of {len(rows)} example builds succeeded"
                  + ("" if built == len(rows) else " (see `opmap measure --strategy ID` for the errors)"))
    out.print(f"catalog {added.display_url} is now v{added.version}")


@rules_app.command("remove")
def rules_remove(strategy_id: str = typer.Argument(..., help="The id of a user strategy.")) -> None:
    """Remove a user strategy from the catalog (past runs keep their verdicts)."""
    from opmap import service as svc

    version = svc.rules_remove(strategy_id, db=state.db)
    out.print(f"removed {strategy_id}; catalog v{version}")


@rules_app.command("test")
def rules_test(
    path: Optional[Path] = typer.Argument(None, help="A rule file or directory (default: every rule in the catalog)."),
    k: Optional[str] = typer.Option(None, "-k", help="Select by id/name/op substring."),
    m: Optional[str] = typer.Option(None, "-m", help="Select by tag, kind or origin."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Show passing examples too."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run every rule's own accept/reject examples. Exits 1 if any fails."""
    from opmap import service as svc

    with _progress(not as_json) as progress:
        stage, advance = _stages(progress)
        results = svc.rules_test(path, db=state.db, k=k, m=m, stage=stage, on_done=advance)
    if as_json:
        _emit_json([svc.example_json(r) for r in results])
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
    from opmap import service as svc
    from opmap.report import decisions_table, print_node, runs_table

    result = svc.audit(run, db=state.db, node=node, diff=diff, limit=limit, html=html)
    if as_json:
        _emit_json(result.to_json())
    elif result.diff is not None:
        _print_diff(result.diff)
    elif result.decision is not None:
        print_node(out, result.run, result.decision)
    elif result.run is not None:
        out.print(decisions_table(result.run))
    elif result.runs:
        out.print(runs_table(result.runs))
    else:
        out.print(f"no runs yet in {result.display_url}; `opmap suggest MODEL` records one")


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
