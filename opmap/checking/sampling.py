"""Reference semantics of TensorRT's cubic Resize and GridSample layers, written from their documented formulas
(ONNX's Resize and GridSample, which TensorRT follows) rather than by calling PyTorch's own op: the tests compare
these against ``F.interpolate(mode="bicubic")`` and ``F.grid_sample``, so an agreement is evidence, not a tautology.
"""

from __future__ import annotations

import math

import torch


# -- cubic resize ------------------------------------------------------------------------------------
def _cubic_weights(t: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution weights of the four taps at distances 1 + t, t, 1 - t, 2 - t ([..., 4])."""
    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)


def _source(out_size: int, in_size: int, scale: float | None, transform: str) -> torch.Tensor:
    """Each output index's source coordinate along one axis (float64). ``scale`` is out/in (given, or from the sizes)."""
    o = torch.arange(out_size, dtype=torch.float64)
    if transform == "ALIGN_CORNERS":
        return o * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(o)
    ratio = 1.0 / scale if scale is not None else in_size / out_size
    if transform == "HALF_PIXEL":
        return (o + 0.5) * ratio - 0.5
    if transform == "ASYMMETRIC":
        return o * ratio
    raise ValueError(f"cubic resize with {transform} coordinates is not interpreted")


def cubic_axis(x: torch.Tensor, axis: int, out_size: int, scale: float | None, transform: str, a: float,
               exclude_outside: bool) -> torch.Tensor:
    """Cubic interpolation along one axis: four taps around floor(source); taps outside the input repeat the edge
    element, or (exclude_outside) get weight 0 with the others renormalised."""
    n = x.shape[axis]
    src = _source(out_size, n, scale, transform)
    base = torch.floor(src)
    w = _cubic_weights(src - base, a)  # [out, 4]
    taps = base.long().unsqueeze(-1) + torch.arange(-1, 3)  # [out, 4]
    if exclude_outside:
        inside = (taps >= 0) & (taps < n)
        w = torch.where(inside, w, torch.zeros_like(w))
        w = w / w.sum(-1, keepdim=True)
    taps = taps.clamp(0, n - 1)
    moved = x.movedim(axis, -1).to(torch.float64)
    picked = moved[..., taps]  # [..., out, 4]
    out = (picked * w).sum(-1)
    return out.movedim(-1, axis).to(x.dtype)


def cubic_resize(x: torch.Tensor, sizes: list[int], scales: list[float] | None, transform: str, a: float,
                 exclude_outside: bool) -> torch.Tensor:
    """Separable cubic resize of the trailing ``len(sizes)`` dims (outer dims untouched)."""
    lead = x.dim() - len(sizes)
    for i, size in enumerate(sizes):
        x = cubic_axis(x, lead + i, size, scales[i] if scales else None, transform, a, exclude_outside)
    return x


# -- grid sample -------------------------------------------------------------------------------------
def _unnormalize(g: torch.Tensor, size: int, align: bool) -> torch.Tensor:
    """[-1, 1] grid coordinates to pixel coordinates (corner pixels' centres, or their outer edges)."""
    return (g + 1) / 2 * (size - 1) if align else ((g + 1) * size - 1) / 2


def _reflect(c: torch.Tensor, low2: int, high2: int) -> torch.Tensor:
    """Reflect coordinates into [low2 / 2, high2 / 2] (bounds given doubled, so they stay integers)."""
    if low2 == high2:
        return torch.zeros_like(c)
    low, span = low2 / 2, (high2 - low2) / 2
    c = (c - low).abs()
    extra = torch.fmod(c, span)
    flips = torch.floor(c / span)
    return torch.where(flips.remainder(2) == 0, extra + low, span - extra + low)


def _pad_coordinate(c: torch.Tensor, size: int, padding: str, align: bool) -> torch.Tensor:
    if padding == "REFLECT":
        c = _reflect(c, 0, 2 * (size - 1)) if align else _reflect(c, -1, 2 * size - 1)
    if padding in ("CLAMP", "REFLECT"):
        c = c.clamp(0, size - 1)
    return c


def _taps(x: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    """x[n, :, iy, ix] for integer coordinates [N, Ho, Wo]; outside ones read 0 (FILL padding)."""
    n, c, h, w = x.shape
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    flat = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).reshape(n, 1, -1).expand(n, c, -1)
    picked = x.reshape(n, c, h * w).gather(2, flat).reshape(n, c, *iy.shape[1:])
    return torch.where(inside.unsqueeze(1), picked, torch.zeros_like(picked))


def grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str, padding: str, align: bool) -> torch.Tensor:
    """[N, C, H, W] sampled at grid [N, Ho, Wo, 2] (x, y in [-1, 1]): LINEAR (bilinear) or NEAREST (coordinates
    rounded half to even), padding FILL (zeros), CLAMP (border) or REFLECT (mirrored about the edge pixels' centres
    with align_corners, their outer edges without)."""
    h, w = x.shape[-2:]
    g = grid.to(torch.float64)
    cx = _pad_coordinate(_unnormalize(g[..., 0], w, align), w, padding, align)
    cy = _pad_coordinate(_unnormalize(g[..., 1], h, align), h, padding, align)
    xf = x.to(torch.float64)
    if mode == "NEAREST":
        return _taps(xf, torch.round(cy).long(), torch.round(cx).long()).to(x.dtype)
    if mode != "LINEAR":
        raise ValueError(f"GridSample {mode} is not interpreted")
    x0, y0 = torch.floor(cx), torch.floor(cy)
    fx, fy = (cx - x0).unsqueeze(1), (cy - y0).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    out = (_taps(xf, y0, x0) * (1 - fx) * (1 - fy) + _taps(xf, y0, x0 + 1) * fx * (1 - fy)
           + _taps(xf, y0 + 1, x0) * (1 - fx) * fy + _taps(xf, y0 + 1, x0 + 1) * fx * fy)
    return out.to(x.dtype)


def resize_sizes(x: torch.Tensor, spatial: int, scales: list[float] | None, shape: list[int] | None) -> list[int]:
    """The output sizes of the trailing ``spatial`` dims: floor(in * scale) with scales, else the given shape."""
    if scales:
        return [int(math.floor(n * s)) for n, s in zip(x.shape[-spatial:], scales)]
    return list(shape[-spatial:])
