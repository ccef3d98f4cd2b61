"""Test models built from code: transformers architectures from small configs with random
weights (no downloads), plus the bundled detector. Used by the census, the tests and bench/."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
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


# -- the architecture zoo: many families, each exported the way users export ----------------------------------------
# Every entry builds (model, example inputs by name, dynamic dims by name). The dims are named: "batch", "seq" (text),
# "dec_seq" (decoder of an encoder-decoder), "height"/"width" (images), "samples" (raw audio).
RANGES = {"batch": (1, 4), "seq": (2, 32), "dec_seq": (2, 16), "height": (32, 64), "width": (32, 64), "samples": (400, 1600)}
IMAGE = 32


@dataclass(frozen=True)
class Arch:
    family: str
    build: Callable[[], tuple[torch.nn.Module, dict[str, torch.Tensor]]]
    dims: dict[str, dict[int, str]]  # input name -> {axis: dim name}
    static: str = ""  # which dims stay static, and why (torch.export's refusal, seen once and written down)


def _ids(batch: int = 2, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq))


def _text(config_cls: str, model_cls: str, family: str, mask: bool = True, static: str = "", **cfg) -> Arch:
    def build():
        import transformers as T

        model = getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval()
        inputs = {"input_ids": _ids()}
        if mask:
            inputs["attention_mask"] = torch.ones(2, SEQ, dtype=torch.int64)
        return model, inputs

    text = {0: "batch"} if static else {0: "batch", 1: "seq"}
    return Arch(family, build, {"input_ids": text, **({"attention_mask": text} if mask else {})}, static)


def _seq2seq(config_cls: str, model_cls: str, family: str = "encoder-decoder", **cfg) -> Arch:
    def build():
        import transformers as T

        model = getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval()
        return model, {"input_ids": _ids(), "attention_mask": torch.ones(2, SEQ, dtype=torch.int64), "decoder_input_ids": _ids(seq=8)}

    text = {0: "batch", 1: "seq"}
    return Arch(family, build, {"input_ids": text, "attention_mask": text, "decoder_input_ids": {0: "batch", 1: "dec_seq"}})


def _image(config_cls: str, model_cls: str, family: str, static: str = "", size: int = IMAGE, **cfg) -> Arch:
    """Height and width dynamic unless ``static`` says why they are not."""

    def build():
        import transformers as T

        model = getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval()
        return model, {"pixel_values": torch.randn(2, 3, size, size)}

    return Arch(family, build, {"pixel_values": {0: "batch", **({} if static else {2: "height", 3: "width"})}}, static)


def _nested(config_cls: str, model_cls: str, family: str, inputs: Callable[[], dict[str, torch.Tensor]],
            dims: dict[str, dict[int, str]], **cfg) -> Arch:
    """A model whose config nests sub-configs given as dicts (multimodal, detection backbones)."""

    def build():
        import transformers as T

        return getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval(), inputs()

    return Arch(family, build, dims)


def _audio(config_cls: str, model_cls: str, **cfg) -> Arch:
    def build():
        import transformers as T

        return getattr(T, model_cls)(getattr(T, config_cls)(**cfg)).eval(), {"input_values": torch.randn(2, 800)}

    return Arch("speech", build, {"input_values": {0: "batch", 1: "samples"}})


def _whisper_arch() -> Arch:
    def build():
        return _whisper()[0], {"input_features": torch.randn(2, 16, 64)}

    return Arch("speech", build, {"input_features": {0: "batch"}}, "frames: Whisper checks them against its positions")


_ROT = {k: v for k, v in _DECODER.items() if k != "head_dim"}
_NOKV = {k: v for k, v in _ROT.items() if k != "num_key_value_heads"}
_S2S = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=VOCAB, max_position_embeddings=128,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0)
_VIT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=IMAGE, patch_size=8)
_SPEECH = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32, 32),
               conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
_CLIP_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=VOCAB,
                  max_position_embeddings=64, pad_token_id=1, bos_token_id=0, eos_token_id=2)
_CLIP_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=IMAGE, patch_size=8)


def _multimodal_inputs():
    return {"input_ids": _ids(), "pixel_values": torch.randn(2, 3, IMAGE, IMAGE)}


def _detection_inputs():
    return {"pixel_values": torch.randn(2, 3, 64, 64)}


_FIXED = "image size: position embeddings of one grid size"
_REFUSED = "Constraints violated"
_SEG = f"image size: torch.export refuses ({_REFUSED}: overlapping patch embeddings)"
_MM_DIMS = {"input_ids": {0: "batch", 1: "seq"}, "pixel_values": {0: "batch"}}
_RESNET = dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")

ZOO: dict[str, Arch] = {
    # text encoders
    "bert": _text("BertConfig", "BertModel", "encoder", **_ENCODER),
    "roberta": _text("RobertaConfig", "RobertaModel", "encoder", **_ENCODER),
    "albert": _text("AlbertConfig", "AlbertModel", "encoder", **_ENCODER),
    "electra": _text("ElectraConfig", "ElectraModel", "encoder", **_ENCODER),
    "distilbert": _text("DistilBertConfig", "DistilBertModel", "encoder", dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                        vocab_size=VOCAB, max_position_embeddings=128),
    "deberta_v2": _text("DebertaV2Config", "DebertaV2Model", "encoder", **_ENCODER),
    "roformer": _text("RoFormerConfig", "RoFormerModel", "encoder (rotary)", **_ENCODER),
    "t5_encoder": _text("T5Config", "T5EncoderModel", "encoder (relative)", d_model=64, num_layers=2, num_heads=4, d_ff=128,
                        vocab_size=VOCAB, d_kv=16),
    # decoders: learned, rotary and ALiBi positions
    "gpt2": _text("GPT2Config", "GPT2LMHeadModel", "decoder", n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128,
                  bos_token_id=0, eos_token_id=0),
    "opt": _text("OPTConfig", "OPTForCausalLM", "decoder", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                 vocab_size=VOCAB, max_position_embeddings=128, word_embed_proj_dim=64),
    "llama": _text("LlamaConfig", "LlamaForCausalLM", "decoder (rotary)", **_DECODER),
    "mistral": _text("MistralConfig", "MistralForCausalLM", "decoder (rotary)", **_DECODER),
    "qwen2": _text("Qwen2Config", "Qwen2ForCausalLM", "decoder (rotary)", **_DECODER),
    "qwen3": _text("Qwen3Config", "Qwen3ForCausalLM", "decoder (rotary)", **_DECODER),
    "gemma": _text("GemmaConfig", "GemmaForCausalLM", "decoder (rotary)", **_DECODER),
    "phi": _text("PhiConfig", "PhiForCausalLM", "decoder (rotary)", **_ROT),
    "gpt_neox": _text("GPTNeoXConfig", "GPTNeoXForCausalLM", "decoder (rotary)", **_NOKV),
    "stablelm": _text("StableLmConfig", "StableLmForCausalLM", "decoder (rotary)", **_ROT),
    "bloom": _text("BloomConfig", "BloomForCausalLM", "decoder (ALiBi)", hidden_size=64, n_layer=2, n_head=4, vocab_size=VOCAB),
    "falcon_alibi": _text("FalconConfig", "FalconForCausalLM", "decoder (ALiBi)", hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, vocab_size=VOCAB, alibi=True, new_decoder_architecture=False, multi_query=True),
    "mpt": _text("MptConfig", "MptForCausalLM", "decoder (ALiBi)", d_model=64, n_heads=4, n_layers=2, expansion_ratio=2,
                 max_seq_len=128, vocab_size=VOCAB),
    # encoder-decoders (decoder inputs given)
    "t5": _seq2seq("T5Config", "T5Model", d_model=64, num_layers=1, num_decoder_layers=1, num_heads=4, d_ff=128, vocab_size=VOCAB,
                   d_kv=16, decoder_start_token_id=0),
    "bart": _seq2seq("BartConfig", "BartModel", **_S2S),
    "marian": _seq2seq("MarianConfig", "MarianMTModel", **_S2S),
    "pegasus": _seq2seq("PegasusConfig", "PegasusModel", **_S2S),
    # mixture of experts
    "mixtral": _text("MixtralConfig", "MixtralForCausalLM", "mixture-of-experts", num_local_experts=4, num_experts_per_tok=2,
                     **_DECODER),
    "qwen2_moe": _text("Qwen2MoeConfig", "Qwen2MoeForCausalLM", "mixture-of-experts", num_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=64, shared_expert_intermediate_size=64, **_ROT),
    "switch": _seq2seq("SwitchTransformersConfig", "SwitchTransformersModel", "mixture-of-experts (encoder-decoder)", d_model=64,
                       d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_sparse_encoder_layers=1,
                       num_sparse_decoder_layers=1, num_heads=4, num_experts=4, expert_capacity=8, vocab_size=VOCAB,
                       decoder_start_token_id=0),
    # state-space and recurrent
    "mamba": _text("MambaConfig", "MambaForCausalLM", "state-space", mask=False, static=f"seq: torch.export refuses ({_REFUSED}: the conv cache slice)", hidden_size=64, state_size=8, num_hidden_layers=2,
                   vocab_size=VOCAB, use_mambapy=False),
    "rwkv": _text("RwkvConfig", "RwkvForCausalLM", "recurrent", mask=False, static=f"seq: torch.export refuses ({_REFUSED})", hidden_size=64, num_hidden_layers=2,
                  attention_hidden_size=64, intermediate_size=128, vocab_size=VOCAB, context_length=128),
    "recurrent_gemma": _text("RecurrentGemmaConfig", "RecurrentGemmaForCausalLM", "recurrent", mask=False, static=f"seq: torch.export refuses ({_REFUSED})", num_hidden_layers=3,
                             vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=1,
                             lru_width=64, attention_window_size=16, conv1d_width=4),
    # vision CNNs
    "resnet": _image("ResNetConfig", "ResNetModel", "vision CNN", **_RESNET),
    "convnext": _image("ConvNextConfig", "ConvNextModel", "vision CNN", hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
    "efficientnet": _image("EfficientNetConfig", "EfficientNetModel", "vision CNN", width_coefficient=0.25, depth_coefficient=0.25,
                           hidden_dim=320, image_size=IMAGE,
                           static=f"image size: torch.export refuses ({_REFUSED}: TF-style padding)"),
    "mobilenet_v2": _image("MobileNetV2Config", "MobileNetV2Model", "vision CNN", depth_multiplier=0.25, image_size=IMAGE,
                           static=f"image size: torch.export refuses ({_REFUSED}: TF-style padding)"),
    "mobilenet_v1": _image("MobileNetV1Config", "MobileNetV1Model", "vision CNN", depth_multiplier=0.25, image_size=IMAGE,
                           static=f"image size: torch.export refuses ({_REFUSED}: TF-style padding)"),
    "regnet": _image("RegNetConfig", "RegNetModel", "vision CNN", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                     groups_width=8),
    # vision transformers: plain, distilled, shifted windows, hierarchical
    "vit": _image("ViTConfig", "ViTModel", "vision transformer", static=_FIXED, **_VIT),
    "deit": _image("DeiTConfig", "DeiTModel", "vision transformer", static=_FIXED, **_VIT),
    "beit": _image("BeitConfig", "BeitModel", "vision transformer", static=_FIXED, **_VIT),
    "swin": _image("SwinConfig", "SwinModel", "vision transformer (shifted windows)",
                   static=f"image size: torch.export refuses ({_REFUSED}: window padding)", image_size=IMAGE, patch_size=2, embed_dim=16,
                   depths=[2, 2], num_heads=[2, 4], window_size=4),
    "pvt": _image("PvtConfig", "PvtModel", "vision transformer (hierarchical)", static=_FIXED, image_size=IMAGE,
                  hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4]),
    "segformer": _image("SegformerConfig", "SegformerModel", "vision transformer (hierarchical)", static=_SEG, hidden_sizes=[16, 32, 48, 64],
                        depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=64),
    # detection and segmentation heads
    "segformer_seg": _image("SegformerConfig", "SegformerForSemanticSegmentation", "segmentation", static=_SEG, hidden_sizes=[16, 32, 48, 64],
                            depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=64, num_labels=5),
    "mobilenet_v2_seg": _image("MobileNetV2Config", "MobileNetV2ForSemanticSegmentation", "segmentation", depth_multiplier=0.25,
                               image_size=IMAGE, num_labels=5, static=f"image size: torch.export refuses ({_REFUSED}: TF-style padding)"),
    "yolos": _image("YolosConfig", "YolosForObjectDetection", "detection", static=_FIXED, hidden_size=64, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=128, image_size=[IMAGE, IMAGE], patch_size=8, num_detection_tokens=5),
    "detr": _nested("DetrConfig", "DetrForObjectDetection", "detection", _detection_inputs, {"pixel_values": {0: "batch"}},
                    backbone_config={"model_type": "resnet", **_RESNET, "out_features": ["stage2"]}, use_timm_backbone=False,
                    use_pretrained_backbone=False, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_queries=8, num_labels=5),
    # speech encoders with convolutional front ends
    "whisper_encoder": _whisper_arch(),
    "wav2vec2": _audio("Wav2Vec2Config", "Wav2Vec2Model", **_SPEECH),
    "hubert": _audio("HubertConfig", "HubertModel", **_SPEECH),
    "wavlm": _audio("WavLMConfig", "WavLMModel", **_SPEECH),
    # multimodal
    "clip": _nested("CLIPConfig", "CLIPModel", "multimodal", _multimodal_inputs, _MM_DIMS, text_config=_CLIP_TEXT,
                    vision_config=_CLIP_VISION, projection_dim=32),
    "siglip": _nested("SiglipConfig", "SiglipModel", "multimodal", _multimodal_inputs, _MM_DIMS, text_config=_CLIP_TEXT,
                      vision_config=_CLIP_VISION),
}


def _calling(names: list[str], use_cache: bool) -> type[torch.nn.Module]:
    """A wrapper class whose ``forward`` takes exactly ``names`` (positionally or by keyword, as torch.export binds them)
    and calls the model by keyword with tuple outputs (``return_dict=False``, no KV cache)."""
    import inspect

    def forward(self, *args, **kwargs):
        kwargs.update(zip(names, args))
        extra = {"use_cache": False} if use_cache else {}
        return self.model(**kwargs, return_dict=False, **extra)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    forward.__signature__ = inspect.Signature([inspect.Parameter(n, kind) for n in ["self", *names]])

    def init(self, model):
        torch.nn.Module.__init__(self)
        self.model = model

    return type("Calling", (torch.nn.Module,), {"__init__": init, "forward": forward})


def _dims(arch: Arch, keep: set[str] | None) -> dict[str, dict[int, torch.export.Dim]]:
    made: dict[str, torch.export.Dim] = {}
    out = {}
    for name, axes in arch.dims.items():
        out[name] = {}
        for axis, dim in axes.items():
            if keep is None or dim in keep:
                lo, hi = RANGES[dim]
                out[name][axis] = made.setdefault(dim, torch.export.Dim(dim, min=lo, max=hi))
    return out


def export_arch(name: str, keyword: bool = True, dynamic: bool = False):
    """torch.export of a zoo architecture the way users export it: by keyword (``export(m, (), kwargs=...)``) or
    positionally, static or with its named dims dynamic. Returns (program, note); where torch.export refuses some
    dynamic dims, only the batch stays dynamic and the note says why (the first line of the refusal)."""
    from opmap.errors import first_line

    arch = ZOO[name]
    torch.manual_seed(0)
    model, inputs = arch.build()
    names = list(inputs)
    wrapped = _calling(names, hasattr(model.config, "use_cache"))(model).eval()
    attempts = [None, {"batch"}] if dynamic else []
    note = ""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for keep in attempts:
            shapes = _dims(arch, keep)
            try:
                if keyword:
                    ep = torch.export.export(wrapped, (), kwargs=inputs, dynamic_shapes=shapes, strict=False)
                else:
                    ep = torch.export.export(wrapped, tuple(inputs.values()), dynamic_shapes=tuple(shapes[n] for n in names),
                                             strict=False)
                return ep, note
            except Exception as exc:  # torch.export refused these dims: say which and why, try fewer
                dims = sorted({d for axes in arch.dims.values() for d in axes.values() if keep is None or d in keep})
                note += f"{'+'.join(dims)} refused by torch.export: {first_line(exc)[:160]}; "
        if dynamic:
            raise RuntimeError(note.rstrip("; "))
        if keyword:
            return torch.export.export(wrapped, (), kwargs=inputs, strict=False), note
        return torch.export.export(wrapped, tuple(inputs.values()), strict=False), note
