"""Decode steps as served (issue 19): lifted constant tensors (empty ones included), the exit code of a bug inside an
emitter, and the decode steps of tiny transformers decoders and an encoder-decoder (examples/decode_step.py, a
DynamicCache or transformers' StaticCache) built and verified at the profile's min, an interior point and its max, with
batch, new tokens and cache length dynamic."""

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


class Joined(torch.nn.Module):
    """A decode step's shape in small: the mask spans past and new positions, so its length is an expression over the
    other inputs' dims (``s0 + s1``: torch.export derives it), and the reshape ties them together."""

    def forward(self, past, new, mask):
        return (torch.cat([past, new], 1) * mask).reshape(mask.shape[0], -1, 2).sum(-1)


def _input_shapes(text: str) -> dict[str, list[int]]:
    """A verified point's shapes (``"x=2x3, y=4"``) by input name."""
    return {part.split("=")[0]: [int(d) for d in part.split("=")[1].split("x")] for part in text.split(", ")}


def test_an_input_dim_that_is_a_sum_of_other_dims_takes_their_value_at_every_profile_point(tmp_path):
    from torch.export import Dim

    b, p, t = Dim("b", min=1, max=3), Dim("p", min=1, max=16), Dim("t", min=1, max=4)
    program = torch.export.export(Joined(), (torch.randn(2, 6), torch.randn(2, 2), torch.randn(2, 8)),
                                  dynamic_shapes=({0: b, 1: p}, {0: b, 1: t}, {0: b, 1: Dim.AUTO}), strict=False)
    report = opmap.verify(program, db=str(tmp_path / "c.db"))  # before: kOPT violated the network's shape checks
    assert report.ok and [p.point for p in report.points] == ["min", "opt", "max"]
    for point in report.points:  # mask length = past + new at each point, the sum at least 4 (the range traced)
        (pb, pp), (nb, nt), (mb, mm) = _input_shapes(point.shape).values()
        assert pb == nb == mb and mm == pp + nt >= 4, point.shape


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


def _verified(cli, program, path):
    """``program`` saved as a user's file and verified by the CLI (every output agrees at every point): its JSON."""
    torch.export.save(program, str(path))
    r = cli("verify", path, "--json")
    data = json.loads(r.out)
    assert r.code == 0 and data["ok"], [o for o in data["outputs"] if not o["ok"]]
    return data


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2", "mistral", "phi3", "bloom"])
def test_decode_step_builds_and_verifies_at_three_points(cli, tmp_path, family):
    """GQA with rotary positions (Llama, Qwen2), learned positions with a fused QKV (GPT-2), a sliding window shorter
    than the cache at max (Mistral: rows the window hides), fused QKV/gate-up projections (Phi-3), ALiBi biases from
    the mask over past and new positions (Bloom): the logits and every layer's updated keys/values agree with PyTorch
    at min, opt and max of batch, new tokens and cache length, each a shape a server sends (mask length P + T)."""
    from examples.decode_step import export_decode_step

    data = _verified(cli, export_decode_step(family), tmp_path / f"{family}.pt2")
    assert [p["point"] for p in data["points"]] == ["min", "opt", "max"]
    assert all(p["compared"] == p["expected"] == 5 for p in data["points"])  # logits + 2 layers x (keys, values)
    shapes = [p["shape"] for p in data["points"]]
    assert len(set(shapes)) == 3 and "input_ids=4x8" in shapes[-1] and "x32x" in shapes[-1]  # batch 4, 8 new, 32 cached
    for shape in shapes:
        dims = _input_shapes(shape)
        assert dims["attention_mask"][1] == dims["past_key_0"][2] + dims["input_ids"][1], shape
    assert shapes[0].startswith("input_ids=1x1, attention_mask=1x2")  # a one-token step over one cached position


@pytest.mark.slow
def test_encoder_decoder_step_builds_and_verifies_at_three_points(cli, tmp_path):
    """T5's decoder step (relative position bias over past + new positions): self-attention past and cross-attention
    keys/values in, logits and updated self-attention keys/values out; batch, new tokens, cache and encoder length
    dynamic."""
    from examples.decode_step import export_seq2seq_step

    data = _verified(cli, export_seq2seq_step("t5"), tmp_path / "t5.pt2")
    assert [p["point"] for p in data["points"]] == ["min", "opt", "max"]
    assert all(p["compared"] == p["expected"] == 5 for p in data["points"])
    assert "decoder_input_ids=4x8, attention_mask=4x16, past_key_0=4x4x32x8" in data["points"][-1]["shape"]

class _Store:
    """A plain object (not a module) holding a tensor, as transformers' StaticCache holds its keys and values."""

    def __init__(self) -> None:
        self.seen = torch.zeros(4)


class CountsOutside(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.store = _Store()

    def forward(self, x):
        self.store.seen.add_(x)  # non-strict export lifts the tensor as a constant and keeps the write into it
        return x * 2


def test_a_write_into_a_lifted_constant_is_refused_with_how_to_export_it(cli, tmp_path):
    path = tmp_path / "outside.pt2"
    torch.export.save(torch.export.export(CountsOutside(), (torch.randn(4),), strict=False), str(path))
    r = cli("build", path, "-o", tmp_path / "o.engine")
    assert r.code == 1 and "c_lifted_tensor_0, a tensor torch.export lifted as a constant" in r.err, r.err
    assert "strict=True" in r.err and "as an input" in r.err


@pytest.mark.slow
def test_static_cache_step_takes_and_returns_the_cache_at_three_points(cli, tmp_path):
    """transformers' StaticCache over cache tensors passed in (examples/decode_step.py): the model writes them in place
    at the step's positions (index_copy_); the engine takes each and returns it updated, batch and new tokens dynamic."""
    from examples.decode_step import export_static_cache_step

    data = _verified(cli, export_static_cache_step("llama"), tmp_path / "static.pt2")
    assert [p["point"] for p in data["points"]] == ["min", "opt", "max"]
    names = {o["name"] for o in data["outputs"]}
    assert {f"{kv}_cache_{i}.updated" for kv in ("key", "value") for i in (0, 1)} <= names
    assert all(p["compared"] == p["expected"] == 5 for p in data["points"])  # logits + 4 updated caches
    assert "input_ids=4x8" in data["points"][-1]["shape"]


@pytest.mark.slow
def test_transformers_static_cache_recipe_exports_its_buffers_as_state(cli, tmp_path):
    """transformers' own export recipe (TorchExportableModuleWithStaticCache, strict): the cache buffers are state in,
    state out under their placeholder names; verify compares every updated buffer."""
    from examples.decode_step import export_transformers_static_cache

    data = _verified(cli, export_transformers_static_cache("llama"), tmp_path / "recipe.pt2")
    names = {o["name"] for o in data["outputs"] if o["ok"]}
    assert {"b_key_cache_0.updated", "b_value_cache_1.updated", "b_cumulative_length_0.updated"} <= names
    assert data["compared"] == data["expected"] == 7
