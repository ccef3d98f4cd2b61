"""Models exported the way they are deployed: by keyword, with dynamic batch and sequence (or image size).

Used by the dynamic-shape tests, the zoo bench and ``make demo``. Random weights from small configs; no downloads."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: `python examples/dynamic.py OUT_DIR`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.zoo import _DECODER, _ENCODER, VOCAB  # noqa: E402

BATCH = (1, 32)
SEQ = (2, 128)


class KeywordTuple(nn.Module):
    """Calls a transformers model by keyword with tuple outputs (``return_dict=False``, no KV cache)."""

    def __init__(self, model: nn.Module, cache: bool) -> None:
        super().__init__()
        self.model = model
        self.cache = cache

    def forward(self, input_ids, attention_mask):
        extra = {"use_cache": False} if self.cache else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False, **extra)


class MaskedSelection(nn.Module):
    """A boolean-mask selection reduced away: ``proj(x)[score(x) > 0].sum(0)`` (data-dependent, then not)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 4)
        self.score = nn.Linear(8, 1)

    def forward(self, x):
        return self.proj(x)[self.score(x).squeeze(-1) > 0].sum(0)


def text_model(name: str) -> nn.Module:
    import transformers as T

    torch.manual_seed(0)
    if name == "bert":
        return KeywordTuple(T.BertModel(T.BertConfig(**_ENCODER)).eval(), cache=False)
    if name == "llama":
        return KeywordTuple(T.LlamaForCausalLM(T.LlamaConfig(**_DECODER)).eval(), cache=True)
    raise KeyError(name)


def export_text(name: str, batch: tuple[int, int] = BATCH, seq: tuple[int, int] = SEQ, dynamic: bool = True):
    """``torch.export.export(model, (), kwargs={input_ids, attention_mask}, dynamic_shapes=...)``."""
    model = text_model(name)
    kwargs = {"input_ids": torch.randint(0, VOCAB, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.int64)}
    shapes = None
    if dynamic:
        b = torch.export.Dim("batch", min=batch[0], max=batch[1])
        s = torch.export.Dim("seq", min=seq[0], max=seq[1])
        shapes = {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=shapes, strict=False)


def export_masked_selection(batch: tuple[int, int] = BATCH):
    torch.manual_seed(0)
    b = torch.export.Dim("batch", min=batch[0], max=batch[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(MaskedSelection().eval(), (torch.randn(4, 8),), dynamic_shapes=({0: b},), strict=False)


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else "examples"
    wanted = sys.argv[2:] or ["bert_dynamic", "llama_dynamic", "masked_selection_dynamic"]
    makers = {"bert_dynamic": lambda: export_text("bert"), "llama_dynamic": lambda: export_text("llama"),
              "masked_selection_dynamic": export_masked_selection}
    for label in wanted:
        torch.export.save(makers[label](), f"{folder}/{label}.pt2")
        print(f"{folder}/{label}.pt2")
