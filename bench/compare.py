"""opmap against the ONNX route (torch.onnx dynamo export -> TensorRT-RTX's ONNX parser -> build) on every zoo model and
the detector: who builds what, engine build times paired in one run (opmap, ONNX, opmap, ONNX), and both networks'
estimated latency (one cost model) at served sizes, fp32 and fp16.
Regenerate with `make bench-compare` (writes bench/COMPARE.md): every zoo architecture, exported by keyword as users
export, with batch, sequence and image dims dynamic up to served sizes where torch.export allows (else static), and the
detector; `--quick` runs the detector and three of them; `--only a,b` those, replacing only their rows (the rest stay
from their runs, bench/compare.json keeps them); `--run ID` adds the rows to run ID (one run made of several `--only`
invocations at one commit); `--budget SECONDS` starts no model after that long (the rest are listed as not run);
`--no-estimate` skips the latency estimates."""

from __future__ import annotations

import dataclasses
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.detector import export_detector  # noqa: E402
import examples.zoo as zoo  # noqa: E402
from examples.zoo import ZOO, export_arch  # noqa: E402
from opmap import service as svc  # noqa: E402
from opmap.onnxroute import SERVED, compare, onnx_profile, parse_onnx  # noqa: E402
from opmap.building.backend import profile  # noqa: E402
from opmap.native import native_stderr_silenced  # noqa: E402
from opmap.building.builder import build_network, serialize  # noqa: E402
from opmap.loading.capture import capture  # noqa: E402
from opmap.planning.fixtures import Settings  # noqa: E402
from opmap.errors import OpmapError, first_line  # noqa: E402

QUICK = ("bert", "gpt2", "vit")
# the dynamic dims' ranges, up to the served sizes (the zoo's tiny configs hold 128 positions: sequences stop there)
SERVED_RANGES = {"batch": (1, 32), "seq": (2, 128), "dec_seq": (2, 128), "height": (32, 224), "width": (32, 224),
                 "samples": (400, 1600)}


def longest_sequence(model: torch.nn.Module) -> int | None:
    """The longest sequence a model's learned positions admit where they are offset past a padding index (RoBERTa's
    positions count from ``padding_idx + 1``, so 128 position rows hold 126 tokens); None where nothing says."""
    for module in model.modules():
        table, pad = getattr(module, "position_embeddings", None), getattr(module, "padding_idx", None)
        if isinstance(table, torch.nn.Embedding) and isinstance(pad, int):
            return table.num_embeddings - pad - 1
    return None


def export_auto(name: str):
    """The keyword export with every named dim ``Dim.AUTO`` within its range, where an explicit ``Dim`` is refused
    because torch.export cannot prove a guard the model makes (the half ConvNeXt's ``1 % (32*(width//8)) != 0``, true for
    every width it allows); None unless every named dim stays dynamic."""
    from torch.export import Dim

    arch = ZOO[name]
    torch.manual_seed(0)
    model, inputs = arch.build()
    wrapped = zoo._calling(list(inputs), hasattr(model.config, "use_cache"))(model).eval()
    shapes = {n: {axis: Dim.AUTO(min=zoo.RANGES[dim][0], max=zoo.RANGES[dim][1]) for axis, dim in axes.items()}
              for n, axes in arch.dims.items()}
    try:
        with torch.no_grad():
            program = torch.export.export(wrapped, (), kwargs=inputs, dynamic_shapes=shapes, strict=False)
    except Exception:
        return None
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    users = list(program.graph_signature.user_inputs)
    shape_of = dict(zip(inputs, (vals[u].shape for u in users)))
    if all(not isinstance(shape_of[n][axis], int) for n, axes in arch.dims.items() for axis in axes):
        return program
    return None


def export_served(name: str, half: bool = False):
    """The architecture exported by keyword with its dims dynamic up to served sizes; static where torch.export
    refuses every dynamic dim. Returns (program, how). ``half``: the module and its float inputs cast to half first
    (``model.half()``, as users make an fp16 ONNX model), same dims."""
    saved, arch = dict(zoo.RANGES), ZOO[name]
    zoo.RANGES.update(SERVED_RANGES)
    longest = longest_sequence(arch.build()[0])
    if longest is not None:  # the served sequence must fit the model's positions (torch.export does not prove it)
        for dim in ("seq", "dec_seq"):
            lo, hi = zoo.RANGES[dim]
            zoo.RANGES[dim] = (lo, min(hi, longest))
    if half:
        def build():
            model, inputs = arch.build()
            return model.half(), {k: v.half() if v.is_floating_point() else v for k, v in inputs.items()}
        ZOO[name] = dataclasses.replace(arch, build=build)
    try:
        program, note = export_arch(name, keyword=True, dynamic=True)
        if note:  # some dims refused: torch.export may keep them dynamic where it picks the ranges' guards itself
            auto = export_auto(name)
            if auto is not None:
                return auto, "dynamic (Dim.AUTO)"
        return program, ("batch only dynamic" if note else "dynamic")
    except Exception:
        return export_arch(name, keyword=True, dynamic=False)[0], "static"
    finally:
        zoo.RANGES.clear()
        zoo.RANGES.update(saved)
        ZOO[name] = arch


def latency_cells(result) -> list[str]:
    """Per precision: 'opmap ms / ONNX ms = ratio' at the largest served size both were estimated at."""
    cells = []
    for precision in ("fp32", "fp16"):
        rows = [e for e in result.estimates if e["precision"] == precision and e["opmap"] and e["onnx"]]
        if not rows:
            why = next((e["why"] for e in result.estimates if e["precision"] == precision), {})
            cells.append("- " + "; ".join(f"{k}: {v[:80]}" for k, v in why.items()).replace("|", "\\|") if why else "-")
            continue
        e = rows[-1]
        sizes = ", ".join("x".join(map(str, v)) for v in e["sizes"].values())
        ratio = e["opmap"]["ms"] / e["onnx"]["ms"]
        mark = f"**{ratio:.2f}x**" if ratio <= 1.0 else f"**{ratio:.2f}x** (slower: {worst(e)})"
        cells.append(f"{e['opmap']['ms']:.3f} / {e['onnx']['ms']:.3f} = {mark} at {sizes} ({e['at']})")
    return cells


def worst(e) -> str:
    """The ATen ops opmap's network is estimated to spend most more on than the ONNX route's."""
    mine: dict[str, float] = {}
    for key, ms in e["opmap"]["by_op"].items():
        op = key.split(" [")[0]
        mine[op] = mine.get(op, 0.0) + ms
    theirs = e["onnx"]["by_op"]
    diffs = sorted(((ms - theirs.get(op, 0.0), op) for op, ms in mine.items()), reverse=True)[:2]
    strategies = {op: max(((ms, k.split(" [", 1)[1].rstrip("]")) for k, ms in e["opmap"]["by_op"].items()
                           if k.startswith(op + " [")), default=(0, "?"))[1] for _, op in diffs}
    return ", ".join(f"{op} +{d:.3f} ms via {strategies[op]}" for d, op in diffs if d > 0)


def onnx_build_seconds(trt, data: bytes, graph) -> float:
    """A second ONNX-route engine build of the same exported model (parse excluded), for the pairing."""
    _, builder, network, _, ok = parse_onnx(trt, data)
    config = builder.create_builder_config()
    onnx_profile(builder, config, network, graph)
    start = time.perf_counter()
    with native_stderr_silenced():
        engine = builder.build_serialized_network(network, config)
    if not ok or engine is None:
        raise OpmapError("the ONNX route no longer builds")
    return time.perf_counter() - start


def cell(route) -> str:
    if route.ok:
        return f"builds ({route.layers} layers, {route.engine_bytes / 1e6:.2f} MB)"
    return f"fails at {route.stage}: {' '.join(route.message.split())[:110]}".replace("|", "\\|")


ESTIMATE_NOTE = [
    "**Estimated latency** (`compare --estimate`; nothing here runs an engine): both networks — opmap's and the one "
    "TensorRT-RTX's ONNX parser made — walked by the same cost model (`opmap/checking/costmodel.py`, the default device "
    "profile, `opmap/building/fusion.py`'s fusion rules) on the same drawn inputs, at the largest served size the "
    f"export's dynamic dims allow (served sizes: {', '.join(str(p) for p in SERVED)}; this bench exports batch up to 32, "
    "sequences up to 128 — the zoo's tiny configs hold 128 positions, RoBERTa's offset positions 126 — and images up to "
    "224², so a dim's served size is clamped into that range, and a static export is estimated at its own size). The "
    "cell names the sizes used. **fp16, like for like**: both routes start from the one program the module cast to half "
    "makes (`model.half()`, float inputs half, the same dynamic dims; where torch.export refuses some of them for the "
    "half model, only the batch stays dynamic and both are estimated at that program's sizes, as the cell says), so both "
    "networks take and return fp16; opmap plans every node it can in fp16 with no accuracy budget (as the half model "
    "has none). Neither fp16 network is built into an engine here, only estimated. Where opmap's is slower, the cell "
    "names the ATen ops its network spends most more on and the strategy that emitted them (per-op and per-strategy "
    "breakdowns: `compare --json --estimate`, `estimates[].opmap.by_op`; `bench/compare.json` has them per model). "
    "**The fp16 exceptions are a correctness choice**: where the half program normalizes, sums or average-pools a "
    "half tensor (layer/group/rms norm, var/std, sum/mean, average and global pooling), opmap's network computes it in "
    "float32 and rounds once, as PyTorch does (a cast in, the layer in float32, a cast out), because TensorRT 11 "
    "documents no accumulation or compute precision for its Normalization, Reduce and Pooling layers on half inputs; "
    "the ONNX route's network runs them in half. Where the cast in fuses into the producer's kernel this costs a few "
    "percent of the pool's or norm's bytes (ResNet and the MobileNets 1.01-1.02x, their global pool); where it cannot, "
    "it is a kernel of its own: ConvNeXt 1.29x (a layer norm after every block's depthwise convolution and transpose), "
    "RegNet 1.15x (a squeeze-excitation pool in every block, whose input the block's multiply also reads). DeBERTa-v2's "
    "1.01x is those casts plus a NOT of its attention mask (`~mask`: a kernel of its own in opmap's network, 2 us in "
    "all) that the ONNX route's network does not pay for.",
]


def summary_lines(ratios: dict[str, list[float]]) -> list[str]:
    out = []
    for precision, values in ratios.items():
        if values:
            slower = sum(1 for v in values if v > 1.0)
            out.append(f"Estimated latency opmap/ONNX at served sizes, {precision}: median **{statistics.median(values):.2f}x** "
                       f"over {len(values)} models both routes build; opmap's estimated slower on {slower}.")
    return out + ([""] if out else [])


NOTES_MARK = "<!-- written by hand below: compare.py keeps this part of the page as it is -->"


def run_label() -> dict[str, str]:
    """This run's commit (``+`` where the worktree differs from it under opmap/, bench/ or examples/) and UTC time."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "opmap", "bench/compare.py", "examples")
    return {"commit": (git("rev-parse", "--short", "HEAD") or "?") + ("+" if dirty else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def final_ratios(estimates: list[dict]) -> dict[str, float]:
    """opmap/ONNX per precision at the largest size both were estimated at (the cell's ratio)."""
    out = {}
    for e in estimates:
        if e["opmap"] and e["onnx"]:
            out[e["precision"]] = e["opmap"]["ms"] / e["onnx"]["ms"]
    return out


def load_rows() -> dict:
    """bench/compare.json as ``{"runs": {id: {commit, date, argv}}, "models": {name: {run, row, build_ratio, export,
    estimates}}}`` (empty where there is none)."""
    import json

    path = ROOT / "bench" / "compare.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return data if "models" in data else {"runs": {}, "models": {}}


def page(data: dict, pending: list[str], why: str, estimate: bool) -> list[str]:
    """The page from every stored row: counts and medians over all of them, the header naming the run of each row."""
    order = ["detector", *ZOO]
    models = {n: data["models"][n] for n in sorted(data["models"], key=lambda n: order.index(n) if n in order else len(order))}
    rows = [m["row"] for m in models.values()]
    built_a = sum(1 for r in rows if r.split("|")[3].strip().startswith("builds"))
    built_b = sum(1 for r in rows if r.split("|")[4].strip().startswith("builds"))
    builds = [m["build_ratio"] for m in models.values() if m.get("build_ratio")]
    all_ratios: dict[str, list[float]] = {"fp32": [], "fp16": []}
    for m in models.values():
        for precision, ratio in final_ratios(m.get("estimates", [])).items():
            all_ratios[precision].append(ratio)
    runs = []
    for rid, run in sorted(data["runs"].items(), key=lambda kv: kv[1]["date"]):
        names = [n for n, m in models.items() if m["run"] == rid]
        if names:
            argv = run["argv"] if len(names) <= 8 else re.sub(r"--only \S+", "--only …", run["argv"])  # the names follow
            runs.append(f"* run {rid} — commit {run['commit']}, {run['date']}, `python bench/compare.py {argv}`"
                        f"{' (' + run['note'] + ')' if run.get('note') else ''}: {', '.join(names)}")
    text = [
        "# opmap vs the ONNX route",
        "",
        f"Generated by `make bench-compare` (`python bench/compare.py`; `--only a,b` reruns those models and replaces "
        f"only their rows) with torch {torch.__version__} and {profile('tensorrt_rtx')}. The ONNX route is "
        "`torch.onnx.export(program, dynamo=True)` then TensorRT-RTX's `OnnxParser` into a strongly typed network, then "
        "an ahead-of-time build; both routes start from the same loaded archive in one process. The counts and medians "
        "below are over every row; each row comes from the run named here (a `+` after a commit: run on uncommitted "
        "changes to it):",
        "",
        *runs,
        "",
        f"**{built_a} of {len(rows)}** models build through opmap, **{built_b} of {len(rows)}** through the ONNX route."
        + (f" Engine build time opmap/ONNX, paired (opmap, ONNX, opmap, ONNX per model): median **{statistics.median(builds):.2f}x**."
           if builds else ""),
        "",
        *(summary_lines(all_ratios) if estimate else []),
        "| model (export) | ATen nodes | opmap | ONNX route | nodes the ONNX route fails on | build s opmap / ONNX (2 runs each) | --check "
        "| est. ms fp32 opmap / ONNX | est. ms fp16 opmap / ONNX |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "`--check`: both networks run through opmap's reference interpreter on the same drawn inputs; \"agree\" when every "
        "output matches within the float32 tolerance.",
        "",
        *(ESTIMATE_NOTE if estimate else []),
    ]
    if pending:
        text += ["", f"Not run ({why}): {', '.join(pending)}."]
    return text


def write(data: dict, pending: list[str], why: str, estimate: bool) -> list[str]:
    """The page and bench/compare.json as they stand (written after every model, so that a stopped run leaves a
    consistent page); the hand-written part of the page below NOTES_MARK is kept."""
    import json

    path = ROOT / "bench" / "COMPARE.md"
    old = path.read_text() if path.exists() else ""
    notes = old[old.index(NOTES_MARK):] if NOTES_MARK in old else ""
    text = page(data, pending, why, estimate)
    path.write_text("\n".join(text) + "\n" + ("\n" + notes if notes else ""))
    (ROOT / "bench" / "compare.json").write_text(json.dumps(data, indent=1) + "\n")
    return text


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    estimate = "--no-estimate" not in argv
    budget = float(argv[argv.index("--budget") + 1]) if "--budget" in argv else float("inf")
    only = argv[argv.index("--only") + 1].split(",") if "--only" in argv else None
    unknown = [n for n in only or () if n not in ZOO and n != "detector"]
    if unknown:
        raise SystemExit(f"compare.py: no zoo model named {', '.join(unknown)}")
    names = [n for n in (only or ZOO) if n in ZOO and (not quick or n in QUICK)]  # --only: in its order
    models = {"detector": lambda: (export_detector(), "static")} if only is None or "detector" in only else {}
    halves = {name: (lambda n=name: export_served(n, half=True)[0]) for name in names}
    models.update({name: (lambda n=name: export_served(n)) for name in names})
    backend = profile("tensorrt_rtx")
    # --only: those rows replace theirs, the rest stay from their runs; a whole run starts the table afresh
    data = load_rows() if only else {"runs": {}, "models": {}}
    # --run ID: this invocation's rows join run ID (one run made of several --only invocations, e.g. in groups)
    rid = argv[argv.index("--run") + 1] if "--run" in argv else f"{len(data['runs']) + 1}"
    run = data["runs"].get(rid) or {**run_label(), "argv": ""}
    if run["commit"] != run_label()["commit"]:
        raise SystemExit(f"compare.py: run {rid} was made at commit {run['commit']}, this tree is {run_label()['commit']}")
    only_names = set(run["argv"].removeprefix("--only ").split(",")) - {""} | set(only or ())
    data["runs"][rid] = {**run, "date": run_label()["date"],
                         "argv": f"--only {','.join(n for n in ['detector', *ZOO] if n in only_names)}" if only else " ".join(argv)}
    skipped: list[str] = []
    missing = lambda: [n for n in ["detector", *ZOO] if n not in data["models"] and n not in models]  # noqa: E731

    def store(name: str, row: str, **more) -> None:
        data["models"][name] = {"run": rid, "row": row, **more}
        order = list(models)
        write(data, order[order.index(name) + 1:] + missing(), "not run yet", estimate)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        catalog, ruleset = svc.open_catalog(str(Path(tmp) / "catalog.db"))
        for name, make in models.items():
            if time.perf_counter() - start > budget:
                skipped.append(name)
                continue
            print(f"{name}...", file=sys.stderr, flush=True)
            path = Path(tmp) / f"{name}.pt2"
            try:
                program, how = make()
                torch.export.save(program, str(path))
                captured = capture(path)
            except Exception as exc:  # the export itself fails: a row, never the end of the bench
                store(name, f"| {name} | - | export failed: {type(exc).__name__}: {first_line(exc)} | | | | |" + " |" * 2)
                continue
            try:
                result = compare(captured, catalog, ruleset, backend, Settings(), check=True, estimate=estimate,
                                 half=halves.get(name))
            except OpmapError as exc:
                store(name, f"| {name} | {len(captured.graph)} | error: {first_line(exc)} | | | | |" + " |" * 2)
                continue
            cells = latency_cells(result) if estimate else ["-", "-"]
            a, b = result.opmap, result.onnx
            paired, ratio = "-", None
            if a.ok and b.ok:  # A B (in compare) then A B again
                a2 = serialize(build_network(result.plan, captured.program, ruleset.strategies)).build_seconds
                b2 = onnx_build_seconds(backend.module, result.onnx_model, captured.graph)
                ratio = (a.build_seconds + a2) / (b.build_seconds + b2)
                paired = f"{a.build_seconds:.2f}, {a2:.2f} / {b.build_seconds:.2f}, {b2:.2f} = **{ratio:.2f}x**"
            failing = [f"`{n}` ({o.stage})" for n, o in result.nodes.items() if o.stage in ("export", "parse", "build")]
            check = "-" if result.check is None or not result.check.get("ran") else ("agree" if result.check["ok"] else "DIFFER")
            store(name, f"| {name} ({how}) | {len(captured.graph)} | {cell(a)} | {cell(b)} | {', '.join(failing) or '-'} | "
                  f"{paired} | {check} | " + " | ".join(cells) + " |", build_ratio=ratio, export=how,
                  estimates=result.estimates)
    text = write(data, skipped + missing(), f"the `--budget` of {budget:.0f} s was spent" if skipped else "not run yet",
                 estimate)
    print("\n".join(text))


if __name__ == "__main__":
    main(sys.argv[1:])
