"""How well opmap's cost model predicts PyTorch's own timings of the same ops on the calibration card.

    python bench/device/validate.py      # rewrites bench/device/README.md from opmap/data/device_h100.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from opmap.engine.costmodel import DeviceProfile  # noqa: E402

KIND = {"elementwise": "ELEMENTWISE", "reduce": "REDUCE", "matmul": "MATRIX", "scan": "CUMULATIVE", "gather": "GATHER", "topk": "TOPK"}


def main() -> None:
    profile = DeviceProfile.load()
    data = json.loads((ROOT / "opmap" / "data" / "device_h100.json").read_text())
    rows = []
    for v in data["validation"]:
        predicted = profile.predict(KIND[v["kind"]], v["flops"], v["bytes"])
        rows.append((v["op"], v["ms"], predicted, predicted / v["ms"]))
    ratios = sorted(r[3] for r in rows)
    lines = [
        "# Device profile and cost-model validation",
        "",
        f"Card: **{data['card']}** ({data['sm_count']} SMs, {data['memory_gib']} GiB), PyTorch {data['torch']}, CUDA {data['cuda']}.",
        "Measured by `bench/device/calibrate.py` on a lent H100 (CUDA events, warm-up, median of repeats, rotating input",
        "sets); the raw numbers are `opmap/data/device_h100.json`, which `opmap measure` uses for its latency estimates.",
        "",
        "| microbenchmark | value |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.4g} |" for k, v in data["micro"].items()]
    lines += [
        "",
        "The model charges each kernel a launch plus the larger of bytes / measured bandwidth and flops / measured",
        "throughput. Predicted against PyTorch's own timing of the same op on the same card (`python bench/device/validate.py`):",
        "",
        "| op | measured ms | predicted ms | predicted / measured |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {op} | {m:.4f} | {p:.4f} | {r:.2f} |" for op, m, p, r in rows]
    lines += ["", f"Median ratio {ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f} to {ratios[-1]:.2f}. "
              "These are estimates for TensorRT engines that could not be run here; they rank strategies, they are not "
              "engine timings."]
    (ROOT / "bench" / "device" / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 3:]))


if __name__ == "__main__":
    main()
