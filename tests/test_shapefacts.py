"""Optimization profiles that satisfy the relations between input dims an export states (``Eq(s0*s1, 24)``)."""

import pytest
import torch

from opmap.loading.capture import capture_callable
from opmap.loading.shapefacts import ShapeFactError, satisfying_points
from opmap.building.profile import profile_points
from tests.conftest import export_to

AUTO = {0: torch.export.Dim.AUTO(max=32), 1: torch.export.Dim.AUTO(max=32)}


class View38(torch.nn.Module):
    def forward(self, x):
        return x.view(3, 8) * 2


def test_every_profile_point_satisfies_the_exports_facts():
    graph = capture_callable(lambda x: x.view(3, 8) * 2, torch.randn(4, 6), dynamic_shapes=(AUTO,)).graph
    a, b = graph.inputs["args_0"].shape
    assert f"Eq({a}*{b}, 24)" in graph.facts
    points = profile_points(graph)
    assert points["min"] == points["opt"] == points["max"], "a fixed volume leaves one ordered point"
    assert points["min"][a] * points["min"][b] == 24 and points["min"][a] % 3 != 0


def test_facts_move_only_the_points_that_break_them():
    graph = capture_callable(lambda x: x.reshape(x.shape[0], 2, -1).sum(1), torch.randn(4, 6), dynamic_shapes=(AUTO,)).graph
    a, b = graph.inputs["args_0"].shape
    points = profile_points(graph)
    assert points["min"] == {a: 2, b: 4}, "the default min (2, 2) breaks s1 != 2: the next even size"
    assert points["opt"] == {a: 8, b: 8} and points["max"] == {a: 32, b: 32}


def test_a_saved_archive_keeps_its_facts_and_builds_and_verifies(cli, tmp_path):
    """Before: "kOPT values violate shape constraints" (the profile ignored Eq(s0*s1, 24)). The safe loader never runs
    the archive's guard code; its text is read by the restricted size-expression parser."""
    model = export_to(tmp_path / "view.pt2", View38(), torch.randn(4, 6), dynamic_shapes=(AUTO,))
    r = cli("verify", model, "--json")
    assert r.code == 0, r.err


def test_facts_from_a_constant_beyond_the_range_ends_and_no_solution():
    defaults = {"min": {"s0": 2}, "opt": {"s0": 8}, "max": {"s0": 4096}}
    points = satisfying_points(("Eq(Mod(s0, 1000), 0)",), {"s0": (2, 4096)}, defaults)
    assert (points["min"]["s0"], points["max"]["s0"]) == (1000, 4000)
    with pytest.raises(ShapeFactError, match=r"satisfies Eq\(s0\*s1, 7\)"):
        satisfying_points(("Eq(s0*s1, 7)",), {"s0": (2, 32), "s1": (2, 32)},
                          {"min": {"s0": 2, "s1": 2}, "opt": {"s0": 8, "s1": 8}, "max": {"s0": 32, "s1": 32}})
