"""`opmap measure`: build, accuracy and (estimated) latency of strategies, stored with their provenance.

For every strategy and each of its accept examples (its shape buckets): a real AOT build on the backend (ok or
TensorRT's error, build time, engine bytes), the accuracy against the PyTorch op through the reference interpreter
(approximate strategies over several seeded redraws of the inputs), and a latency *estimate* from the cost model
and a device profile measured on a real GPU. Nothing is invented: what cannot be built is recorded as such.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import torch

import opmap
from opmap.db import Catalog
from opmap.db.models import Measurement
from opmap.building.backend import profile as backend_profile
from opmap.planning.collect import RuleSet
from opmap.checking.costmodel import DeviceProfile, estimate
from opmap.checking.examples import conformance
from opmap.planning.strategy import Example, Strategy
from opmap.errors import OpmapError


def bucket(ex: Example) -> tuple[str, str]:
    tensors = [x for x in ex.inputs if isinstance(x, torch.Tensor)]
    shapes = ",".join("x".join(str(d) for d in t.shape) or "scalar" for t in tensors)
    dtype = next((str(t.dtype).removeprefix("torch.") for t in tensors if t.is_floating_point()),
                 str(tensors[0].dtype).removeprefix("torch.") if tensors else "none")
    return shapes, dtype


def _redraw(ex: Example, seed: int) -> Example:
    """New inputs of the same shapes; an input drawn from [0, 1) (random samples, probabilities) stays in [0, 1)."""
    g = torch.Generator().manual_seed(seed)

    def draw(x):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            return x
        unit = x.numel() > 0 and float(x.min()) >= 0 and float(x.max()) < 1
        return (torch.rand(x.shape, generator=g) if unit else torch.randn(x.shape, generator=g)).to(x.dtype)

    inputs = tuple(draw(x) for x in ex.inputs)
    return dataclasses.replace(ex, inputs=inputs)


def _as_dtype(ex: Example, dtype: str | None) -> Example:
    """The example with its floating inputs cast to ``dtype`` (another dtype bucket)."""
    if dtype is None:
        return ex
    target = getattr(torch, dtype)
    inputs = tuple(x.to(target) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in ex.inputs)
    return dataclasses.replace(ex, inputs=inputs)


def runtime_available(backend: str) -> bool:
    """Full TensorRT and a CUDA GPU: the only place a real engine can be timed."""
    from opmap.building.backend import import_backend

    return backend == "tensorrt" and import_backend("tensorrt") is not None and torch.cuda.is_available()


def time_engine(built, inputs: dict[str, torch.Tensor], reps: int = 50) -> float:
    """Median milliseconds of the real engine (CUDA events, after a warm-up). Only where runtime_available()."""
    import statistics

    from opmap.checking.verify import run_engine

    run_engine(built, inputs)  # warm-up, and the check that it runs at all
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run_engine(built, inputs)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure_strategy(strat: Strategy, ruleset: RuleSet, backend: str, profile: DeviceProfile, seeds: int,
                     dtype: str | None = None, examples: list[Example] | None = None) -> list[Measurement]:
    rows: list[Measurement] = []
    from_model = examples is not None  # a model's nodes: a rule that rejects one is a mismatch, not a failed build
    if examples is None:
        examples = [e for e in strat.examples if e.expect == "accept"]
    if dtype is not None:  # a dtype bucket measures the examples that have float inputs to cast (not integer ones)
        examples = [_as_dtype(e, dtype) for e in examples
                    if any(isinstance(x, torch.Tensor) and x.is_floating_point() for x in e.inputs)]
    version = backend_profile(backend).version
    base = dict(strategy_id=strat.id, op=",".join(strat.ops)[:200], backend=backend, backend_version=version,
                opmap_version=opmap.__version__, source_hash=strat.source_hash)
    if strat.emit_fn is None and strat.expand_fn is None:
        rows.append(Measurement(**base, shape_bucket="-", dtype="-", build_ok=False, build_error="the strategy has no emit function",
                                provenance="measured-build"))
        return rows
    if not examples:
        rows.append(Measurement(**base, shape_bucket="-", dtype="-", build_ok=None,
                                build_error=f"no example to measure on: {strat.no_accept or 'the model has no node of its op'}",
                                provenance="unmeasured"))
        return rows
    for ex in examples:
        shapes, dtype = bucket(ex)
        row = Measurement(**base, shape_bucket=shapes[:200], dtype=dtype, provenance="measured-build")
        try:
            report, built = conformance(strat, ex, ruleset, backend)
            row.build_ok, row.build_seconds, row.engine_bytes = True, built.build_seconds, len(built.engine or b"")
            errors = [report]
            for s in range(1, seeds if strat.kind == "approximate" else 1):
                errors.append(conformance(strat, _redraw(ex, s), ruleset, backend)[0])
            outs = [o for r in errors for o in r.outputs]
            row.max_abs_err = max((o.max_abs for o in outs), default=0.0)
            row.max_rel_err = max((o.max_rel for o in outs), default=0.0)
            row.mismatch_frac = max((o.mismatch for o in outs), default=0.0)
            tensors = [x for x in ex.inputs if isinstance(x, torch.Tensor)]
            named = dict(zip(list(built.inputs), tensors))
            if runtime_available(backend):  # a real engine on a real GPU: a measurement, not an estimate
                row.latency_ms = time_engine(built, named)
                row.provenance = "measured-runtime"
                row.device = torch.cuda.get_device_name(0)
            else:
                row.latency_ms = estimate(built, named, profile, strategy=strat.id).ms  # its own layers only
                row.provenance = "estimated"  # the latency (the cost the planner compares) is a model's estimate
                row.device = f"{profile.card} (cost model, {profile.source})"
        except OpmapError as exc:
            if from_model and "which does not apply here" in str(exc):
                continue  # the rule rejects this node: nothing to measure, nothing failed
            row.build_ok, row.build_error = False, str(exc)[:2000]
        except Exception as exc:  # PyTorch itself refused the synthetic inputs of a model's node
            if from_model:
                continue
            raise
        rows.append(row)
        if row.build_ok:
            rows.extend(_precision_rows(strat, ex, ruleset, backend, profile, base, shapes))
    return rows


def _precision_rows(strat, ex, ruleset, backend, profile, base, shapes) -> list[Measurement]:
    """The strategy computed in fp16 and in bf16 (its inputs and outputs as exported), against the fp32 op: the
    evidence the planner needs before it places a node below fp32. Their error column is relative to the output's
    largest magnitude (``OutputCheck.range_rel``), not elementwise: a product's outputs near zero would otherwise
    keep every matmul in fp32 whatever its real accuracy."""
    out = []
    for prec in ("fp16", "bf16"):
        row = Measurement(**base, shape_bucket=shapes[:200], dtype=f"compute:{prec}", provenance="measured-build")
        try:
            report, built = conformance(strat, ex, ruleset, backend, node_precision=prec)
        except OpmapError as exc:
            row.build_ok, row.build_error = False, str(exc)[:2000]
            out.append(row)
            continue
        if not any(o.dtype == "float32" for o in report.outputs):
            continue  # no float output: precision does not apply
        row.build_ok, row.build_seconds, row.engine_bytes = True, built.build_seconds, len(built.engine or b"")
        row.max_abs_err = max(o.max_abs for o in report.outputs)
        row.max_rel_err = max(o.range_rel for o in report.outputs)  # relative to the output's range: see range_rel
        row.mismatch_frac = max(o.mismatch for o in report.outputs)
        named = dict(zip(list(built.inputs), [x for x in ex.inputs if isinstance(x, torch.Tensor)]))
        row.latency_ms = estimate(built, named, profile, strategy=strat.id).ms
        row.provenance, row.device = "estimated", f"{profile.card} (cost model, {profile.source})"
        out.append(row)
    return out


def run(catalog: Catalog, ruleset: RuleSet, strategies: Iterable[Strategy], backend: str, profile: DeviceProfile, seeds: int = 8,
        on_done: Callable[[Strategy], None] | None = None, dtype: str | None = None,
        examples: dict[str, list[Example]] | None = None) -> list[Measurement]:
    measured: list[Measurement] = []
    for strat in strategies:
        rows = measure_strategy(strat, ruleset, backend, profile, seeds, dtype, None if examples is None else examples.get(strat.id, []))
        catalog.add_measurements(rows)
        measured.extend(rows)
        if on_done:
            on_done(strat)
    return measured


FIELDS = ("strategy_id", "op", "shape_bucket", "dtype", "backend", "backend_version", "device", "build_ok", "build_error",
          "build_seconds", "engine_bytes", "max_abs_err", "max_rel_err", "mismatch_frac", "latency_ms", "provenance",
          "opmap_version", "source_hash")


def to_json(rows: Iterable[Measurement]) -> list[dict]:
    return [{f: getattr(r, f) for f in FIELDS} for r in rows]


def shipped_measurements(ruleset: RuleSet) -> tuple[str, Callable[[], list[Measurement]]]:
    """The measurements shipped with opmap (opmap/data/measurements.json, `make measurements`): their hash, and a
    function making the rows for rules whose source still matches (a rule edited since has no shipped numbers; they
    would be stale). :meth:`Catalog.sync` stores them once per hash."""
    import hashlib
    import json
    from importlib import resources

    try:
        text = resources.files("opmap.data").joinpath("measurements.json").read_text()
    except FileNotFoundError:
        return "", list
    digest = hashlib.sha256(text.encode()).hexdigest()

    def rows() -> list[Measurement]:
        try:
            items = json.loads(text)
            return [Measurement(**item) for item in items
                    if item["strategy_id"] in ruleset.strategies and ruleset.strategies[item["strategy_id"]].source_hash == item["source_hash"]]
        except (ValueError, KeyError, TypeError) as exc:
            ruleset.problems.append(f"the shipped measurements (opmap/data/measurements.json) are unreadable: {exc}")
            return []

    return digest, rows


def node_examples(graph, strategies: dict[str, Strategy]) -> dict[str, list[Example]]:
    """Shape buckets from a real model: each ATen node becomes an example of its own op at its own sizes (random
    inputs of the node's shapes and dtypes, its other arguments as captured), for every strategy of that op."""
    from opmap.rules.decomposition import _argument, resolve

    out: dict[str, list[Example]] = {}
    seen: set[tuple] = set()
    for node in graph:
        overload = resolve(node.op)
        if overload is None or any(not m.is_static for m in node.tensor_args().values()):
            continue  # plumbing, or sizes only known at run time
        key = (node.op, repr(sorted((k, str(graph.meta_of(v)) if hasattr(v, "node") else repr(v)) for k, v in node.args.items())))
        if key in seen:
            continue
        seen.add(key)
        positional, keywords, tensors = [], {}, []
        try:
            for p in overload._schema.arguments:
                if p.name not in node.args:
                    continue
                value = _argument(node.args[p.name], p.name, graph)
                (keywords.__setitem__(p.name, value) if p.kwarg_only else positional.append(value))
        except AssertionError:
            continue
        example = _node_example(overload, positional, keywords)
        if example is None:
            continue
        for strat in strategies.values():
            if node.op in strat.ops:
                out.setdefault(strat.id, []).append(example)
    return out


def _node_example(overload, positional, keywords) -> Example | None:
    """An Example calling the op, with the tensor arguments as inputs (filled with realistic random values)."""
    slots, tensors = [], []
    for value in positional:
        if isinstance(value, torch.Tensor):
            slots.append(("t", len(tensors)))
            tensors.append(_fill(value))
        elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            slots.append(("l", [len(tensors) + i for i in range(len(value))]))
            tensors.extend(_fill(v) for v in value)
        else:
            slots.append(("c", value))
    if not tensors:
        return None

    def call(*args):
        built = [args[s] if k == "t" else [args[i] for i in s] if k == "l" else s for k, s in slots]
        return overload(*built, **keywords)

    call.__name__ = str(overload)
    return Example(call, tuple(tensors), "accept")


def _fill(t: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(t.numel())
    if t.dtype == torch.bool:
        return torch.rand(t.shape, generator=g) > 0.5
    if t.is_floating_point():
        return torch.randn(t.shape, generator=g).to(t.dtype)
    return torch.zeros(t.shape, dtype=t.dtype)  # integers are indices, ids or sizes: 0 is valid for all of them
