"""The zoo's served patterns (issue 19), each exported one way, the way it is served: decode steps of every decoder
family with the KV cache as tensors in and out (a DynamicCache built in the wrapper, examples/decode_step.py), the
decoder steps of encoder-decoders, transformers' StaticCache (cache tensors as inputs written in place, and
transformers' own strict recipe with the cache as buffers), LSTM/GRU models with a dynamic sequence length, a model
with autocast regions inside forward, and a CNN block that writes in place into views. ``bench/build_zoo.py`` builds
and verifies them beside the architecture zoo (``--only decode_llama,lstm_tagger``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from examples.decode_step import (FAMILIES, SEQ2SEQ, export_decode_step, export_seq2seq_step, export_static_cache_step,
                                  export_transformers_static_cache)


@dataclass(frozen=True)
class Served:
    family: str
    export: Callable[[], tuple[torch.export.ExportedProgram, str]]  # (program, note)


class Tagger(torch.nn.Module):
    """token ids -> embedding -> two-layer bidirectional LSTM (batch first) -> tag scores."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(64, 16)
        self.lstm = torch.nn.LSTM(16, 12, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(24, 5)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.head(out)


class GruForecaster(torch.nn.Module):
    """features [T, B, F] (sequence first) and an initial state -> a two-layer GRU -> next value per step, last state."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(6, 16, num_layers=2)
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x, h0):
        out, h = self.gru(x, h0)
        return self.head(out), h


class MixedPrecision(torch.nn.Module):
    """An fp32 island (autocast disabled, as EfficientViT's attention does) feeding a bfloat16 region."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(16, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            y = torch.relu(self.a(x.float()))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = self.b(y)
        return self.c(y + z.float())


class GhostBlock(torch.nn.Module):
    """A GhostNet-style block written in place: ReLU(inplace=True), a cheap depthwise branch added into a channel slice
    of the primary features (``y[:, :C].add_``: a write into a view read again through its base), a residual ``+=``."""

    def __init__(self) -> None:
        super().__init__()
        self.primary = torch.nn.Conv2d(8, 16, 1)
        self.cheap = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.act = torch.nn.ReLU(inplace=True)
        self.out = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x):
        y = self.act(self.primary(x))
        y[:, :8].add_(self.cheap(y)[:, 8:])
        z = self.out(y)
        z += x
        return z


def _rnn_export(model: torch.nn.Module, args: tuple, shapes: tuple, check: tuple):
    from opmap.rules.recurrent import export_dynamic_length

    torch.manual_seed(0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return export_dynamic_length(model.eval(), args, dynamic_shapes=shapes, check_inputs=check), ""


def _tagger():
    from torch.export import Dim

    torch.manual_seed(0)
    shapes = ({0: Dim("batch", min=1, max=4), 1: Dim("seq", min=2, max=32)},)
    return _rnn_export(Tagger(), (torch.randint(0, 64, (2, 9)),), shapes, (torch.randint(0, 64, (3, 20)),))


def _gru():
    from torch.export import Dim

    torch.manual_seed(0)
    b, t = Dim("batch", min=1, max=4), Dim("seq", min=2, max=32)
    return _rnn_export(GruForecaster(), (torch.randn(9, 2, 6), torch.randn(2, 2, 16)), ({0: t, 1: b}, {1: b}),
                       (torch.randn(20, 3, 6), torch.randn(2, 3, 16)))


def _plain(module: Callable[[], torch.nn.Module], example: torch.Tensor, dims: dict):
    def export():
        from torch.export import Dim

        torch.manual_seed(0)
        shapes = ({axis: Dim(name, min=lo, max=hi) for axis, (name, lo, hi) in dims.items()},)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.export.export(module().eval(), (example,), dynamic_shapes=shapes, strict=False), ""

    return export


def _note(export: Callable, *args) -> Callable[[], tuple]:
    return lambda: (export(*args), "")


SERVED: dict[str, Served] = {
    **{f"decode_{f}": Served("decode step (DynamicCache)", _note(export_decode_step, f)) for f in FAMILIES},
    **{f"decode_{f}": Served("encoder-decoder decode step", _note(export_seq2seq_step, f)) for f in SEQ2SEQ},
    **{f"static_cache_{f}": Served("decode step (StaticCache inputs)", _note(export_static_cache_step, f)) for f in FAMILIES},
    "static_cache_recipe": Served("decode step (StaticCache buffers)", _note(export_transformers_static_cache, "llama")),
    "lstm_tagger": Served("recurrent (LSTM)", _tagger),
    "gru_forecaster": Served("recurrent (GRU)", _gru),
    "autocast_mlp": Served("autocast in forward", _plain(MixedPrecision, torch.randn(3, 16), {0: ("batch", 1, 8)})),
    "ghost_block": Served("in-place on views (CNN)", _plain(GhostBlock, torch.randn(2, 8, 16, 16),
                                                              {0: ("batch", 1, 4), 2: ("height", 8, 32), 3: ("width", 8, 32)})),
}
