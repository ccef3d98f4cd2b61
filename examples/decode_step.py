"""A served decoder's decode step, exported for opmap: ``python examples/decode_step.py [OUT.pt2] [--family llama]``.

One call of the step takes the new tokens, the attention mask over past + new positions and every layer's past keys
and values as plain tensors, and returns the logits and every layer's updated keys and values (the past with the new
positions appended): the server keeps the cache between calls and feeds the returned keys/values to the next one.
The batch ``B``, the new tokens ``T`` and the cache length ``P`` are dynamic; the mask's length has a Dim of its own
(torch.export refuses arithmetic over two named dims) that the wrapper ties to ``P + T`` (``torch._check``), so the
export states the relation and every profile point keeps it.

Engine inputs:  input_ids [B, T] int64, attention_mask [B, P+T] int64, past_key_0, past_value_0, ... [B, KV_HEADS, P, D]
Engine outputs: output0 the logits [B, T, VOCAB]; output1, output2, ... each layer's keys then values
                [B, KV_HEADS, P+T, D], in layer order

transformers' ``StaticCache`` (``--cache static``): ``StaticCacheStep`` gives the model's own StaticCache the cache
tensors passed in (``key_cache_i``/``value_cache_i [B, KV_HEADS, MAX_CACHE, D]``) and ``cache_position [T]``; the model
writes the new keys/values into them in place (``index_copy_``), so opmap makes each an engine input and an output of
the same name plus ``.updated`` (state in, state out); B and T are dynamic. transformers' own recipe
(``--cache recipe``: ``TorchExportableModuleWithStaticCache``, exported strict as ``convert_and_export_with_cache``
does) registers the cache as buffers: the engine takes and returns ``b_key_cache_i`` etc., shapes static. Exported
non-strict, that recipe's cache is lifted as constants, which PyTorch cannot functionalize: opmap refuses the writes
and says so.

An encoder-decoder's decoder step (``--family bart|t5``, ``Seq2SeqStep``): ``decoder_input_ids [B, T]``, the encoder's
padding mask ``attention_mask [B, S]`` and per layer ``past_key_i``/``past_value_i [B, HEADS, P, D]`` (self-attention)
then ``cross_key_i``/``cross_value_i [B, HEADS, S, D]`` (the encoder output projected once per request, held in the
``EncoderDecoderCache``'s cross-attention half so the model reads no encoder output); the engine returns the logits
and every layer's updated self-attention keys then values. B, T, P and the encoder length S are dynamic.

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
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=0,
                                                   eos_token_id=1)),
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(hidden_size=32, n_layer=2, n_head=4, vocab_size=128)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=128, bos_token_id=0,
                                                   eos_token_id=0)),
    # the zoo's other decoder families (bench/build_zoo.py builds their steps; the tests above cover one of each kind)
    "opt": ("OPTConfig", "OPTForCausalLM", dict(num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8)),
    "phi": ("PhiConfig", "PhiForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(num_attention_heads=4)),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2)),
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(num_attention_heads=4, alibi=True, new_decoder_architecture=False,
                                                       multi_query=True)),
    "mpt": ("MptConfig", "MptForCausalLM", dict(d_model=32, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=64, vocab_size=128)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                                          num_local_experts=4, num_experts_per_tok=2)),
}
OWN_CONFIG = {"gpt2", "bloom", "mpt"}  # configs that name their sizes their own way
COMMON = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, vocab_size=128, max_position_embeddings=64)
VOCAB = 128
# The ranges the engine serves: batch, new tokens per step, cache length before the step.
RANGES = {"batch": (1, 4), "new": (1, 8), "past": (1, 32)}


def tiny_decoder(family: str) -> torch.nn.Module:
    """A ``transformers`` causal LM of ``family`` with random weights, in eval mode."""
    import transformers as T

    config_cls, model_cls, extra = FAMILIES[family]
    cfg = extra if family in OWN_CONFIG else {**COMMON, **extra}
    torch.manual_seed(0)
    return getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval()


def cache_shape(model: torch.nn.Module, batch: int, length: int) -> tuple[int, int, int, int]:
    """[B, KV_HEADS, length, HEAD_DIM] of one layer's keys (or values)."""
    c = model.config
    heads = getattr(c, "num_key_value_heads", None) or (1 if getattr(c, "multi_query", False) else c.num_attention_heads)
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

        # the mask spans past and new positions: said here, torch.export makes its length P + T (else a free dim)
        torch._check(attention_mask.shape[1] == past[0].shape[2] + input_ids.shape[1])
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
    total = Dim("total", min=RANGES["past"][0] + RANGES["new"][0], max=RANGES["past"][1] + RANGES["new"][1])
    kv = {0: b, 2: p}
    shapes = ({0: b, 1: t}, {0: b, 1: total}, *[kv] * (2 * model.config.num_hidden_layers))
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
        from transformers.cache_utils import StaticLayer

        super().__init__()
        self.model = model
        self.cache = StaticCache(max_cache_len=max_cache_len, config=model.config)
        for i, layer in enumerate(self.cache.layers):  # a sliding layer's roll past its window branches on the data:
            if layer.is_sliding:  # a full layer instead, as transformers' recipe does (the mask still applies the window)
                self.cache.layers[i] = StaticLayer(max_cache_len)

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


# Encoder-decoders: one decoder layer stack of 2 layers, 4 heads of 8.
SEQ2SEQ = {
    "bart": ("BartConfig", "BartForConditionalGeneration",
             dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=1,
                  bos_token_id=0, eos_token_id=2, decoder_start_token_id=0)),
    "t5": ("T5Config", "T5ForConditionalGeneration",
           dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, vocab_size=VOCAB,
                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)),
}
ENCODED = (2, 16)  # the encoder's output length S the engine serves


class Seq2SeqStep(torch.nn.Module):
    """One decoder step of an encoder-decoder: forward takes ``decoder_input_ids [B, T]``, the encoder's padding mask
    ``attention_mask [B, S]``, then per layer the self-attention past ``past_key_i``/``past_value_i [B, HEADS, P, D]``
    and the cross-attention keys/values ``cross_key_i``/``cross_value_i [B, HEADS, S, D]`` (the encoder output
    projected once per request); returns the logits and every layer's updated self-attention keys then values
    ``[B, HEADS, P+T, D]`` (the cross keys/values do not change)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layers = _decoder_layers(model.config)

    def step(self, decoder_input_ids, attention_mask, *kv):
        from transformers import DynamicCache, EncoderDecoderCache

        own, cross = DynamicCache(), DynamicCache()
        for i in range(self.layers):
            own.update(kv[4 * i], kv[4 * i + 1], i)
            cross.update(kv[4 * i + 2], kv[4 * i + 3], i)
        cache = EncoderDecoderCache(own, cross)  # cross layers hold keys: the model reuses them and reads no encoder output
        unread = kv[2].new_zeros(kv[2].shape[0], kv[2].shape[2], self.model.config.d_model)  # stands for the encoder output
        out = self.model(decoder_input_ids=decoder_input_ids, encoder_outputs=(unread,), attention_mask=attention_mask,
                         cache=cache, use_cache=True)
        layers = out.past_key_values.self_attention_cache.layers
        return (out.logits, *[t for layer in layers for t in (layer.keys, layer.values)])


def _decoder_layers(config) -> int:
    return config.decoder_layers if hasattr(config, "decoder_layers") else config.num_decoder_layers


def tiny_seq2seq(family: str) -> torch.nn.Module:
    import transformers as T

    config_cls, model_cls, cfg = SEQ2SEQ[family]
    torch.manual_seed(0)
    return getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval()


def export_seq2seq_step(family: str = "bart", batch: int = 2, new: int = 3, past: int = 5, encoded: int = 6):
    """The decoder step of a tiny ``family`` encoder-decoder, batch/new tokens/cache length/encoder length dynamic."""
    from torch.export import Dim

    model = tiny_seq2seq(family)
    layers, c = _decoder_layers(model.config), model.config
    names = ["decoder_input_ids", "attention_mask", *[f"{kind}_{kv}_{i}" for i in range(layers) for kind in ("past", "cross")
                                                      for kv in ("key", "value")]]
    step = _named(Seq2SeqStep, names)(model).eval()
    heads = c.decoder_attention_heads if hasattr(c, "decoder_attention_heads") else c.num_heads
    head_dim = getattr(c, "d_kv", c.d_model // heads)
    b, t, p = (Dim(name, min=lo, max=hi) for name, (lo, hi) in RANGES.items())
    s = Dim("encoded", min=ENCODED[0], max=ENCODED[1])
    inputs = (torch.randint(0, VOCAB, (batch, new)), torch.ones(batch, encoded, dtype=torch.int64))
    for _ in range(layers):
        inputs += tuple(torch.randn(batch, heads, n, head_dim) for n in (past, past, encoded, encoded))
    shapes = ({0: b, 1: t}, {0: b, 1: s}, *[{0: b, 2: p}, {0: b, 2: p}, {0: b, 2: s}, {0: b, 2: s}] * layers)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(step, inputs, dynamic_shapes=shapes, strict=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="decode_step.pt2")
    parser.add_argument("--family", choices=sorted(FAMILIES) + sorted(SEQ2SEQ), default="llama",
                        help="a decoder, or an encoder-decoder (bart, t5: its decoder step)")
    parser.add_argument("--cache", choices=("dynamic", "static", "recipe"), default="dynamic",
                        help="DynamicCache from past keys/values (default), StaticCache over cache inputs, transformers' recipe")
    args = parser.parse_args(argv)
    export = {"dynamic": export_decode_step, "static": export_static_cache_step, "recipe": export_transformers_static_cache}
    if args.family in SEQ2SEQ and args.cache != "dynamic":
        parser.error("--cache static/recipe: decoder-only families")
    torch.export.save((export_seq2seq_step if args.family in SEQ2SEQ else export[args.cache])(args.family), args.out)
    print(f"wrote {args.out}: a {args.family} decode step, {args.cache} cache (opmap build {args.out} -o step.engine)")


if __name__ == "__main__":
    main()
