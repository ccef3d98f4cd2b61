"""Decode steps as served (issue 19): lifted constant tensors (empty ones included), the exit code of a bug inside an
emitter, and the decode step of tiny transformers decoders (examples/decode_step.py) built and verified at the
profile's min, an interior point and its max, with batch, new tokens and cache length dynamic."""

import json
import textwrap

import pytest
import torch

import opmap
from opmap.errors import BuildError
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "custom_op"


class KeysSoFar(torch.nn.Module):
    """What a cache layer does before it holds anything: an empty ``torch.tensor([])`` (a lifted constant, copied by
    ``aten.lift_fresh_copy``) concatenated with the new keys; plus a non-empty lifted constant."""

    def forward(self, x):
        keys = torch.cat([torch.tensor([]), x.flatten()])
        return keys * torch.tensor([2.0]) + torch.tensor(1.0)


def test_lifted_constants_and_an_empty_one_become_network_constants(tmp_path):
    program = torch.export.export(KeysSoFar(), (torch.randn(3, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8)},), strict=False)
    kinds = {spec.kind.name for spec in program.graph_signature.input_specs}
    assert "CONSTANT_TENSOR" in kinds and any(n.target == torch.ops.aten.lift_fresh_copy.default for n in program.graph.nodes)
    report = opmap.verify(program, db=str(tmp_path / "c.db"))
    assert report.ok and [p.point for p in report.points] == ["min", "opt", "max"]


def _rule(tmp_path, body: str):
    path = tmp_path / "rule_clip.py"
    path.write_text(textwrap.dedent(f'''
        import sys
        import torch
        sys.path.insert(0, {str(EXAMPLE)!r})
        from soft_clip_op import soft_clip
        from opmap import BuildError, accept, strategy

        @strategy("mine/clip", op="mylib.soft_clip.default", kind="decompose",
                  examples=[accept(lambda x: soft_clip(x, 2.0), torch.randn(4, 16))], no_reject="every call")
        def rule_clip(node):
            pass

        @rule_clip.emit
        def _(ctx, node):
        {textwrap.indent(body, "    ")}
        '''))
    return path


def test_an_exception_inside_an_emitter_is_an_internal_error_exit_3(cli, squash, tmp_path, monkeypatch):
    assert cli("rules", "add", _rule(tmp_path, "return ctx.input('x').shape[7]"), "--no-measure").code == 0
    r = cli("build", squash, "-o", tmp_path / "e.engine")
    assert r.code == 3, r.err
    assert "internal error" in r.err and "mine/clip" in r.err and "IndexError" in r.err and "OPMAP_DEBUG=1" in r.err
    monkeypatch.setenv("OPMAP_DEBUG", "1")
    with pytest.raises(BuildError) as raised:  # the trace: the emitter's own exception is the cause
        cli("build", squash, "-o", tmp_path / "e.engine")
    assert isinstance(raised.value.__cause__, IndexError)


def test_a_deliberate_build_error_in_an_emitter_stays_exit_2(cli, squash, tmp_path):
    assert cli("rules", "add", _rule(tmp_path, "raise BuildError('limit must be static here')"), "--no-measure").code == 0
    r = cli("build", squash, "-o", tmp_path / "e.engine")
    assert r.code == 2 and r.err.startswith("error:") and "limit must be static here" in r.err


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_decode_step_builds_and_verifies_at_three_points(cli, tmp_path, family):
    """GQA with rotary positions (Llama, Qwen2) and learned positions with a fused QKV (GPT-2): the logits and every
    layer's updated keys/values agree with PyTorch at min, opt and max of batch, new tokens and cache length."""
    from examples.decode_step import export_decode_step

    path = tmp_path / f"{family}.pt2"
    torch.export.save(export_decode_step(family), str(path))
    r = cli("verify", path, "--json")
    data = json.loads(r.out)
    assert r.code == 0 and data["ok"], [o for o in data["outputs"] if not o["ok"]]
    assert [p["point"] for p in data["points"]] == ["min", "opt", "max"]
    assert all(p["compared"] == p["expected"] == 5 for p in data["points"])  # logits + 2 layers x (keys, values)
    shapes = [p["shape"] for p in data["points"]]
    assert len(set(shapes)) == 3 and "input_ids=4x8" in shapes[-1] and "x32x" in shapes[-1]  # batch 4, 8 new, 32 cached
