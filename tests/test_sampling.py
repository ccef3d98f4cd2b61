"""Cubic Resize and GridSample: the reference interpreter's semantics (opmap/checking/sampling.py, written from the
layers' formulas) against PyTorch's own ops over argument combinations, then built networks of the strategies."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from opmap.checking import sampling
from opmap.checking.examples import conformance
from opmap.planning.strategy import accept
from opmap.rules.sampling import PYTORCH_CUBIC_A
from tests.test_conformance import RULESET

X = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("size, align", list(itertools.product([(10, 14), (3, 4), (5, 7), (1, 9), (8, 3)], [False, True])))
def test_cubic_resize_to_sizes_matches_pytorch_bicubic(size, align):
    ours = sampling.cubic_resize(X, list(size), None, "ALIGN_CORNERS" if align else "HALF_PIXEL", PYTORCH_CUBIC_A, False)
    torch.testing.assert_close(ours, F.interpolate(X, size=size, mode="bicubic", align_corners=align), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [(2.0, 2.0), (1.5, 0.5), (0.7, 3.0)])
def test_cubic_resize_by_scale_factors_maps_by_one_over_scale(scale):
    sizes = sampling.resize_sizes(X, 2, list(scale), None)
    ours = sampling.cubic_resize(X, sizes, list(scale), "HALF_PIXEL", PYTORCH_CUBIC_A, False)
    torch.testing.assert_close(ours, F.interpolate(X, scale_factor=scale, mode="bicubic"), rtol=1e-5, atol=1e-5)


def test_cubic_coefficient_and_exclude_outside_are_read_not_assumed():
    """Another coefficient (ONNX's default -0.5) or excluding outside taps changes the result near the edges."""
    base = sampling.cubic_resize(X, [10, 14], None, "HALF_PIXEL", PYTORCH_CUBIC_A, False)
    assert not torch.allclose(base, sampling.cubic_resize(X, [10, 14], None, "HALF_PIXEL", -0.5, False))
    excluded = sampling.cubic_resize(X, [10, 14], None, "HALF_PIXEL", PYTORCH_CUBIC_A, True)
    assert not torch.allclose(base[..., 0, :], excluded[..., 0, :])
    torch.testing.assert_close(base[..., 4:6, 4:10], excluded[..., 4:6, 4:10])  # interior taps are all inside


GRID = (torch.rand(2, 4, 6, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 1.4  # some points outside


@pytest.mark.parametrize("mode, padding, align", list(itertools.product(["bilinear", "nearest"], ["zeros", "border", "reflection"],
                                                                   [False, True])))
def test_grid_sample_semantics_match_pytorch(mode, padding, align):
    trt_mode = {"bilinear": "LINEAR", "nearest": "NEAREST"}[mode]
    trt_padding = {"zeros": "FILL", "border": "CLAMP", "reflection": "REFLECT"}[padding]
    ours = sampling.grid_sample(X, GRID, trt_mode, trt_padding, align)
    theirs = F.grid_sample(X, GRID, mode=mode, padding_mode=padding, align_corners=align)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_grid_sample_far_outside_reflects_more_than_once():
    far = torch.tensor([[[[3.7, -2.9], [-5.2, 4.1]]]])
    for align in (False, True):
        ours = sampling.grid_sample(X[:1], far, "LINEAR", "REFLECT", align)
        torch.testing.assert_close(ours, F.grid_sample(X[:1], far, padding_mode="reflection", align_corners=align))


def _built(sid, fn, *inputs, **kw):
    report, built = conformance(RULESET.strategies[sid], accept(fn, *inputs, **kw), RULESET)
    assert built.engine and report.ok, [o.to_dict() for o in report.outputs]


@pytest.mark.parametrize("kw", [dict(scale_factor=(1.5, 2.0)), dict(size=(9, 4), align_corners=True), dict(size=(2, 2)),
                                dict(scale_factor=3.0, align_corners=True)])
def test_bicubic_networks_build_and_match(kw):
    _built("resize/bicubic", lambda a: F.interpolate(a, mode="bicubic", **kw), torch.randn(1, 2, 5, 6))


def test_bicubic_dynamic_image_size_with_scale_factors():
    h = torch.export.Dim("h", min=4, max=32)
    _built("resize/bicubic", lambda a: F.interpolate(a, scale_factor=2.0, mode="bicubic"), torch.randn(1, 2, 8, 8),
           dynamic_shapes=({2: h, 3: h},))


@pytest.mark.parametrize("mode, padding, align", [("bilinear", "reflection", False), ("nearest", "zeros", True),
                                                  ("nearest", "border", False), ("bilinear", "zeros", True)])
def test_grid_sample_networks_build_and_match(mode, padding, align):
    _built("sample/grid-sample", lambda a, g: F.grid_sample(a, g, mode=mode, padding_mode=padding, align_corners=align),
           torch.randn(2, 3, 5, 4), GRID)

