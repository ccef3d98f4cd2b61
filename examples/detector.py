"""A small detector-like model whose post-processing has no obvious TensorRT equivalent:
`torch.nonzero`, boolean-mask indexing and an `nn.FractionalMaxPool2d`.

    python examples/detector.py [OUT.pt2]     # exports to examples/detector.pt2 by default
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn


class TinyDetector(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.FractionalMaxPool2d(2, output_ratio=0.5)
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(32, 4 + 1 + classes, 1)  # box (4), objectness (1), classes

    def forward(self, image: torch.Tensor):
        features = self.body(self.pool(self.stem(image)))
        out = self.head(features)  # [B, 4+1+C, H, W]
        objectness = out[:, 4].sigmoid()  # [B, H, W]
        keep = objectness > 0.5
        cells = torch.nonzero(keep)  # [N, 3]: (batch, y, x) of every kept cell
        boxes = out[:, :4].permute(0, 2, 3, 1)[keep]  # [N, 4]
        classes = out[:, 5:].permute(0, 2, 3, 1)[keep].argmax(-1)  # [N]
        return cells, boxes, classes, objectness.mean()


def export_detector():
    torch.manual_seed(0)
    model = TinyDetector().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (torch.randn(1, 3, 32, 32),), strict=False)


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(__file__).with_name("detector.pt2")
    torch.export.save(export_detector(), str(out))
    print(f"exported {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
