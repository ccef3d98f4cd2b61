"""shape/permute: a permute of a permute is one Shuffle of the first one's input (HF attention's
``key.transpose(1, 2)`` then ``.transpose(-1, -2)``, which the ONNX exporter also merges), and a permutation moving
only unit dims is a reshape; both verified against PyTorch."""

import torch

from opmap.building.backend import profile
from opmap.building.builder import build_network, serialize
from opmap.checking.examples import candidates_of
from opmap.checking.verify import verify_built
from opmap.loading.capture import capture_callable
from opmap.planning.planner import Planner
from opmap.service import load_rules

RULESET = load_rules(None)


def _transposing_shuffles(fn, x):
    captured = capture_callable(fn, x)
    planner = Planner(RULESET, candidates_of(RULESET), backend=profile("tensorrt_rtx"), require_emit=True)
    plan = planner.plan(captured.graph)
    planner.judge.close()
    built = serialize(build_network(plan, captured.program, RULESET.strategies))
    assert verify_built(built, captured.program, {next(iter(captured.graph.inputs)): x}).ok
    layers = [built.network.get_layer(i) for i in range(built.network.num_layers)]
    shuffles = []
    for layer in layers:
        if layer.type.name == "SHUFFLE":
            layer.__class__ = built.trt.IShuffleLayer
            if list(layer.first_transpose)[:len(layer.get_input(0).shape)] != list(range(len(layer.get_input(0).shape))):
                shuffles.append(layer)
    live = {layer.get_input(j).name for layer in layers for j in range(layer.num_inputs) if layer.get_input(j) is not None}
    live |= {built.network.get_output(i).name for i in range(built.network.num_outputs)}
    return [s for s in shuffles if s.get_output(0).name in live]


def test_a_permute_of_a_permute_is_one_shuffle():
    assert len(_transposing_shuffles(lambda a: a.transpose(1, 2).transpose(-1, -2) * 2, torch.randn(2, 3, 4, 5))) == 1
    assert not _transposing_shuffles(lambda a: a.t().t() * 2, torch.randn(4, 6))


def test_a_permute_moving_only_unit_dims_is_a_reshape():
    assert not _transposing_shuffles(lambda a: a.permute(0, 2, 1, 3) * 2, torch.randn(2, 5, 1, 3))
