"""Test models built from code: transformers architectures from small configs with random
weights (no downloads), plus the bundled detector. Used by the census, the tests and bench/."""

from __future__ import annotations

import warnings
from typing import Callable

import torch

SEQ = 16
VOCAB = 256


def _lm(config_cls: str, model_cls: str, **cfg) -> Callable[[], tuple[torch.nn.Module, tuple]]:
    def build():
        import transformers as T

        config = getattr(T, config_cls)(**cfg)
        model = getattr(T, model_cls)(config).eval()
        return model, (torch.randint(0, VOCAB, (1, SEQ)),)

    return build


_DECODER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                vocab_size=VOCAB, max_position_embeddings=128, head_dim=16)
_ENCODER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=VOCAB,
                max_position_embeddings=128)


def _vision(config_cls: str, model_cls: str, **cfg):
    def build():
        import transformers as T

        model = getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval()
        return model, (torch.randn(1, 3, 32, 32),)

    return build


def _whisper():
    import transformers as T

    cfg = T.WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                          encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=VOCAB, num_mel_bins=16, max_source_positions=32)
    return T.WhisperForAudioClassification(cfg).eval(), (torch.randn(1, 16, 64),)


TRANSFORMERS: dict[str, Callable[[], tuple[torch.nn.Module, tuple]]] = {
    "bert": _lm("BertConfig", "BertModel", **_ENCODER),
    "roberta": _lm("RobertaConfig", "RobertaModel", **_ENCODER),
    "albert": _lm("AlbertConfig", "AlbertModel", **_ENCODER),
    "electra": _lm("ElectraConfig", "ElectraModel", **_ENCODER),
    "distilbert": _lm("DistilBertConfig", "DistilBertModel", dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=VOCAB,
                      max_position_embeddings=128),
    "gpt2": _lm("GPT2Config", "GPT2LMHeadModel", n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128,
                bos_token_id=0, eos_token_id=0),
    "llama": _lm("LlamaConfig", "LlamaForCausalLM", **_DECODER),
    "mistral": _lm("MistralConfig", "MistralForCausalLM", **_DECODER),
    "qwen2": _lm("Qwen2Config", "Qwen2ForCausalLM", **_DECODER),
    "gemma": _lm("GemmaConfig", "GemmaForCausalLM", **_DECODER),
    "phi": _lm("PhiConfig", "PhiForCausalLM", **{k: v for k, v in _DECODER.items() if k != "head_dim"}),
    "gpt_neox": _lm("GPTNeoXConfig", "GPTNeoXForCausalLM", **{k: v for k, v in _DECODER.items() if k not in ("head_dim", "num_key_value_heads")}),
    "opt": _lm("OPTConfig", "OPTForCausalLM", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
               vocab_size=VOCAB, max_position_embeddings=128, word_embed_proj_dim=64),
    "t5_encoder": _lm("T5Config", "T5EncoderModel", d_model=64, num_layers=2, num_heads=4, d_ff=128, vocab_size=VOCAB, d_kv=16),
    "vit": _vision("ViTConfig", "ViTModel", **_ENCODER, image_size=32, patch_size=8),
    "convnext": _vision("ConvNextConfig", "ConvNextModel", hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, image_size=32),
    "whisper_encoder": _whisper,
}


class TupleOutputs(torch.nn.Module):
    """Calls a transformers model with return_dict=False (and no KV cache): tuple outputs."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        kwargs = {"return_dict": False}
        if "use_cache" in getattr(self.model.forward, "__code__", type("c", (), {"co_varnames": ()})).co_varnames or hasattr(
            self.model.config, "use_cache"
        ):
            kwargs["use_cache"] = False
        return self.model(x, **kwargs)


def export_transformer(name: str):
    """torch.export of a zoo model (random weights, seeded)."""
    torch.manual_seed(0)
    model, args = TRANSFORMERS[name]()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(TupleOutputs(model), args, strict=False)
