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

transformers' ``StaticCache`` (``--cache static``): ``StaticCacheStep`` gives the model's own StaticCache the cache
tensors passed in (``key_cache_i``/``value_cache_i [B, KV_HEADS, MAX_CACHE, D]``) and ``cache_position [T]``; the model
writes the new keys/values into them in place (``index_copy_``), so opmap makes each an engine input and an output of
the same name plus ``.updated`` (state in, state out); B and T are dynamic. transformers' own recipe
(``--cache recipe``: ``TorchExportableModuleWithStaticCache``, exported strict as ``convert_and_export_with_cache``
does) registers the cache as buffers: the engine takes and returns ``b_key_cache_i`` etc., shapes static. Exported
non-strict, that recipe's cache is lifted as constants, which PyTorch cannot functionalize: opmap refuses the writes
and says so.

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


def _named(cls: type, names: list[str]) -> type:
    """A subclass of ``cls`` whose forward has one named parameter per input (torch.export names inputs after them)."""

    def forward(self, *args):
        return self.step(*args)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    forward.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in ["self", *names]])
    return type(cls.__name__, (cls,), {"forward": forward})


def _cache_names(layers: int, pattern: str) -> list[str]:
    return [pattern.format(kv=kv, i=i) for i in range(layers) for kv in ("key", "value")]


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
    names = ["input_ids", "attention_mask", *_cache_names(model.config.num_hidden_layers, "past_{kv}_{i}")]
    step = _named(DecodeStep, names)(model).eval()
    b, t, p = (Dim(name, min=lo, max=hi) for name, (lo, hi) in RANGES.items())
    kv = {0: b, 2: p}
    shapes = ({0: b, 1: t}, {0: b, 1: Dim.AUTO}, *[kv] * (2 * model.config.num_hidden_layers))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(step, decode_inputs(model, batch, new, past), dynamic_shapes=shapes, strict=False)


class StaticCacheStep(torch.nn.Module):
    """One step over the model's own ``StaticCache`` whose layers hold the cache tensors passed in: forward takes
    ``input_ids, cache_position, key_cache_0, value_cache_0, ...`` ([B, KV_HEADS, MAX_CACHE, D] each) and returns the
    logits; the model writes the new keys/values into the cache tensors in place (``index_copy_`` at the step's
    positions), so the engine takes each and returns it updated (``key_cache_0.updated``, ...)."""

    def __init__(self, model: torch.nn.Module, max_cache_len: int) -> None:
        from transformers import StaticCache

        super().__init__()
        self.model = model
        self.cache = StaticCache(max_cache_len=max_cache_len, config=model.config)

    def step(self, input_ids, cache_position, *caches):
        for i, layer in enumerate(self.cache.layers):  # early_initialization's work, with the tensors passed in
            keys, values = caches[2 * i], caches[2 * i + 1]
            layer.device, layer.dtype = keys.device, keys.dtype
            layer.batch_size, layer.num_heads, _, layer.k_head_dim = keys.shape
            layer.v_head_dim = values.shape[-1]
            layer.keys, layer.values, layer.is_initialized = keys, values, True
            layer.cumulative_length = cache_position[0].clone()  # where this step writes (as transformers' recipe sets it)
        return self.model(input_ids=input_ids, attention_mask=None, cache=self.cache, use_cache=True).logits


MAX_CACHE = 32  # the static cache's length: a step writes positions cache_position[0] .. + T - 1, all below it


def export_static_cache_step(family: str = "llama", batch: int = 2, new: int = 3, start: int = 5):
    """A decode step over transformers' ``StaticCache`` with the cache tensors as inputs written in place (state in,
    state out), batch and new tokens dynamic; any export mode works (the tensors are inputs, not held by the cache)."""
    from torch.export import Dim

    model = tiny_decoder(family)
    layers = model.config.num_hidden_layers
    names = ["input_ids", "cache_position", *_cache_names(layers, "{kv}_cache_{i}")]
    step = _named(StaticCacheStep, names)(model, MAX_CACHE).eval()
    b, t = Dim("batch", min=RANGES["batch"][0], max=RANGES["batch"][1]), Dim("new", min=RANGES["new"][0], max=RANGES["new"][1])
    inputs = (torch.randint(0, VOCAB, (batch, new)), torch.arange(start, start + new),
              *[torch.randn(cache_shape(model, batch, MAX_CACHE)) for _ in range(2 * layers)])
    shapes = ({0: b, 1: t}, {0: t}, *[{0: b}] * (2 * layers))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(step, inputs, dynamic_shapes=shapes, strict=False)


def export_transformers_static_cache(family: str = "llama", batch: int = 1, new: int = 2):
    """transformers' own recipe (``TorchExportableModuleWithStaticCache``, as ``convert_and_export_with_cache`` calls
    it): the cache tensors are the wrapper's registered buffers, written in place; strict export (the recipe's default)
    traces them as buffers, so the engine takes and returns them (``b_key_cache_0`` / ``b_key_cache_0.updated``).
    Shapes are static (the buffers fix the batch)."""
    from transformers.integrations.executorch import TorchExportableModuleWithStaticCache

    model = tiny_decoder(family)
    model.generation_config.cache_implementation = "static"
    wrapped = TorchExportableModuleWithStaticCache(model, batch_size=batch, max_cache_len=MAX_CACHE)
    kwargs = {"input_ids": torch.randint(0, VOCAB, (batch, new)), "cache_position": torch.arange(4, 4 + new)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(wrapped, (), kwargs=kwargs, strict=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="decode_step.pt2")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="llama")
    parser.add_argument("--cache", choices=("dynamic", "static", "recipe"), default="dynamic",
                        help="DynamicCache from past keys/values (default), StaticCache over cache inputs, transformers' recipe")
    args = parser.parse_args(argv)
    export = {"dynamic": export_decode_step, "static": export_static_cache_step, "recipe": export_transformers_static_cache}
    torch.export.save(export[args.cache](args.family), args.out)
    print(f"wrote {args.out}: a {args.family} decode step, {args.cache} cache (opmap build {args.out} -o step.engine)")


if __name__ == "__main__":
    main()
