"""Calibration: activation ranges and per-channel weight ranges, measured by running batches through PyTorch.

The batches run through the exported program's flat graph with its lifted weights (as ``verify`` runs it; never
``program.module()``, which would run the archive's guard code). Every float value a node produces (and every float
user input) gets its max |x| and a percentile of |x|; every float weight of rank >= 2 gets its max |w| per output
channel (axis 0), and a 2-D one also per column (axis 1: the output channel of a [K, N] weight that mm/addmm
multiply by). The result is stored in the catalog's ``calibrations`` table, tied to the model file's sha256, with what
the batches were — user data (a file or a directory of ``torch.save``d input dicts) or batches drawn by
:func:`opmap.checking.verify.draw_inputs`, labelled as generated — so that the placement can redraw the same batches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

import opmap
from opmap.loading.graph import Graph
from opmap.errors import OpmapError, first_line, load_failure

PERCENTILE = 99.99  # of |x|, per batch, averaged over batches: clips rare outliers that would waste INT8's range
MAX_SAMPLE = 1 << 20  # elements a percentile looks at per value (a strided sample beyond that)
MAX_BATCHES = 64


class CalibrationError(OpmapError):
    """Calibration data that cannot be used, or no calibration where one is needed."""


# -- the batches -------------------------------------------------------------------------------------------------
def _load(path: Path) -> list[Any]:
    from opmap.loading.archive import inspect_file

    inspect_file(Path(path))  # the zip structure limits of model files (sizes, ratios, names) before torch reads it
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CalibrationError(f"{path}: cannot load calibration data: {load_failure(exc)} "
                               "(expected torch.save of an input dict or a list of them)") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(b, dict) and all(isinstance(v, torch.Tensor) for v in b.values()) for b in items):
        raise CalibrationError(f"{path}: expected a dict of input name -> tensor, or a list of them")
    return items


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise CalibrationError(f"{path}: the directory holds no calibration files")
        return files
    if not path.is_file():
        raise CalibrationError(f"{path}: no such file or directory")
    return [path]


def data_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in _files(path):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def load_batches(path: Path, graph: Graph) -> list[dict[str, torch.Tensor]]:
    """``--data``: a file (one input dict or a list of them) or a directory of such files, each batch checked
    against the export as ``verify --inputs`` checks its inputs."""
    from opmap.checking.verify import check_inputs

    batches = [check_inputs(b, graph, f"{f}[{i}]") for f in _files(path) for i, b in enumerate(_load(f))]
    if len(batches) > MAX_BATCHES:
        raise CalibrationError(f"{path}: {len(batches)} batches; at most {MAX_BATCHES} are used for calibration")
    return batches


def generate_points(graph: Graph) -> list[dict[str, int] | None]:
    """The shapes generated batches take in turn: for dynamic dims, the profile's interior point and its maximum (so
    the ranges see full-length sequences and the largest images, not verify's default of 2 per dim); ``[None]`` for a
    static graph or dims without an upper bound (verify's default then)."""
    from opmap.building.profile import profile_points

    try:
        points = profile_points(graph)
    except OpmapError:  # a dim with no upper bound: no profile to draw from
        return [None]
    return [points["opt"], points["max"]] if points else [None]


def generate_batches(graph: Graph, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``--generate N``: N batches drawn as verify draws its inputs (seeds seed .. seed+N-1), at the shapes of
    :func:`generate_points` in turn."""
    from opmap.checking.verify import draw_inputs

    points = generate_points(graph)
    return [draw_inputs(graph, seed + i, points[i % len(points)])[0] for i in range(n)]


def batches_of(calib: Any, graph: Graph) -> list[dict[str, torch.Tensor]]:
    """The batches a stored calibration was measured on, redrawn or reloaded (the data must be unchanged)."""
    data = calib.data or {}
    if "generate" in data:
        return generate_batches(graph, int(data["generate"]), int(data.get("seed", 0)))
    path = Path(data["path"])
    if not path.exists() or data_sha256(path) != data.get("sha256"):
        raise CalibrationError(f"calibration {calib.id} was measured on {path}, which is gone or has changed since; "
                               "run `opmap calibrate` again")
    return load_batches(path, graph)


# -- observing ---------------------------------------------------------------------------------------------------
def _abs_percentile(x: torch.Tensor, q: float) -> float:
    flat = x.detach().reshape(-1).abs().float()
    if flat.numel() > MAX_SAMPLE:
        flat = flat[:: flat.numel() // MAX_SAMPLE + 1]
    return float(torch.quantile(flat, q / 100.0)) if flat.numel() else 0.0


def observe(program: Any, batches: list[dict[str, torch.Tensor]], percentile: float = PERCENTILE) -> dict[str, Any]:
    """Activation ranges per graph value (user inputs and node outputs; a tuple output's items as ``name#i``) and
    per-channel weight ranges, from running every batch through PyTorch."""
    from torch.export.graph_signature import InputKind

    from opmap.building.builder import weights_of
    from opmap.checking.verify import lifted_inputs

    user = {spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT}
    stats: dict[str, dict[str, list[float]]] = {}

    def note(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel():
            entry = stats.setdefault(name, {"amax": [], "pct": []})
            entry["amax"].append(float(value.detach().abs().max()))
            entry["pct"].append(_abs_percentile(value, percentile))

    class Observer(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if n.op == "placeholder" and n.name not in user:
                return result  # weights: per channel, below
            if isinstance(result, (list, tuple)):
                for i, item in enumerate(result):
                    note(f"{n.name}#{i}", item)
            else:
                note(n.name, result)
            return result

    for i, batch in enumerate(batches):
        try:
            with torch.no_grad():
                Observer(program.graph_module).run(*lifted_inputs(program, batch))
        except OpmapError:
            raise
        except Exception as exc:
            raise CalibrationError(f"PyTorch fails on calibration batch {i}: {type(exc).__name__}: {first_line(exc)}") from None
    activations = {k: {"amax": max(v["amax"]), "percentile": sum(v["pct"]) / len(v["pct"])} for k, v in stats.items()}
    weights = {}
    for name, w in weights_of(program).items():
        if w.is_floating_point() and w.numel():
            a = w.detach().float().abs()
            per_channel = a.reshape(w.shape[0], -1).amax(dim=1).tolist() if w.dim() >= 2 else None
            columns = a.amax(dim=0).tolist() if w.dim() == 2 else None  # a [K, N] right operand of mm/addmm: per column
            weights[name] = {"amax": float(a.max()), "channels": per_channel, "axis": 0, "columns": columns}
    return {"activations": activations, "weights": weights, "percentile": percentile}


# -- the catalog ---------------------------------------------------------------------------------------------------
def calibrate(catalog: Any, captured: Any, model_path: str, data: Path | None = None, generate: int | None = None,
              seed: int = 0, percentile: float = PERCENTILE) -> Any:
    """Measure and store a calibration; returns the stored row."""
    from opmap.db.models import Calibration

    if (data is None) == (generate is None):
        raise CalibrationError("give calibration data (--data FILE|DIR) or --generate N to draw N batches, not both")
    if captured.sha256 is None:
        raise CalibrationError("calibration is tied to a model file's hash; this model has none")
    if not 0 < percentile <= 100:
        raise CalibrationError(f"--percentile must be in (0, 100], got {percentile}")
    if data is not None:
        batches = load_batches(data, captured.graph)
        spec, source = {"path": str(data.resolve()), "sha256": data_sha256(data)}, f"data: {data} ({len(batches)} batches)"
    else:
        if not 1 <= generate <= MAX_BATCHES:
            raise CalibrationError(f"--generate must be between 1 and {MAX_BATCHES}, got {generate}")
        batches = generate_batches(captured.graph, generate, seed)
        spec = {"generate": generate, "seed": seed}
        shapes = ", ".join(sorted({"x".join(map(str, v.shape)) for b in batches for v in b.values()}))
        source = (f"generated: {generate} batches drawn as verify draws inputs (seeds {seed}..{seed + generate - 1}; "
                  f"shapes {shapes}), not user data")
    row = Calibration(model_sha256=captured.sha256, model_path=str(Path(model_path).resolve()), source=source,
                      generated=data is None, batches=len(batches), percentile=percentile, data=spec,
                      ranges=observe(captured.program, batches, percentile), opmap_version=opmap.__version__)
    with catalog.session() as s:
        s.add(row)
    return row


def latest(catalog: Any, sha256: str | None) -> Any | None:
    """The newest calibration of the model with this hash, or None."""
    from sqlalchemy import select

    from opmap.db.models import Calibration

    if sha256 is None:
        return None
    with catalog.session() as s:
        return s.scalars(select(Calibration).where(Calibration.model_sha256 == sha256).order_by(Calibration.id.desc())).first()
