"""A served decoder's decode step, exported for opmap: ``python examples/decode_step.py [OUT.pt2] [--family llama]``.

One call of the step takes the new tokens, the attention mask over past + new positions and every layer's past keys
and values as plain tensors, and returns the logits and every layer's updated keys and values (the past with the new
positions appended): the server keeps the cache between calls and feeds the returned keys/values to the next one.
The batch ``B``, the new tokens ``T`` and the cache length ``P`` are dynamic; the mask's length (``P + T``) is left to
torch.export (``Dim.AUTO``: it refuses arithmetic over two named dims).

Engine inputs:  input_ids [B, T] int64, attention_mask [B, P+T] int64, past_key_0, past_value_0, ... [B, KV_HEADS, P, D]
Engine outputs: output0 the logits [B, T, VOCAB]; output1, output2, ... each layer's keys then values
                [B, KV_HEADS, P+T, D], in layer order
torch.export derives the mask length's range from the others' (sizes traced as at least 2): with these ranges the
engine takes P + T >= 4, so a one-token step needs three cached positions or more.

A model that keeps its cache in registered buffers and writes them in place (``index_copy_``, the ``StaticCache``
pattern) needs no wrapper: opmap makes each written buffer an engine input and output of the same name (state in,
state out; README, "Served decoders and state updated in place").

The weights are random (a tiny config, no download): the point is the export pattern, not the model.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: `python examples/decode_step.py OUT.pt2`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import examples  # noqa: E402,F401  (the package's __init__ runs before transformers is imported)

# Tiny configs: 2 layers, hidden 32. GQA (2 key/value heads for 4 query heads) and rotary positions in Llama and Qwen2,
# learned positions and one fused QKV projection in GPT-2, a sliding window in Mistral, fused QKV and gate/up
# projections with GQA in Phi-3.
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                                           sliding_window=8)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)),
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(hidden_size=32, n_layer=2, n_head=4, vocab_size=128)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=128, bos_token_id=0,
                                                   eos_token_id=0)),
}
COMMON = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, vocab_size=128, max_position_embeddings=64)
VOCAB = 128
# The ranges the engine serves: batch, new tokens per step, cache length before the step.
RANGES = {"batch": (1, 4), "new": (1, 8), "past": (1, 32)}


def tiny_decoder(family: str) -> torch.nn.Module:
    """A ``transformers`` causal LM of ``family`` with random weights, in eval mode."""
    import transformers as T

    config_cls, model_cls, extra = FAMILIES[family]
    cfg = extra if family in ("gpt2", "bloom") else {**COMMON, **extra}
    torch.manual_seed(0)
    return getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval()


def cache_shape(model: torch.nn.Module, batch: int, length: int) -> tuple[int, int, int, int]:
    """[B, KV_HEADS, length, HEAD_DIM] of one layer's keys (or values)."""
    c = model.config
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return batch, heads, length, head_dim


class DecodeStep(torch.nn.Module):
    """One decode step over a ``DynamicCache`` built from the past keys/values passed in; forward takes
    ``input_ids, attention_mask, past_key_0, past_value_0, ...`` (named, so the engine's inputs are)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers

    def step(self, input_ids, attention_mask, *past):
        from transformers import DynamicCache

        cache = DynamicCache()  # full layers: a sliding-window model (Mistral) keeps the whole cache; its mask applies the window
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])


def _named(cls: type, layers: int) -> type:
    """A subclass of ``cls`` whose forward has one named parameter per input (torch.export names inputs after them)."""
    names = ["input_ids", "attention_mask"] + [f"past_{kv}_{i}" for i in range(layers) for kv in ("key", "value")]

    def forward(self, *args):
        return self.step(*args)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    forward.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in ["self", *names]])
    return type(cls.__name__, (cls,), {"forward": forward})


def decode_inputs(model: torch.nn.Module, batch: int = 2, new: int = 3, past: int = 5) -> tuple[torch.Tensor, ...]:
    """Example inputs of one step: sizes above 1 (torch.export specializes 0 and 1)."""
    ids = torch.randint(0, VOCAB, (batch, new))
    mask = torch.ones(batch, past + new, dtype=torch.int64)
    kv = [torch.randn(cache_shape(model, batch, past)) for _ in range(2 * model.config.num_hidden_layers)]
    return (ids, mask, *kv)


def export_decode_step(family: str = "llama", batch: int = 2, new: int = 3, past: int = 5):
    """The decode step of a tiny ``family`` decoder as an ExportedProgram, batch/new tokens/cache length dynamic."""
    from torch.export import Dim

    model = tiny_decoder(family)
    step = _named(DecodeStep, model.config.num_hidden_layers)(model).eval()
    b, t, p = (Dim(name, min=lo, max=hi) for name, (lo, hi) in RANGES.items())
    kv = {0: b, 2: p}
    shapes = ({0: b, 1: t}, {0: b, 1: Dim.AUTO}, *[kv] * (2 * model.config.num_hidden_layers))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(step, decode_inputs(model, batch, new, past), dynamic_shapes=shapes, strict=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="decode_step.pt2")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="llama")
    args = parser.parse_args(argv)
    torch.export.save(export_decode_step(args.family), args.out)
    print(f"wrote {args.out}: a {args.family} decode step (opmap build {args.out} -o step.engine)")


if __name__ == "__main__":
    main()
