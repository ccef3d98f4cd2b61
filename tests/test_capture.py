"""Capture: every accepted format, every refused one, and what the Graph keeps."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from opmap.loading.capture import InputSpec, capture, capture_callable
from opmap.errors import CaptureError
from tests.conftest import export_to
from tests.helpers import Selector, TwoLayer


def test_export_archive_keeps_schema_names_shapes_users(detector_pt2):
    c = capture(detector_pt2)
    g = c.graph
    assert c.kind == "export" and len(c.sha256) == 64
    conv = g["conv2d"]
    assert conv.op == "aten.conv2d.default"
    assert set(conv.args) >= {"input", "weight", "bias", "stride", "padding"}
    assert conv.meta("input").shape == (1, 3, 32, 32) and conv.meta("input").dtype == "float32"
    assert conv.users == ["batch_norm"]
    nz = g["nonzero"]
    assert nz.out.shape == ("u0", 3) and nz.out.dtype == "int64"
    assert g.symbols["u0"].data_dependent and g.symbols["u0"].lower == 0 and g.symbols["u0"].upper == 256
    assert g.is_output("nonzero") and "image" in g.inputs and any(k.startswith("p_") for k in g.params)


def test_pt_name_holding_an_export_archive(tmp_path):
    path = export_to(tmp_path / "model.pt", TwoLayer(), torch.randn(2, 4))
    assert capture(path).graph.ops() == {"aten.linear.default": 1, "aten.relu.default": 1}


def test_symbolic_dims_and_their_ranges(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=64)
    path = export_to(tmp_path / "dyn.pt2", TwoLayer(), torch.randn(2, 4), dynamic_shapes={"x": {0: batch}})
    g = capture(path).graph
    (sym,) = {d for d in g["linear"].out.shape if isinstance(d, str)}
    assert g.symbols[sym].lower == 1 and g.symbols[sym].upper == 64 and not g.symbols[sym].data_dependent


def test_torchscript_traced_infers_input_shapes(tmp_path):
    path = tmp_path / "traced.pt"
    torch.jit.trace(TwoLayer().eval(), torch.randn(2, 4)).save(str(path))
    with pytest.raises(CaptureError, match="TorchScript archive.*--trust-model"):
        capture(path)  # loading TorchScript runs its code: trusted files only
    c = capture(path, trust_model=True)
    assert c.kind == "torchscript"
    assert c.graph.ops() == {"aten.linear.default": 1, "aten.relu.default": 1}


def test_torchscript_scripted_needs_input_shape(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(TwoLayer().eval()).save(str(path))
    with pytest.raises(CaptureError, match="--input-shape for x"):
        capture(path, trust_model=True)
    g = capture(path, trust_model=True, input_shapes=[InputSpec.parse("x=3x4")]).graph
    # PyTorch's TorchScript converter exports the leading dim as dynamic (Dim.AUTO) where it can.
    assert g["linear"].out.shape[1] == 3 and g["linear"].meta("input").shape[1] == 4


def test_pickle_needs_the_flag_and_shapes(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(TwoLayer(), str(path))
    with pytest.raises(CaptureError, match="loading it runs code.*--unsafe-pickle"):
        capture(path)
    with pytest.raises(CaptureError, match="needs --input-shape"):
        capture(path, unsafe_pickle=True)
    with pytest.raises(CaptureError, match="names y but forward takes"):
        capture(path, unsafe_pickle=True, input_shapes=[InputSpec.parse("y=2x4")])
    c = capture(path, unsafe_pickle=True, input_shapes=[InputSpec.parse("x=2x4:float32")])
    assert c.kind == "pickle" and "aten.linear.default" in c.graph.ops()


def test_state_dict_is_recognised_and_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(TwoLayer().state_dict(), str(path))
    for flag in (False, True):
        with pytest.raises(CaptureError, match=r"state dict \(2 tensors\), not a model"):
            capture(path, unsafe_pickle=flag)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty file"),
        (b"\x00\x01garbage" * 100, "not a model file"),
        (b"print('hello')\n", "not a model file"),
    ],
)
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.pt2"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=match):
        capture(path)


def test_truncated_archive(tmp_path, detector_pt2):
    path = tmp_path / "truncated.pt2"
    data = detector_pt2.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CaptureError) as info:
        capture(path)
    assert "\n" not in str(info.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(CaptureError, match="no such file"):
        capture(tmp_path / "nope.pt2")
    with pytest.raises(CaptureError, match="is a directory"):
        capture(tmp_path)


def test_output_types_not_importable(tmp_path):
    """A model whose output is a class registered in a module that the loading process lacks (transformers' ModelOutput,
    a user's dataclass): it loads, the container read as a tuple of its fields, and nothing from the file is imported."""
    moddir = tmp_path / "mods"
    moddir.mkdir()
    (moddir / "custom_out.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        import torch
        import torch.utils._pytree as pytree

        @dataclass
        class Boxes:
            xy: torch.Tensor
            score: torch.Tensor

        pytree.register_dataclass(Boxes, serialized_type_name="custom_out.Boxes")

        class M(torch.nn.Module):
            def forward(self, x):
                return Boxes(x * 2, x.sum())
    """))
    path = tmp_path / "custom.pt2"
    script = f"""
import sys, torch
sys.path.insert(0, {str(moddir)!r})
import custom_out
ep = torch.export.export(custom_out.M(), (torch.randn(3),), strict=False)
torch.export.save(ep, {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "opmap.cli", "--db", str(tmp_path / "c.db"), "verify", str(path), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["compared"] == report["expected"] == 2
    assert "custom_out" not in proc.stderr


def test_input_spec_parsing():
    assert InputSpec.parse("image=1x3x224x224:float16") == InputSpec("image", (1, 3, 224, 224), "float16")
    for bad in ("image", "image=axb", "image=1x3:notadtype"):
        with pytest.raises(CaptureError):
            InputSpec.parse(bad)


def test_capture_callable_tuple_outputs():
    g = capture_callable(Selector(), torch.randn(4, 5)).graph
    assert len(g.outputs) == 3
    index_nodes = [n for n in g if n.op == "aten.index.Tensor"]
    assert index_nodes and all(isinstance(n.out.shape[0], str) for n in index_nodes)
