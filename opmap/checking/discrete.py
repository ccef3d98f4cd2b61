"""Discrete results protected: reduced precision never flips a comparison, a threshold, an argmax, a top-k, a sort,
an index or a data-dependent size.

A rule over the graph finds the *discrete* nodes — a float tensor in, an integer or boolean tensor out (``gt``,
``argmax``, ``topk``'s indices, a float-to-int cast...) — and, for each, the reduced-precision nodes in its float
cone (the producers whose values reach it through float edges). Then it measures: the network is built with the
plan's precisions and run by the reference interpreter on the calibration (or verification) batches, and each
discrete node's result is compared with PyTorch's. Where one differs, the reduced-precision nodes nearest it (two
hops), then its whole cone, go back to fp32, and the check is repeated; the plan says so on every node involved.
"""

from __future__ import annotations

from typing import Any

import torch

from opmap.loading.graph import Graph, Node, Ref
from opmap.planning.planner import Plan

FLOAT = ("float32", "float16", "bfloat16")
NEAR = 2  # hops: the first demotion tier


def discrete_nodes(graph: Graph) -> list[Node]:
    """Nodes with a float tensor argument and an integer or boolean tensor output (size reads excluded)."""
    found = []
    for node in graph:
        if node.op.startswith("aten.sym_") or node.op.startswith("operator."):
            continue
        float_in = any(m.dtype in FLOAT for m in node.tensor_args().values())
        discrete_out = any(m is not None and m.dtype not in FLOAT for m in node.outputs)
        if float_in and discrete_out:
            found.append(node)
    return found


def float_cone(graph: Graph, node: Node) -> dict[str, int]:
    """Ancestors whose values reach ``node`` through float edges, with their distance in hops."""
    cone: dict[str, int] = {}
    frontier = [(node, 0)]
    while frontier:
        current, depth = frontier.pop(0)
        for value in current.args.values():
            for ref in (value if isinstance(value, (list, tuple)) else [value]):
                if not isinstance(ref, Ref) or ref.node not in graph.nodes or ref.node in cone:
                    continue
                meta = graph.meta_of(ref)
                if meta is None or meta.dtype not in FLOAT:
                    continue
                cone[ref.node] = depth + 1
                frontier.append((graph[ref.node], depth + 1))
    return cone


def pytorch_values(program: Any, batch: dict[str, torch.Tensor], names: set[str], seed: int) -> dict[str, Any]:
    """PyTorch's values of the named nodes on ``batch``, random ops seeded as the interpreter's run is."""
    from opmap.checking.verify import node_values

    torch.manual_seed(seed)  # random ops draw as the interpreter's run does
    return node_values(program, batch, names)


def network_values(plan: Plan, program: Any, strategies: dict, batch: dict[str, torch.Tensor], seed: int) -> tuple[Any, dict[str, Any]]:
    """The plan's network built, and every tensor's value (by tensor name) as the interpreter runs it on ``batch``."""
    from opmap.building.builder import build_network
    from opmap.checking.interpreter import run_network

    built = build_network(plan, program, strategies)
    values: dict[str, Any] = {}

    def keep(layer, _ins, outs):
        for j, value in enumerate(outs):
            values[layer.get_output(j).name] = value

    torch.manual_seed(seed)
    run_network(built.network, built.trt, batch, built.attention, observer=keep)
    return built, values


def disagreements(plan: Plan, program: Any, strategies: dict, batches: list[dict[str, torch.Tensor]],
                  nodes: list[Node]) -> dict[str, tuple[int, int]]:
    """Per discrete node: (elements differing from PyTorch's, elements compared) over the batches."""
    counts = {n.name: [0, 0] for n in nodes}
    for seed, batch in enumerate(batches):
        expected = pytorch_values(program, batch, set(counts), seed)
        built, values = network_values(plan, program, strategies, batch, seed)
        for name in counts:
            exp = expected.get(name)
            exp = list(exp) if isinstance(exp, (list, tuple)) else [exp]
            for e, tensor_name in zip(exp, built.node_tensors.get(name, [])):
                got = values.get(tensor_name)
                if not isinstance(e, torch.Tensor) or got is None or e.is_floating_point() or got.shape != e.shape:
                    continue  # float items are float error, not discrete; a padded layout is checked by verify
                counts[name][0] += int((got.to(e.dtype) != e).sum())
                counts[name][1] += e.numel()
    return {k: (v[0], v[1]) for k, v in counts.items()}


def demote(np_: Any, why: str) -> None:
    """Back to fp32 (with its sub-plan), and why."""
    np_.precision, np_.quant, np_.precision_why = None, {}, why
    for sub in (np_.subplan.nodes if np_.subplan is not None else []):
        demote(sub, why)


def protect(plan: Plan, program: Any, strategies: dict, batches: list[dict[str, torch.Tensor]], label: str) -> list[str]:
    """Keep every discrete result as PyTorch computes it on ``batches`` (``label`` says what they are). Returns notes."""
    by_name = {np_.node.name: np_ for np_ in plan.nodes}
    reduced = {name for name, np_ in by_name.items() if np_.precision or np_.quant}  # quant: a residual read as INT8
    watched = []
    for d in discrete_nodes(plan.graph):
        cone = {k: v for k, v in float_cone(plan.graph, d).items() if k in reduced}
        if cone:
            watched.append((d, cone))
    if not watched or not batches:
        return []
    notes = []
    for tier in (NEAR, None):
        wrong = disagreements(plan, program, strategies, batches, [d for d, _ in watched])
        flipped = [(d, cone) for d, cone in watched if wrong[d.name][0]]
        if not flipped:
            break
        for d, cone in flipped:
            bad, total = wrong[d.name]
            for name, hops in cone.items():
                np_ = by_name[name]
                if (np_.precision or np_.quant) and (tier is None or hops <= tier):
                    demote(np_, f"fp32 (discrete protection): feeds {d.name} ({d.op}), whose result differed from "
                                 f"PyTorch's in {bad} of {total} elements on {len(batches)} {label} batches with "
                                 f"{np_.precision or 'an INT8 input'} here")
            notes.append(f"{d.name}: {bad} of {total} discrete elements differed; reduced-precision producers "
                         f"{'within ' + str(tier) + ' hops' if tier else 'in its float cone'} moved to fp32")
    else:
        wrong = disagreements(plan, program, strategies, batches, [d for d, _ in watched])
    for d, cone in watched:
        bad, total = wrong[d.name]
        if bad:
            notes.append(f"{d.name}: still {bad} of {total} discrete elements differ with every producer in fp32")
            continue
        for name in cone:
            np_ = by_name[name]
            if np_.precision:
                np_.precision_why += f"; feeds {d.name} ({d.op}): PyTorch's discrete result reproduced on {len(batches)} {label} batches"
    return notes
