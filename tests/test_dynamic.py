"""Dynamic shapes end to end: models exported the way they are deployed (by keyword, with Dim for batch and sequence)
build on tensorrt_rtx and verify at the profile's minimum, an interior point and its maximum."""

import json

import pytest
import torch

from examples.dynamic import MaskedSelection, export_masked_selection, export_text


def _verify_at_three_points(cli, path, *extra):
    r = cli("verify", path, "--json", *extra)
    assert r.code == 0, r.err or r.out[-2000:]
    report = json.loads(r.out)
    assert report["ok"]
    assert [p["point"] for p in report["points"]] == ["min", "opt", "max"]
    assert all(p["ok"] and p["compared"] == p["expected"] > 0 for p in report["points"])
    return report


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_transformer_by_keyword_with_dynamic_batch_and_sequence(cli, tmp_path, name):
    path = tmp_path / f"{name}.pt2"
    torch.export.save(export_text(name, batch=(1, 4), seq=(2, 32)), str(path))
    report = _verify_at_three_points(cli, path)
    shapes = [p["shape"] for p in report["points"]]
    assert shapes[0] == "input_ids=1x2, attention_mask=1x2" and shapes[-1] == "input_ids=4x32, attention_mask=4x32", shapes
    engine = tmp_path / f"{name}.engine"
    r = cli("build", path, "-o", engine, "--json")
    assert r.code == 0, r.err
    sidecar = json.loads(r.out)
    assert sidecar["inputs"]["input_ids"]["shape"][0] != 1 and isinstance(sidecar["inputs"]["input_ids"]["shape"][0], str)


def test_masked_selection_with_dynamic_batch(cli, tmp_path):
    path = tmp_path / "masked.pt2"
    torch.export.save(export_masked_selection(batch=(1, 16)), str(path))
    r = cli("suggest", path, "--json", "--no-record")
    plan = json.loads(r.out)
    assert r.code == 0 and plan["summary"]["no mapping"] == 0, [n["why"] for n in plan["nodes"] if n["choice"] is None]
    index = next(n for n in plan["nodes"] if n["op"] == "aten.index.Tensor")
    assert index["choice"]["strategy"] == "mask/masked-reduce"  # no data-dependent shape survives
    _verify_at_three_points(cli, path)


def test_masked_selection_traced_with_a_dynamic_batch(cli, tmp_path):
    """TorchScript's converter would make the batch dynamic and unbounded; --dynamic gives it a range."""
    path = tmp_path / "masked.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.trace(MaskedSelection().eval(), (torch.randn(2, 8),)), str(path))
    _verify_at_three_points(cli, path, "--trust-model", "--dynamic", "x:0=1..16")


def test_padded_selection_keeps_an_exact_count_at_every_point(cli, tmp_path):
    """A selection that is itself an output: padded to the bound at the profile's maximum, its count exact everywhere."""

    class Select(torch.nn.Module):
        def forward(self, x):
            return x[x.sum(-1) > 0]

    path = tmp_path / "select.pt2"
    ep = torch.export.export(Select(), (torch.randn(4, 3),), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=16)},))
    torch.export.save(ep, str(path))
    report = _verify_at_three_points(cli, path)
    assert all("count exact" in o["note"] for o in report["outputs"]), report["outputs"]
    r = cli("build", path, "-o", tmp_path / "select.engine", "--json")
    assert any(o["extra"] == "count" for o in json.loads(r.out)["outputs"])


def test_shape_overrides_are_checked_against_the_export(cli, tmp_path):
    path = tmp_path / "masked.pt2"
    torch.export.save(export_masked_selection(batch=(1, 16)), str(path))
    for spec, message in [("x=1x8:4x8:100x8", "outside the export's range"), ("y=1x8:4x8:8x8", "model's inputs are"),
                          ("x=1x8:4x8:8x9", "static (8)"), ("x=0x8:4x8:8x8", "1 <= MIN"), ("x=1x8:4x8", "NAME=MIN:OPT:MAX")]:
        r = cli("build", path, "-o", tmp_path / "e.engine", "--shape", spec)
        assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, (spec, r.err)
    r = cli("verify", path, "--shape", "x=2x8:4x8:6x8", "--json")
    assert r.code == 0, r.err
    assert [p["shape"] for p in json.loads(r.out)["points"]] == ["x=2x8", "x=4x8", "x=6x8"]


class _Decomposed(torch.nn.Module):
    """Ops that only PyTorch's decomposition serves along a dynamic dim (diff, roll) next to ones it shares."""

    def forward(self, x):
        return torch.diff(x, dim=1).sum(1) + torch.roll(x, 2, 1).mean(1) + torch.logsumexp(torch.nn.functional.glu(x, -1), 1).sum(-1, keepdim=True)


def test_pytorch_decomposition_traces_over_dynamic_dims(cli, tmp_path):
    """torch/decomposition traces symbolically: the sub-graph's sizes are the export's symbols, so it builds once and
    verifies across the profile."""
    path = tmp_path / "decomposed.pt2"
    dims = {0: torch.export.Dim("batch", min=1, max=8), 1: torch.export.Dim("seq", min=3, max=24)}
    torch.export.save(torch.export.export(_Decomposed(), (torch.randn(2, 6, 4),), dynamic_shapes=(dims,)), str(path))
    r = cli("suggest", path, "--json", "--no-record")
    plan = json.loads(r.out)
    assert r.code == 0, [n["why"] for n in plan["nodes"] if n["choice"] is None]
    chosen = {n["op"]: n["choice"]["strategy"] for n in plan["nodes"]}
    assert chosen["aten.diff.default"] == chosen["aten.roll.default"] == "torch/decomposition", chosen
    _verify_at_three_points(cli, path)


def test_a_decomposition_that_holds_only_on_part_of_the_range_is_rejected():
    """The symbolic trace may assume a size; unless the export's range proves it, the rule says which."""
    from opmap.loading.graph import Graph, Node, Ref, SymbolRange, TensorMeta
    from opmap.rules import decomposition

    node = Node(name="diff", op="aten.diff.default", args={"self": Ref("x"), "n": 1, "dim": 0, "prepend": None, "append": None},
                outputs=[TensorMeta(("s0 - 1", 4), "float32")])
    graph = Graph(name="g", nodes={"diff": node}, inputs={"x": TensorMeta(("s0", 4), "float32")}, params={},
                  outputs=[Ref("diff")], symbols={"s0": SymbolRange(1, 16, False)})
    with pytest.raises(AssertionError, match=r"holds only where .*s0"):
        decomposition.expansion(node, graph)
    bounded = Graph(name="g", nodes={"diff": node}, inputs=graph.inputs, params={}, outputs=graph.outputs,
                    symbols={"s0": SymbolRange(3, 16, False)})
    sub, refs = decomposition.expansion(node, bounded)
    assert refs == [Ref("x")] and all("s0" in str(d) for n in sub for m in n.outputs if m for d in m.shape[:1])
