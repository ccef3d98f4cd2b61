"""Image models from a public model library (timm, random weights, no downloads): the architectures `bench/timm_zoo.py`
sweeps and `tests/test_timm.py` checks. timm needs torchvision, whose compiled ops do not load here: the package's
`__init__` declares the two schemas torchvision needs first (examples/torchvision_shim.py)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class TimmArch:
    family: str  # "CNN", "transformer", "hybrid" (convolutions and attention) or "MLP"
    size: int  # input height = width; reduced from the default where the model allows it
    kwargs: dict = field(default_factory=dict)  # timm.create_model arguments (img_size for models with fixed grids)


# 43 architectures, small variants at a reduced input size where the architecture allows (most take under 20 s to export
# twice, build twice and verify four points on a 2-core CPU; DenseNet, Swin, CaiT, XCiT, CrossViT up to ~50 s).
TIMM: dict[str, TimmArch] = {
    # CNNs
    "resnet18": TimmArch("CNN", 64),
    "resnet10t": TimmArch("CNN", 64),
    "efficientnet_b0": TimmArch("CNN", 64),
    "mobilenetv3_small_100": TimmArch("CNN", 64),
    "mobilenetv4_conv_small": TimmArch("CNN", 64),
    "convnext_atto": TimmArch("CNN", 64),
    "regnetx_002": TimmArch("CNN", 64),
    "densenet121": TimmArch("CNN", 64),
    "ghostnet_100": TimmArch("CNN", 64),
    "repvgg_a0": TimmArch("CNN", 64),
    "lcnet_050": TimmArch("CNN", 64),
    "rexnet_100": TimmArch("CNN", 64),
    "dla34": TimmArch("CNN", 64),
    "hgnetv2_b0": TimmArch("CNN", 64),
    "resnest14d": TimmArch("CNN", 64),
    "nf_regnet_b0": TimmArch("CNN", 64),  # normalizer-free: scaled weight standardization
    "inception_next_atto": TimmArch("CNN", 64),
    "starnet_s050": TimmArch("CNN", 64),
    # transformers
    "vit_tiny_patch16_224": TimmArch("transformer", 64, {"img_size": 64}),
    "deit_tiny_patch16_224": TimmArch("transformer", 64, {"img_size": 64}),
    "swin_tiny_patch4_window7_224": TimmArch("transformer", 112, {"img_size": 112}),
    "cait_xxs24_224": TimmArch("transformer", 64, {"img_size": 64}),
    "xcit_nano_12_p16_224": TimmArch("transformer", 64, {"img_size": 64}),
    "levit_128s": TimmArch("transformer", 224),
    "pvt_v2_b0": TimmArch("transformer", 64),
    "twins_svt_small": TimmArch("transformer", 64, {"img_size": 64}),
    "coat_lite_tiny": TimmArch("transformer", 64, {"img_size": 64}),
    "eva02_tiny_patch14_224": TimmArch("transformer", 56, {"img_size": 56}),
    "crossvit_tiny_240": TimmArch("transformer", 240),  # two patch sizes, cross attention
    "volo_d1_224": TimmArch("transformer", 64, {"img_size": 64}),  # outlook attention (unfold / fold)
    # hybrids and MLPs
    "poolformer_s12": TimmArch("hybrid", 64),
    "mobilevit_xxs": TimmArch("hybrid", 64),
    "mobilevitv2_050": TimmArch("hybrid", 64),
    "edgenext_xx_small": TimmArch("hybrid", 64),
    "efficientformer_l1": TimmArch("hybrid", 224),  # its last stage's attention bias is for a 7x7 grid
    "efficientformerv2_s0": TimmArch("hybrid", 64, {"img_size": 64}),
    "fastvit_t8": TimmArch("hybrid", 64),
    "tiny_vit_5m_224": TimmArch("hybrid", 224),  # its windows are sized for 224
    "coatnet_nano_rw_224": TimmArch("hybrid", 224),  # relative position bias sized for 224
    "efficientvit_b0": TimmArch("hybrid", 64),  # ReLU linear attention
    "mambaout_femto": TimmArch("hybrid", 64),  # gated convolutions
    "mixer_s16_224": TimmArch("MLP", 64, {"img_size": 64}),
    "convmixer_768_32": TimmArch("MLP", 64),
}

BATCH = (1, 4)  # the dynamic batch's range


def build_timm(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (random weights, seeded, ``eval()``) and one example input of batch 2."""
    arch = TIMM[name]
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **arch.kwargs).eval()
    return model, torch.randn(2, 3, arch.size, arch.size)


def export_timm(name: str, dynamic: bool) -> tuple[torch.export.ExportedProgram, str]:
    """torch.export of one architecture, static or with ``Dim('batch', min=1, max=4)``. Returns (program, note)."""
    model, x = build_timm(name)
    shapes = ({0: torch.export.Dim("batch", min=BATCH[0], max=BATCH[1])},) if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (x,), dynamic_shapes=shapes, strict=False), ""
