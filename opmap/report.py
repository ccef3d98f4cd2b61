"""Rich rendering of plans, rules, example results and audits. JSON lives beside each command."""

from __future__ import annotations

from typing import Any, Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from opmap.db.models import Decision, Run
from opmap.checking.examples import ExampleResult
from opmap.planning.planner import Plan
from opmap.planning.strategy import Outcome, Strategy

OUTCOME_STYLE = {"APPLIES": "green", "REJECTED": "yellow", "NOT_APPLICABLE": "dim", "ERROR": "bold red"}
KIND_STYLE = {"direct": "green", "decompose": "cyan", "approximate": "magenta", "plugin": "blue"}


def _kind(kind: str | None) -> Text:
    return Text(kind or "-", style=KIND_STYLE.get(kind or "", ""))


def plan_table(plan: Plan, run_id: int | None) -> Table:
    title = f"{plan.graph.name} on {plan.backend}" + (f" — run {run_id}" if run_id else "")
    table = Table(title=title, title_justify="left", header_style="bold", expand=False)
    for col in ("node", "op", "strategy", "kind", "cost", "runner-up", "rejected"):
        table.add_column(col, overflow="fold")
    for np_ in plan.nodes:
        if np_.choice:
            strategy = Text(np_.choice.strategy + (f" · {np_.precision}" if np_.precision else ""))
            cost = Text(str(np_.cost), style="dim" if np_.cost.value is None else "")
        else:
            strategy = Text("no mapping", style="bold red")
            cost = Text("-")
        rejected = len(np_.rejected) + len(np_.set_aside)
        table.add_row(
            np_.node.name, np_.node.op, strategy, _kind(np_.choice.kind if np_.choice else None), cost,
            np_.runner_up.strategy if np_.runner_up else "-", str(rejected) if rejected else "",
        )
    return table


def print_plan(console: Console, plan: Plan, run_id: int | None, *, reasons: bool, all_verdicts: bool) -> None:
    console.print(plan_table(plan, run_id))
    contracts = [(np_.node.name, np_.choice.strategy, np_.contract) for np_ in plan.nodes if np_.choice and np_.contract]
    if contracts:
        console.print("[bold]changed output contracts[/bold]")
        for name, strat, contract in contracts:
            console.print(f"  {name} ({strat}): {contract}")
    if reasons or all_verdicts:
        console.print("[bold]rejections[/bold]" + (" and skips" if all_verdicts else ""))
        for np_ in plan.nodes:
            for v in np_.verdicts:
                show = v.outcome in (Outcome.REJECTED, Outcome.ERROR) or (all_verdicts and v.outcome is Outcome.NOT_APPLICABLE)
                if show:
                    line = Text(f"  {np_.node.name} ", style="bold")
                    line.append(f"{v.outcome} ", style=OUTCOME_STYLE[v.outcome.value])
                    line.append(f"{v.strategy}: {v.reason}")
                    shown = _telling(v.evidence)
                    if shown:
                        line.append("  [" + ", ".join(f"{k} = {val}" for k, val in shown) + "]", style="dim")
                    console.print(line)
            for sid, why in np_.set_aside.items():
                console.print(Text(f"  {np_.node.name} ", style="bold") + Text("SET ASIDE ", style="magenta") + Text(f"{sid}: {why}"))
    if plan.settings.precision != "fp32":
        print_precision(console, plan)
    for np_ in plan.nodes:
        if not np_.mapped:
            console.print(Text(f"no mapping for {np_.node.name} ({np_.node.op}): {np_.why}", style="red"))
    for problem in plan.problems:
        console.print(Text(f"warning: {problem}", style="yellow"))
    for state in plan.graph.state:  # the contract functionalization made: the caller carries this state between calls
        console.print(Text(f"state: {state.describe()}", style="cyan"))
    summary = plan.summary_line()
    style = "bold green" if plan.complete and not plan.summary()["errors"] else "bold red" if not plan.complete else "bold yellow"
    console.rule(Text(summary, style=style))


def print_precision(console: Console, plan: Plan) -> None:
    """Every node's precision and why (--precision fp16/bf16/int8), then what the discrete-result protection did."""
    console.print(f"[bold]precision[/bold] (asked: {plan.settings.precision})")
    for np_ in plan.nodes:
        if np_.choice:
            console.print(Text(f"  {np_.node.name}: {np_.precision or 'fp32'}", style="bold")
                          + Text(f"  {np_.precision_why or 'no float output: precision does not apply'}"))
    for note in plan.precision_notes:
        console.print(Text(f"  discrete protection: {note}", style="yellow"))


_PLAIN_FIXTURES = {"node", "graph", "backend", "settings", "bounds", "consumers", "inputs"}


def _telling(evidence: dict[str, str], limit: int = 3) -> list[tuple[str, str]]:
    """The evidence worth a line: computed values, not the fixtures themselves."""
    items = [(k, v) for k, v in (evidence or {}).items() if k not in _PLAIN_FIXTURES and len(v) <= 80]
    return items[:limit]


def rules_table(strategies: Iterable[Strategy], verbose: bool) -> Table:
    table = Table(header_style="bold")
    for col in ("strategy", "kind", "version", "origin", "ops"):
        table.add_column(col, overflow="fold")
    if verbose:
        table.add_column("source", overflow="fold")
        table.add_column("hash")
        table.add_column("doc", overflow="fold")
    for s in strategies:
        ops = ", ".join(s.ops) if len(s.ops) <= 3 else f"{', '.join(s.ops[:3])} (+{len(s.ops) - 3})"
        row: list[Any] = [s.id, _kind(s.kind), str(s.version), s.origin, ops]
        if verbose:
            row += [s.source_path or "", s.source_hash, s.doc.splitlines()[0] if s.doc else ""]
        table.add_row(*row)
    return table


def print_example_results(console: Console, results: list[ExampleResult], verbose: bool) -> None:
    for r in results:
        if not r.passed:
            console.print(Text(f"FAILED {r.strategy} {r.label}: {r.message}", style="red"))
        elif verbose:
            console.print(Text(f"PASSED {r.strategy} {r.label}: {r.message}", style="green"))
    passed = sum(r.passed for r in results)
    failed = len(results) - passed
    strategies = len({r.strategy for r in results})
    style = "bold green" if not failed else "bold red"
    console.rule(Text(f"{passed} passed, {failed} failed ({strategies} strategies)", style=style))


def runs_table(runs: list[Run]) -> Table:
    table = Table(header_style="bold", title="runs", title_justify="left")
    for col in ("run", "when (UTC)", "model", "backend", "catalog", "summary"):
        table.add_column(col, overflow="fold")
    for r in runs:
        s = r.summary or {}
        parts = [f"{s.get(k)} {k}" for k in ("direct", "decompose", "approximate", "plugin", "no mapping") if s.get(k)]
        table.add_row(str(r.id), r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.model_path, f"{r.backend} {r.backend_version or ''}",
                      f"v{r.catalog_version}", f"{s.get('nodes', 0)} nodes: " + ", ".join(parts))
    return table


def decisions_table(run: Run) -> Table:
    table = Table(header_style="bold", title=f"run {run.id}: {run.model_path} on {run.backend} (catalog v{run.catalog_version})",
                  title_justify="left")
    for col in ("node", "op", "choice", "kind", "runner-up", "why"):
        table.add_column(col, overflow="fold")
    for d in run.decisions:
        table.add_row(d.node, d.op, d.choice or Text("no mapping", style="bold red"), _kind(d.choice_kind), d.runner_up or "-", d.why)
    return table


def print_node(console: Console, run: Run, decision: Decision) -> None:
    """One node's verdicts, in pytest's failure-report manner: reason, failing expression, values, location."""
    console.print(Text(f"{decision.node} = {decision.op} {decision.signature}", style="bold"))
    console.print(Text(f"choice: {decision.choice or 'no mapping'} ({decision.choice_kind or '-'}); runner-up: {decision.runner_up or '-'}"))
    console.print(Text(f"why: {decision.why}"))
    for v in decision.verdicts:
        line = Text("  ")
        line.append(f"{v.outcome:<15}", style=OUTCOME_STYLE.get(v.outcome, ""))
        line.append(f"{v.strategy}  ({v.rule} #{(v.source_hash or '')[:8]})")
        console.print(line)
        if v.reason:
            console.print(Text(f"      reason: {v.reason}"))
        if v.expression:
            console.print(Text(f"      assert {v.expression}", style="bold"))
            for key, value in (v.evidence or {}).items():
                console.print(Text(f"        {key} = {value}", style="dim"))
        if v.location and v.outcome != "APPLIES":
            console.print(Text(f"      at {v.location}", style="dim"))


def print_verify(console: Console, report, built, runtime: str, point: str | None = None) -> None:
    where = f" at {point} ({report.shape})" if point else ""
    table = Table(header_style="bold", title=f"verify ({'reference interpreter' if runtime == 'reference' else 'TensorRT runtime'}) "
                                             f"vs PyTorch{where} — engine {len(built.engine or b''):,} bytes, built in {built.build_seconds:.2f}s",
                  title_justify="left")
    for col in ("output", "node", "shape", "dtype", "max abs", "max rel", "mismatch", "ok", "note"):
        table.add_column(col, overflow="fold")
    for o in report.outputs:
        table.add_row(o.name, o.node or "-", str(list(o.shape)), o.dtype, f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", f"{o.mismatch:.1%}",
                      Text("ok" if o.ok else "MISMATCH", style="green" if o.ok else "bold red"), o.note)
    console.print(table)
    for name, how in report.inputs.items():
        console.print(f"  input {name}: {how}", markup=False, highlight=False)
    discrete = report.discrete_summary()
    if discrete["outputs"]:
        console.print(f"  discrete outputs (indices, masks, counts): {discrete['agree']} of {discrete['outputs']} agree exactly "
                      "with PyTorch", markup=False, highlight=False)
    bad = sum(1 for o in report.outputs if not o.ok) + (report.expected - report.compared)
    text = f"{report.compared - sum(1 for o in report.outputs if not o.ok)} passed, {bad} failed"
    if report.compared != report.expected or not report.expected:
        text += f" — compared {report.compared} of {report.expected} outputs"
    console.rule(Text(text, style="bold green" if report.ok else "bold red"))


def checked_line(checked: dict | None) -> str:
    """What ``build`` says about its reference check (the sidecar's ``checked``)."""
    if checked is None:
        return "  not checked (--no-check): run `opmap verify` before deploying it"
    if checked.get("ok") is None:
        where = f" at {checked['point']} ({checked['shape']})" if checked.get("point") else ""
        return f"  check{where}: {checked.get('note', 'not checked')}"
    return (f"  checked at {checked['point']} ({checked['shape']}): {checked['outputs']} output(s) agree with PyTorch "
            f"(reference interpreter, {checked['seconds']:.2f}s; not an engine run)")


def _node_lines(console: Console, title: str, node) -> None:
    console.print(Text(f"{title}: {node.name}", style="bold") + Text(f"  {node.op} via {node.strategy or '-'}"
                  + (f" ({node.kind})" if node.kind else "") + (f" · {node.precision}" if node.precision else "")))
    if node.stack:
        console.print(f"    module: {node.stack}", markup=False, highlight=False)
    for key, value in node.args.items():
        console.print(f"    {key} = {value}", markup=False, highlight=False)
    console.print(f"    output {', '.join(node.outputs)}: max abs {node.max_abs:.3g}, max rel {node.max_rel:.3g}, "
                  f"{node.mismatch:.1%} beyond tolerance ({node.ratio:.3g}x tolerance)", markup=False, highlight=False)
    if node.local is not None:
        console.print(f"    from the network's own inputs: max abs {node.local['max_abs_err']:.3g}, "
                      f"{node.local['tolerance_ratio']:.3g}x tolerance", markup=False, highlight=False)


def print_locate(console: Console, located) -> None:
    """``verify --locate``: the node to blame, the first node beyond tolerance, and why."""
    console.print(Text(f"locate at {located.point} ({located.shape}), reference interpreter: {located.compared} nodes compared",
                       style="bold"))
    if located.node is not None:
        _node_lines(console, "diverging node", located.node)
        if located.first_beyond is not None and located.first_beyond is not located.node:
            _node_lines(console, "first node beyond tolerance", located.first_beyond)
    console.print(located.why, markup=False, highlight=False)
    for reason, names in located.skipped.items():
        shown = ", ".join(names[:6]) + (f" (+{len(names) - 6})" if len(names) > 6 else "")
        console.print(Text(f"  not compared ({reason}): {shown}", style="dim"))


def print_doctor(console: Console, report: dict) -> None:
    console.print(f"[bold]default backend:[/bold] {report['default_backend']}")
    for name, info in report["backends"].items():
        state = f"{info['version']}" if info["installed"] else "not installed"
        plugins = {True: "yes", False: "no (no add_plugin_v3 in its network API)", None: "unknown"}[info["plugins"]]
        console.print(f"[bold]{name}[/bold]: {state}; plugin layers: {plugins}")
        for probe, r in info["probes"].items():
            mark = {True: "[green]builds[/green]", False: "[red]fails[/red]", None: "[dim]unverified[/dim]"}[r["ok"]]
            console.print(f"    probe {probe}: {mark}  {r['message'] if r['ok'] is False else ''}", highlight=False)
    console.print(f"[bold]GPU:[/bold] {report['gpu'] or 'none visible'}")
    console.print(f"[bold]{report['summary']}[/bold]")


from opmap.graphpage import KIND_COLOUR  # noqa: E402  (one palette for the table and the graph)


def plan_html(plan: Plan, run_id: int | None, model: str) -> str:
    """A self-contained page: the data-flow graph (opmap.graphpage), then every node with its verdicts as a table."""
    from opmap.graphpage import page_data, plan_decisions, render

    title = f"{plan.graph.name} on {plan.backend}" + (f" — run {run_id}" if run_id else "")
    return render(page_data(plan.graph, plan_decisions(plan)), title, f"{model} — {plan.summary_line()}", plan_table_html(plan))


def plan_table_html(plan: Plan) -> str:
    """The plan as a table section: a bar of how the nodes map, then every node with its verdicts."""
    from html import escape

    summary = plan.summary()
    total = max(summary["nodes"], 1)
    x = 0.0
    bars, legend = [], []
    for kind in ("direct", "decompose", "approximate", "plugin", "no mapping"):
        n = summary.get(kind, 0)
        if not n:
            continue
        w = 900 * n / total
        bars.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="28" fill="{KIND_COLOUR[kind]}"><title>{n} {kind}</title></rect>')
        legend.append(f'<span class="chip" style="background:{KIND_COLOUR[kind]}">{n} {escape(kind)}</span>')
        x += w
    rows = []
    for np_ in plan.nodes:
        kind = np_.choice.kind if np_.choice else "no mapping"
        details = []
        for v in np_.verdicts:
            reason = np_.set_aside.get(v.strategy) if v.applies and v.strategy in np_.set_aside else v.reason
            details.append(f"<li><b class='{v.outcome.value}'>{v.outcome.value}</b> {escape(v.strategy)}"
                           + (f": {escape(reason)}" if reason else "") + "</li>")
        rows.append(
            f"<tr><td class='bar' style='background:{KIND_COLOUR[kind]}'></td><td>{escape(np_.node.name)}</td>"
            f"<td><code>{escape(np_.node.op)}</code></td>"
            f"<td>{escape(np_.choice.strategy) if np_.choice else '<b>no mapping</b>'}</td><td>{escape(kind)}</td>"
            f"<td>{escape(str(np_.cost)) if np_.choice else ''}</td>"
            f"<td>{escape(np_.runner_up.strategy) if np_.runner_up else ''}</td>"
            f"<td><details><summary>{len(np_.verdicts)} verdicts</summary><ul>{''.join(details)}</ul>"
            + (f"<p class='contract'>{escape(np_.contract)}</p>" if np_.contract else "")
            + f"<p>{escape(np_.why)}</p></details></td></tr>"
        )
    return f"""<section><h2>every node</h2>
<svg width="900" height="28" role="img" aria-label="{escape(plan.summary_line())}">{''.join(bars)}</svg>
<p>{''.join(legend)}</p>
<table><tr><th></th><th>node</th><th>op</th><th>strategy</th><th>kind</th><th>cost</th><th>runner-up</th><th>verdicts</th></tr>
{''.join(rows)}
</table></section>"""


def measurements_table(rows) -> Table:
    table = Table(header_style="bold", title="measurements", title_justify="left")
    for col in ("strategy", "bucket", "dtype", "build", "build s", "bytes", "max abs", "max rel", "latency", "provenance"):
        table.add_column(col, overflow="fold")
    for r in rows:
        build = Text("ok", style="green") if r.build_ok else Text(f"no: {r.build_error}"[:80], style="red")
        fmt = lambda v, f="{:.3g}": "-" if v is None else f.format(v)  # noqa: E731
        table.add_row(r.strategy_id, r.shape_bucket, r.dtype, build, fmt(r.build_seconds), fmt(r.engine_bytes, "{:,}"),
                      fmt(r.max_abs_err), fmt(r.max_rel_err), fmt(r.latency_ms, "~{:.4f} ms"), r.provenance)
    return table


STAGE_STYLE = {"ok": "green", "export": "bold red", "parse": "bold red", "build": "bold red", "stopped": "dim"}


def _route_line(route) -> Text:
    head = Text(f"{route.name:<6} ", style="bold")
    if route.ok:
        head.append("builds", style="bold green")
        head.append(f"  {route.seconds:.2f}s (engine build {route.build_seconds:.2f}s), {route.layers} layers, {route.engine_bytes:,} bytes")
    else:
        head.append(f"fails at {route.stage}", style="bold red")
        head.append(f"  after {route.seconds:.2f}s: {route.message[:300]}")
    if route.details.get("exporter"):
        head.append(f"  [{route.details['exporter']}, opset {route.details.get('opset') or '-'}]", style="dim")
    return head


def print_compare(console: Console, result) -> None:
    """Per ATen node: opmap's choice and kind beside the ONNX route's outcome; then both routes' whole-model lines."""
    table = Table(title=f"{result.plan.graph.name}: opmap vs the ONNX route on {result.plan.backend}", title_justify="left",
                  header_style="bold")
    for col in ("node", "op", "opmap", "kind", "onnx route", "message"):
        table.add_column(col, overflow="fold")
    for np_ in result.plan.nodes:
        o = result.nodes[np_.node.name]
        table.add_row(np_.node.name, np_.node.op, np_.choice.strategy if np_.choice else Text("no mapping", style="bold red"),
                      _kind(np_.choice.kind if np_.choice else None), Text(o.stage, style=STAGE_STYLE[o.stage]), o.message[:200])
    console.print(table)
    for line in result.unattributed:
        console.print(Text(f"onnx route, not traced to a node: {line[:300]}", style="yellow"))
    console.print(_route_line(result.opmap))
    console.print(_route_line(result.onnx))
    if result.opmap.ok and result.onnx.ok and result.onnx.build_seconds:
        console.print(f"build time opmap/onnx: {result.opmap.build_seconds / result.onnx.build_seconds:.2f}x")
    for e in result.estimates:  # the cost model's estimate, both networks, same inputs
        sizes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in e["sizes"].items())
        ms = {r: f"{e[r]['ms']:.4f} ms" if e[r] else f"- ({e['why'].get(r, '?')[:120]})" for r in ("opmap", "onnx")}
        ratio = f" = {e['ratio']:.2f}x" if "ratio" in e else ""
        console.print(f"estimated latency {e['precision']} at {e['at']} ({sizes}): opmap {ms['opmap']} / onnx {ms['onnx']}{ratio}",
                      markup=False, highlight=False)
    if result.check is not None:
        chk = result.check
        if not chk.get("ran"):
            console.print(Text(f"check: not run ({chk['why']})", style="yellow"))
        else:
            for o in chk["outputs"]:
                mark = Text("agree" if o["ok"] else "DIFFER", style="green" if o["ok"] else "bold red")
                console.print(Text(f"  {o['output']} ({o['node']}) vs ONNX {o['onnx_output']}: ") + mark
                              + Text(f" max abs {o['max_abs_err']}" + (f"; {o['note']}" if o["note"] else ""), style="dim"))
            console.rule(Text("the two networks agree" if chk["ok"] else "the two networks differ",
                              style="bold green" if chk["ok"] else "bold red"))
