"""A small model whose forward calls the custom op ``mylib::soft_clip``; ``python model.py OUT.pt2`` exports it with a
dynamic batch (1..64)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere: the op's module lives beside this file
from soft_clip_op import soft_clip  # noqa: E402


class Squash(torch.nn.Module):
    def __init__(self, limit: float = 2.0):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)
        self.limit = limit

    def forward(self, x):
        return soft_clip(self.proj(x), self.limit) * 0.5


def export(path: str) -> Path:
    torch.manual_seed(0)
    program = torch.export.export(Squash().eval(), (torch.randn(4, 16),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},), strict=False)
    torch.export.save(program, path)
    return Path(path)


if __name__ == "__main__":
    print(export(sys.argv[1] if len(sys.argv) > 1 else "squash.pt2"))
