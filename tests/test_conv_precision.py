"""Convolutions (and 3-D average pooling) at reduced precision: at --precision bf16 a convolution computes in bfloat16 (its constant kernel and
bias go in as bfloat16 constants: numpy has none), a kernel that is a graph tensor is cast to the input's type (the two
must match), and a deconvolution stays in fp32 (TensorRT-RTX cannot type a bfloat16 one). Each is a real build checked
against PyTorch by the reference interpreter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import opmap


class Conv(torch.nn.Module):
    def __init__(self, transposed=False):
        super().__init__()
        self.conv = (torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d)(3, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class GraphKernel(torch.nn.Module):  # the kernel computed in the graph (weight normalisation, hypernetworks)
    def forward(self, x, w):
        return F.conv2d(x, w * 0.5, padding=1)


def _layer(engine, kind):
    net = engine._built.built.network
    (layer,) = [net.get_layer(i) for i in range(net.num_layers) if net.get_layer(i).type.name == kind]
    return layer


@pytest.mark.parametrize("model, inputs, kind, computes", [
    (Conv(), (torch.randn(2, 3, 12, 10),), "CONVOLUTION", "BF16"),
    (GraphKernel(), (torch.randn(2, 3, 12, 10), torch.randn(4, 3, 3, 3)), "CONVOLUTION", "BF16"),
    (Conv(transposed=True), (torch.randn(2, 3, 12, 10),), "DECONVOLUTION", "FLOAT"),
])
def test_bf16_convolutions_build_and_agree(tmp_path, model, inputs, kind, computes):
    engine = opmap.build(model.eval(), inputs, precision="bf16", tolerance=1e-2, db=f"sqlite:///{tmp_path}/c.db")
    layer = _layer(engine, kind)
    assert layer.get_input(0).dtype.name == computes
    if layer.num_inputs > 1 and layer.get_input(1) is not None:  # a kernel given as a tensor has the input's type
        assert layer.get_input(1).dtype.name == computes
    (node,) = [n for n in engine.plan.nodes if "conv" in n.op]
    assert node.precision == "bf16", node  # placed in bf16 (a deconvolution computes in fp32 between its casts)
    assert opmap.verify(engine).ok



class AvgPool3d(torch.nn.Module):
    def forward(self, x):
        return F.avg_pool3d(x, 2, padding=1, count_include_pad=False)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_3d_average_pooling_in_half_is_checked(tmp_path, precision):
    # PyTorch's CPU avg_pool3d has no half kernel: the interpreter sums windows in float32 and rounds once, so the
    # build's check runs (it failed with NotImplementedError and no engine was written)
    engine = opmap.build(AvgPool3d(), (torch.randn(1, 2, 4, 6, 5),), precision=precision, tolerance=1e-2,
                         db=f"sqlite:///{tmp_path}/c.db")
    (node,) = engine.plan.nodes
    assert node.precision == precision, node
    assert opmap.verify(engine).ok
