"""Autocast regions inside forward: torch.export keeps them as ``higher_order.wrap_with_autocast``; capture inlines them
with the casts they imply (explicit ``_to_copy`` nodes), so the model plans, builds and verifies like any other. An
output computed through bfloat16 is compared at bfloat16's tolerance (its rounding points differ by an ulp)."""

import pytest
import torch
import torch.nn.functional as F

from opmap.service import load_rules
from opmap.checking import fuzz
from opmap.loading.capture import capture_callable

RULESET = load_rules(None)


class MixedPrecision(torch.nn.Module):
    """An fp32 island (autocast disabled, as EfficientViT's LiteMLA does) and a bfloat16 region."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            y = torch.relu(self.a(x.float()))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = self.b(y)
        return y + z.float()


def test_regions_are_inlined_with_their_casts():
    ops = capture_callable(MixedPrecision().eval(), torch.randn(2, 8)).graph.ops()
    assert not [op for op in ops if op.startswith("higher_order.")]
    assert "aten._to_copy.default" in ops  # the bfloat16 region's casts, now explicit


@pytest.mark.parametrize("dynamic", [False, True])
def test_mixed_precision_model_builds_and_verifies(dynamic):
    trial = fuzz.run_case(RULESET.strategies["mm/linear"], fuzz.Case("autocast", MixedPrecision().eval(), (torch.randn(3, 8),), dynamic),
                          RULESET)
    assert trial.status == "verified", trial.reason


def test_a_float32_path_keeps_float32_tolerance():
    """The tolerance widens only for outputs computed through a narrower type: an error of 1e-3 relative (inside
    bfloat16's tolerance) on a float32-only path is still wrong."""
    import dataclasses

    from opmap.planning.strategy import accept, strategy

    @strategy("planted/relu-scaled", op="aten.relu.default", kind="direct", examples=[accept(torch.relu, torch.randn(2, 3))])
    def rule_planted(node):
        """Accepts every relu."""

    rule_planted.emit(lambda ctx, node: ctx.elementwise(ctx.activation(ctx.input("self"), "RELU"), ctx.const(1.001), "PROD"))
    ruleset = dataclasses.replace(RULESET, strategies={**RULESET.strategies, rule_planted.id: rule_planted})
    fp32 = fuzz.Case("fp32", lambda x: torch.relu(x) * 2, (torch.randn(3, 8) + 2,))
    assert fuzz.run_case(rule_planted, fp32, ruleset).status == "wrong"



class HalfConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.norm(torch.relu(self.conv(x)).mean(dim=(2, 3))))


def test_a_model_cast_to_half_computes_in_half():
    """A program the user cast to half (``model.half()``) computes in half as it says: no node round-trips through
    float32 (a cast in, a float32 kernel, a cast out, as every node did), and the network verifies. The exception is
    PyTorch's own: a normalization or a sum of a half input computes in float32 and rounds once, so the layer norm's
    and the mean's input and output are cast (and the layer norm's constant scale and shift made float32)."""
    from opmap.building.backend import profile
    from opmap.building.builder import build_network, serialize
    from opmap.checking.examples import candidates_of
    from opmap.checking.verify import verify_built
    from opmap.planning.planner import Planner

    x = torch.randn(2, 3, 8, 8).half()
    captured = capture_callable(HalfConvNet().half().eval(), x)
    planner = Planner(RULESET, candidates_of(RULESET), backend=profile("tensorrt_rtx"), require_emit=True)
    plan = planner.plan(captured.graph)
    planner.judge.close()
    built = serialize(build_network(plan, captured.program, RULESET.strategies))
    layers = [built.network.get_layer(i) for i in range(built.network.num_layers)]
    producer = {layer.get_output(j).name: layer for layer in layers for j in range(layer.num_outputs)}
    casts = [layer for layer in layers if layer.type.name == "CAST"]
    def constant_derived(t):  # a constant, reshaped or cast: folded when the engine is built
        layer = producer.get(t.name)
        while layer is not None and layer.type.name in ("SHUFFLE", "CAST"):
            layer = producer.get(layer.get_input(0).name)
        return layer is not None and layer.type.name == "CONSTANT"

    from_constants = [c for c in casts if constant_derived(c.get_input(0))]
    assert sorted(c.name.rsplit("/", 1)[-1] for c in casts if c not in from_constants) == ["cast-float16"] * 2 + ["cast-float32"] * 2
    assert sorted(c.name.split("/", 1)[0] for c in casts if c not in from_constants) == ["layer_norm"] * 2 + ["mean"] * 2
    heavy = [layer for layer in layers if layer.type.name in ("CONVOLUTION", "MATRIX_MULTIPLY")]
    assert len(heavy) >= 2 and all(layer.get_output(0).dtype.name == "HALF" for layer in heavy), \
        [(layer.name, layer.get_output(0).dtype) for layer in heavy]
    norm = next(layer for layer in layers if layer.type.name == "NORMALIZATION")
    assert norm.get_output(0).dtype.name == "FLOAT"
    reduce = next(layer for layer in layers if layer.type.name == "REDUCE")
    assert reduce.get_input(0).dtype.name == "FLOAT" and reduce.get_output(0).dtype.name == "FLOAT"
    report = verify_built(built, captured.program, {next(iter(captured.graph.inputs)): x})
    assert report.ok, [o.to_dict() for o in report.outputs]


def test_identical_casts_of_one_tensor_are_one_cast_layer():
    """Two nodes casting the same tensor to the same dtype (each layer's copy of a mask) share one Cast layer: a
    second Cast reading the same producer keeps TensorRT from fusing either into it."""
    from opmap.building.backend import profile
    from opmap.building.builder import build_network, serialize
    from opmap.checking.examples import candidates_of
    from opmap.checking.verify import verify_built
    from opmap.planning.planner import Planner

    def fn(x, m):
        mask = m * m
        return x.masked_fill(~mask.to(torch.bool), 0.0) + x.masked_fill(~mask.to(torch.bool), 1.0)

    inputs = (torch.randn(2, 4), torch.randint(0, 2, (2, 4)))
    captured = capture_callable(fn, *inputs)
    assert sum(1 for n in captured.graph if n.op.startswith("aten.to")) == 2
    planner = Planner(RULESET, candidates_of(RULESET), backend=profile("tensorrt_rtx"), require_emit=True)
    plan = planner.plan(captured.graph)
    planner.judge.close()
    built = serialize(build_network(plan, captured.program, RULESET.strategies))
    layers = [built.network.get_layer(i) for i in range(built.network.num_layers)]
    assert len([layer for layer in layers if layer.type.name == "CAST"]) == 1
    assert verify_built(built, captured.program, dict(zip(captured.graph.inputs, inputs))).ok


class HalfPools(torch.nn.Module):
    def forward(self, x):
        return (F.avg_pool2d(x, 4) + F.adaptive_avg_pool2d(x, 2)).sum((2, 3)) + F.adaptive_avg_pool2d(x, 1).flatten(1)


def test_a_half_average_pool_sums_in_float32():
    """Average pooling (windowed, adaptive, global) of a half input sums in float32 and rounds once, as PyTorch does:
    TensorRT documents no accumulation type for a half Pooling or Reduce layer. Every Pooling and Reduce layer of the
    half program reads float32, and the network verifies."""
    from opmap.building.backend import profile
    from opmap.building.builder import build_network, serialize
    from opmap.checking.examples import candidates_of
    from opmap.checking.verify import verify_built
    from opmap.planning.planner import Planner

    x = (torch.rand(2, 3, 8, 8) * 4 + 300).half()
    captured = capture_callable(HalfPools().eval(), x)
    planner = Planner(RULESET, candidates_of(RULESET), backend=profile("tensorrt_rtx"), require_emit=True)
    plan = planner.plan(captured.graph)
    planner.judge.close()
    built = serialize(build_network(plan, captured.program, RULESET.strategies))
    layers = [built.network.get_layer(i) for i in range(built.network.num_layers)]
    pools = [layer for layer in layers if layer.type.name in ("POOLING", "REDUCE")]
    assert len(pools) >= 4 and all(layer.get_input(0).dtype.name == "FLOAT" for layer in pools), \
        [(layer.name, layer.get_input(0).dtype) for layer in pools]
    report = verify_built(built, captured.program, {next(iter(captured.graph.inputs)): x})
    assert report.ok, [o.to_dict() for o in report.outputs]
