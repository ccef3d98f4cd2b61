"""A zero pad before a convolution (HF's TF-style ``F.pad`` in MobileNets) is read through: its widths join the
convolution's padding and TensorRT drops the unused pad. Exactness of every variant (folded or not) is proven by the
strategy's examples (tests/test_conformance.py, tests/test_dynamic_conformance.py); this checks the fold happens where
it may and only there."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import opmap
from opmap.checking.costmodel import DeviceProfile, estimate


class PadConv(torch.nn.Module):
    def __init__(self, pad, value=0.0, mode="constant"):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.pad, self.value, self.mode = pad, value, mode

    def forward(self, x):
        kwargs = {"value": self.value} if self.mode == "constant" else {}
        return torch.relu(self.conv(F.pad(x, self.pad, mode=self.mode, **kwargs)))


def _layers(engine):
    net = engine._built.built.network
    return [net.get_layer(i) for i in range(net.num_layers)]


def _conv(engine):
    (conv,) = [l for l in _layers(engine) if l.type.name == "CONVOLUTION"]
    conv.__class__ = engine._built.built.trt.IConvolutionLayer
    return conv


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path}/c.db"


def test_a_zero_pad_joins_the_convolutions_padding_and_costs_nothing(db):
    x = torch.randn(2, 3, 17, 16)
    engine = opmap.build(PadConv((0, 1, 0, 1)).eval(), (x,), db=db)  # TF "same" for stride 2: pad right and bottom
    conv = _conv(engine)
    assert tuple(conv.pre_padding) == (0, 0) and tuple(conv.post_padding) == (1, 1)
    assert opmap.verify(engine).ok
    est = estimate(engine._built.built, {"x": x}, DeviceProfile.load())
    assert not any("SLICE" in label for _, label, _ in est.by_layer)  # the pad's Slice(FILL) reaches no output


@pytest.mark.parametrize("pad, value, mode", [((0, 1, 0, 1), 0.5, "constant"), ((1, -1, 0, 1), 0.0, "constant"),
                                              ((1, 1, 1, 1), 0.0, "reflect")])
def test_other_pads_stay_pads(db, pad, value, mode):
    x = torch.randn(2, 3, 17, 16)
    engine = opmap.build(PadConv(pad, value, mode).eval(), (x,), db=db)
    assert tuple(_conv(engine).pre_padding) == (0, 0) and tuple(_conv(engine).post_padding) == (0, 0)
    assert opmap.verify(engine).ok


def test_the_fold_reads_the_pads_input_in_the_nodes_precision(db):
    x = torch.randn(2, 3, 17, 16)
    engine = opmap.build(PadConv((0, 1, 0, 1)).eval(), (x,), precision="fp16", db=db)
    conv = _conv(engine)
    assert tuple(conv.post_padding) == (1, 1) and conv.get_input(0).dtype.name == "HALF"
    casts = [l for l in _layers(engine) if l.type.name == "CAST"]
    assert sum(1 for l in casts if l.get_input(0).name == "x") == 1  # one cast of the input, shared by pad and conv
    assert opmap.verify(engine).ok
