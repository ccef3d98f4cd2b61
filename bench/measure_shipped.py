"""Regenerate the measurements shipped with opmap (opmap/data/measurements.json): every built-in strategy on its
own examples (the default buckets), plus the census buckets: the node sizes of the bundled detector and of three zoo
architectures. Run by `make measurements`; the shipped file must be regenerated whenever a rule's source changes.

Rows of a strategy whose source hash is unchanged are kept as they are (a measurement is a function of the strategy's
source, the backend and the device profile, all recorded in the row); only strategies that are new or changed are
measured again. `--all` measures every strategy afresh (after a backend or device-profile change); `--only a,b` those
strategies again (after a change to what checks them, such as the reference interpreter)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.detector import export_detector  # noqa: E402
from examples.zoo import export_transformer  # noqa: E402
from opmap import service as svc  # noqa: E402
from opmap import measuring as meas  # noqa: E402
from opmap.loading.capture import capture  # noqa: E402
from opmap.checking.costmodel import DeviceProfile  # noqa: E402

CENSUS = {"detector": export_detector, "bert": lambda: export_transformer("bert"),
          "llama": lambda: export_transformer("llama"), "vit": lambda: export_transformer("vit")}


def main(argv: list[str] | None = None) -> None:
    from rich.progress import track

    args = sys.argv[1:] if argv is None else argv
    fresh = "--all" in args
    # --only a,b: measure these again although their source is unchanged (what checks them changed: the interpreter)
    again = set(args[args.index("--only") + 1].split(",")) if "--only" in args else set()
    out = ROOT / "opmap" / "data" / "measurements.json"
    profile = DeviceProfile.load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        catalog, ruleset = svc.open_catalog(str(Path(tmp) / "catalog.db"))
        builtin = [s for s in ruleset.strategies.values() if s.origin == "builtin"]
        current = {s.id: s.source_hash for s in builtin}
        kept = [] if fresh or not out.exists() else \
            [r for r in json.loads(out.read_text()) if current.get(r["strategy_id"]) == r["source_hash"]
             and r["strategy_id"] not in again]
        unchanged = {r["strategy_id"] for r in kept}
        strategies = [s for s in builtin if s.id not in unchanged]
        print(f"keeping {len(kept)} measurements of {len(unchanged)} unchanged strategies; measuring {len(strategies)}")
        for strat in track(strategies, description="default buckets"):
            rows += meas.measure_strategy(strat, ruleset, "tensorrt_rtx", profile, seeds=8)
        for name, make in CENSUS.items():
            path = Path(tmp) / f"{name}.pt2"
            torch.export.save(make(), str(path))
            examples = meas.node_examples(capture(path).graph, ruleset.strategies)
            for strat in track([s for s in strategies if s.id in examples], description=f"{name} buckets"):
                rows += meas.measure_strategy(strat, ruleset, "tensorrt_rtx", profile, seeds=8, examples=examples[strat.id])
    merged = kept + meas.to_json(rows)
    order = {s.id: i for i, s in enumerate(builtin)}
    merged.sort(key=lambda r: order.get(r["strategy_id"], len(order)))  # stable: each strategy's rows keep their order
    out.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"{len(rows)} measured, {len(kept)} kept -> {out}")


if __name__ == "__main__":
    main()
