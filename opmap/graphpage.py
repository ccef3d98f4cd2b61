"""The plan as a picture of the graph: one self-contained HTML page (inline script and style, no fetches).

Python gathers the data (nodes with their decision and verdicts, edges, data-dependent marks, module groups); the
page's script lays it out top to bottom (longest-path layers, barycentre ordering), draws it on a canvas with only
the visible part drawn (responsive at 10,000 nodes), collapses repeated blocks by module path into expandable groups,
and opens a node's verdicts on click. ``suggest --html``, ``audit RUN --html`` and ``compare --html`` write it."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path
from typing import Any

from opmap.errors import OpmapError

KIND_COLOUR = {"direct": "#2e7d32", "decompose": "#00838f", "approximate": "#8e24aa", "plugin": "#1565c0", "no mapping": "#c62828",
               "input": "#9e9e9e"}
_ASSET = Path(__file__).with_name("graphpage.js")


def block_of(stack: str | None) -> str | None:
    """The repeated block a module path belongs to: the path up to its first numeric part (``layers.3``), if any."""
    parts = (stack or "").split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


def _data_dependent(graph: Any, meta: Any) -> bool:
    for d in getattr(meta, "shape", ()) or ():
        if isinstance(d, str):
            for tok in re.findall(r"[A-Za-z_]\w*", d):
                sym = graph.symbols.get(tok)
                if (sym is not None and sym.data_dependent) or re.fullmatch(r"u\d+", tok):
                    return True
    return False


def page_data(graph: Any, decisions: dict[str, dict[str, Any]], onnx: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the page draws. ``decisions``: node name -> {"strategy", "kind", "why", "contract", "verdicts": [...]}
    (the ``suggest --json`` / ``audit --json`` node shapes); ``onnx``: node name -> {"stage", "message"}."""
    index: dict[str, int] = {}
    nodes: list[dict[str, Any]] = []
    for name, meta in graph.inputs.items():
        index[name] = len(nodes)
        nodes.append({"name": name, "op": "input", "kind": "input", "shape": str(meta), "verdicts": []})
    edges: list[list[int]] = []
    for node in graph:
        d = decisions.get(node.name, {})
        item = {"name": node.name, "op": node.op, "kind": d.get("kind") or "no mapping", "strategy": d.get("strategy"),
                "why": d.get("why") or "", "contract": d.get("contract"), "stack": node.stack or "", "group": block_of(node.stack),
                "shape": ", ".join(str(o) for o in node.outputs if o is not None), "verdicts": d.get("verdicts") or []}
        if onnx is not None and node.name in onnx:
            item["onnx"] = onnx[node.name]
        index[node.name] = len(nodes)
        nodes.append(item)
        seen: set[int] = set()
        for value in node.args.values():
            for ref in value if isinstance(value, (list, tuple)) else [value]:
                src = index.get(getattr(ref, "node", None)) if hasattr(ref, "node") else None
                if src is not None and src not in seen:
                    seen.add(src)
                    edges.append([src, index[node.name], int(_data_dependent(graph, graph.meta_of(ref)))])
    outputs = [index[r.node] for r in graph.outputs if r is not None and r.node in index]
    return {"name": graph.name, "nodes": nodes, "edges": edges, "outputs": outputs}


def plan_decisions(plan: Any) -> dict[str, dict[str, Any]]:
    """A Plan's decisions in the page's shape."""
    from opmap.app import plan_json

    out = {}
    for n in plan_json(plan, None, "")["nodes"]:
        choice = n["choice"] or {}
        out[n["name"]] = {"strategy": choice.get("strategy"), "kind": choice.get("kind"), "why": n["why"],
                          "contract": choice.get("contract"), "verdicts": n["verdicts"]}
    return out


def run_decisions(run_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A recorded run's decisions (``audit --json``) in the page's shape."""
    return {n["name"]: {"strategy": (n["choice"] or {}).get("strategy"), "kind": (n["choice"] or {}).get("kind"), "why": n["why"],
                        "contract": None, "verdicts": n["verdicts"]} for n in run_json["nodes"]}


def render(data: dict[str, Any], title: str, subtitle: str, table: str = "") -> str:
    """The page: header, legend, the canvas graph with a details panel, then ``table`` (HTML) as its own section."""
    blob = json.dumps(data, separators=(",", ":"), default=str).replace("</", "<\\/")
    legend = "".join(f'<span class="chip" style="background:{c}">{escape(k)}</span>' for k, c in KIND_COLOUR.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>opmap: {escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; color: #222; }}
header {{ padding: 10px 16px; border-bottom: 1px solid #ddd; }} h1 {{ font-size: 18px; margin: 0 0 4px; }}
.chip {{ color: white; padding: 1px 8px; border-radius: 10px; margin-right: 6px; font-size: 12px; }}
#main {{ display: flex; height: 78vh; }} #view {{ flex: 1; position: relative; overflow: hidden; border-bottom: 1px solid #ddd; }}
#graph {{ position: absolute; inset: 0; cursor: grab; }}
#details {{ width: 380px; overflow: auto; padding: 8px 12px; border-left: 1px solid #ddd; font-size: 13px; }}
#details h2 {{ font-size: 15px; margin: 4px 0; word-break: break-all; }} .v {{ margin: 6px 0; padding-left: 6px; border-left: 3px solid #ccc; }}
.APPLIES {{ color: #2e7d32; }} .REJECTED {{ color: #b26a00; }} .ERROR {{ color: #c62828; }} .NOT_APPLICABLE {{ color: #777; }}
code {{ font-size: 12px; }} .ev {{ color: #555; font-size: 12px; }} button {{ margin-left: 6px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 13px; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }}
section {{ padding: 8px 16px; }} td.bar {{ width: 6px; padding: 0; }} .contract {{ color: #8e24aa; }} summary {{ cursor: pointer; }}
</style></head><body>
<header><h1>opmap: {escape(title)}</h1><div>{escape(subtitle)}</div>
<div style="margin-top:6px">{legend}<span class="chip" style="background:#e65100">data-dependent edge</span>
<span class="chip" style="background:#6a1b9a">padded output</span>
<button id="expand">expand all groups</button><button id="collapse">collapse groups</button><button id="fit">fit</button>
<span id="status" style="font-size:12px;color:#555;margin-left:8px"></span></div></header>
<div id="main"><div id="view"><canvas id="graph"></canvas></div><div id="details"><p>Click a node for its verdicts; click a
group to expand it. Drag to pan, wheel to zoom.</p></div></div>
<script type="application/json" id="data">{blob}</script>
<script>{_ASSET.read_text(encoding="utf-8")}</script>
{table}
</body></html>
"""


def write_page(path: Path, plan: Any, run_id: int | None, model: str, onnx: Any = None) -> None:
    """The graph page for a plan (``onnx``: a compare result whose ONNX outcomes join each node)."""
    from opmap.report import plan_table_html

    outcomes = {k: {"stage": v.stage, "message": v.message} for k, v in onnx.nodes.items()} if onnx is not None else None
    data = page_data(plan.graph, plan_decisions(plan), outcomes)
    if onnx is not None:
        data["routes"] = {"opmap": onnx.opmap.to_dict(), "onnx": onnx.onnx.to_dict()}
    title = f"{plan.graph.name} on {plan.backend}" + (f" — run {run_id}" if run_id else "")
    _write(path, render(data, title, f"{model} — {plan.summary_line()}", plan_table_html(plan)))


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OpmapError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_run_page(path: Path, run: Any, graph: Any) -> None:
    """The graph page for a recorded run: its stored decisions over the model's graph (captured again)."""
    from opmap.app import run_json

    data = page_data(graph, run_decisions(run_json(run)))
    _write(path, render(data, f"run {run.id}: {Path(run.model_path).name} on {run.backend}", f"{run.model_path} — "
                        f"{(run.summary or {}).get('nodes', 0)} nodes, catalog v{run.catalog_version}"))


def run_graph(run: Any) -> Any:
    """A recorded run's graph, captured again from its model file (the catalog stores decisions, not edges), through
    opmap's safe loader; refused when the file is gone or no longer the one the run judged."""
    from opmap.loading.capture import capture, file_sha256

    path = Path(run.model_path)
    if not path.is_file():
        raise OpmapError(f"run {run.id}'s model {path} is gone: the graph page needs the file for the graph's edges")
    if run.model_sha256 and file_sha256(path) != run.model_sha256:
        raise OpmapError(f"{path} changed since run {run.id} judged it: its graph would not be the run's")
    if run.model_kind != "export":
        raise OpmapError(f"run {run.id}'s model is a {run.model_kind} file; its graph page is written by `suggest --html`")
    return capture(path).graph
