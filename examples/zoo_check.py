"""One zoo row: export an architecture one way (positional/keyword × static/dynamic), build it on a backend through the
app services, and verify it by the reference interpreter — at the profile's min, an interior point and its max when
dims are dynamic. Every failure is kept with its first line; nothing is skipped silently."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from examples.zoo import export_arch
from opmap.errors import first_line

# in the order a sweep runs them: keyword first (the usual way), static before dynamic
VARIANTS = {"keyword static": (True, False), "keyword dynamic": (True, True),
            "positional static": (False, False), "positional dynamic": (False, True)}


@dataclass
class Row:
    model: str
    variant: str
    nodes: int | None = None
    built: bool = False
    build_s: float | None = None
    engine_bytes: int | None = None
    verified: dict[str, bool] = field(default_factory=dict)  # point ("static", "min", "opt", "max") -> ok
    max_abs: float | None = None
    dynamic_dims: str = ""  # the dims left symbolic, with their ranges
    failure: str = ""  # first line of the first thing that failed (export, plan/build, verify)
    note: str = ""  # e.g. dims torch.export kept static, and why
    detail: str = ""  # the whole message of a failed build (every unmapped node and why)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.built and bool(self.verified) and all(self.verified.values()) and not self.failure


def _fail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"[:200]


def check(name: str, variant: str, catalog, ruleset, backend: str = "tensorrt_rtx",
          export: Callable[[], tuple[torch.export.ExportedProgram, str]] | None = None) -> Row:
    """Export (a zoo architecture by ``variant``, or by ``export()`` returning (program, note)), save and load the .pt2 (as
    a user's file), build and verify; the result as a :class:`Row`."""
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.loading.capture import capture
    from opmap.planning.fixtures import Settings
    from opmap.checking.verify import ReferenceFailed, draw_inputs, verify_built
    from opmap.building.profile import profile_points

    start = time.perf_counter()
    row = Row(name, variant)
    try:
        program, row.note = export() if export else export_arch(name, *VARIANTS[variant])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.pt2"
            torch.export.save(program, str(path))
            captured = capture(path)
    except Exception as exc:  # torch.export (or loading its file) refused the model this way
        row.failure, row.seconds = f"export: {_fail(exc)}", time.perf_counter() - start
        return row
    graph = captured.graph
    row.nodes = len(graph)
    points = profile_points(graph) or {"static": {}}
    if "min" in points:
        row.dynamic_dims = ", ".join(f"{s}∈[{points['min'][s]}, {points['max'][s]}]" for s in points.get("min", {}))
    try:
        _, built = svc.build(captured, catalog, ruleset, profile(backend), Settings())
    except Exception as exc:  # an OpmapError (no mapping, a failed build) or an emitter's own error
        row.failure, row.detail, row.seconds = f"build: {_fail(exc)}", str(exc), time.perf_counter() - start
        return row
    row.built, row.build_s, row.engine_bytes = True, built.build_seconds, len(built.engine or b"")
    worst = 0.0
    for label, point in points.items():
        try:
            report = verify_built(built, captured.program, draw_inputs(graph, seed=0, point=point)[0], seed=0)
        except ReferenceFailed as exc:
            row.verified[label] = False
            row.failure = row.failure or f"verify at {label}: {first_line(exc)[:160]}"
            continue
        except Exception as exc:  # the reference interpreter could not run the network at this point
            row.verified[label] = False
            row.failure = row.failure or f"verify at {label}: {_fail(exc)}"
            continue
        row.verified[label] = report.ok and report.compared == report.expected > 0
        finite = [o.max_abs for o in report.outputs if o.max_abs == o.max_abs]
        worst = max([worst, *finite])
        if not row.verified[label] and not row.failure:
            bad = [o for o in report.outputs if not o.ok]
            row.failure = (f"verify at {label}: {len(bad)} of {report.expected} outputs differ"
                           + (f" ({bad[0].name}: {bad[0].note or f'max abs {bad[0].max_abs:.2e}'})" if bad else
                              f" (compared {report.compared} of {report.expected})"))
    row.max_abs = worst
    row.seconds = time.perf_counter() - start
    return row
