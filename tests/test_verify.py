"""verify on models exported the way users export them: by keyword, with nested inputs, with scalar outputs; inputs
drawn valid (indices inside the tables they index), or given with --inputs and checked against the export."""

import json

import pytest
import torch
from torch import nn

from tests.conftest import export_to


class Embedder(nn.Module):
    """Token ids index a 5-row table: ids drawn from [0, 10) would crash PyTorch itself."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32)
        return {"logits": self.fc(h), "total": h.sum()}


class Nested(nn.Module):
    def forward(self, batch):
        return batch["image"] * 2 + batch["extra"][0].sum()


class Numel(nn.Module):
    def forward(self, x):
        return x * 2, x.numel()


def _kw_export(path, dynamic=False):
    ids, mask = torch.randint(0, 5, (2, 6)), torch.ones(2, 6, dtype=torch.int64)
    shapes = None
    if dynamic:
        b, s = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("seq", min=2, max=16)
        shapes = {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}}
    ep = torch.export.export(Embedder().eval(), (), kwargs={"input_ids": ids, "attention_mask": mask}, dynamic_shapes=shapes)
    torch.export.save(ep, str(path))
    return path


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_verify_keyword_export(cli, tmp_path, dynamic):
    model = _kw_export(tmp_path / "kw.pt2", dynamic)
    r = cli("verify", model, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    points = report["points"]
    assert report["ok"] and len(points) == (3 if dynamic else 1)  # a dynamic model: min, opt and max
    assert all(p["compared"] == p["expected"] == 2 for p in points)
    assert "[0, 5)" in report["inputs"]["input_ids"] and "embedding" in report["inputs"]["input_ids"]
    assert "padding mask" in report["inputs"]["attention_mask"]


def test_verify_keyword_export_with_inputs_file(cli, tmp_path):
    model = _kw_export(tmp_path / "kw.pt2")
    good = tmp_path / "in.pt"
    torch.save({"input_ids": torch.tensor([[4, 0, 1, 2, 3, 4]] * 2), "attention_mask": torch.ones(2, 6, dtype=torch.int64)}, good)
    r = cli("verify", model, "--inputs", good, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["ok"]


@pytest.mark.parametrize("value, message", [
    ({"input_ids": torch.zeros(3, 6, dtype=torch.int64), "attention_mask": torch.ones(3, 6, dtype=torch.int64)}, "dim 0 is 3"),
    ({"input_ids": torch.zeros(2, 6, dtype=torch.int32), "attention_mask": torch.ones(2, 6, dtype=torch.int64)}, "is int32"),
    ({"input_ids": torch.zeros(2, 6, 1, dtype=torch.int64), "attention_mask": torch.ones(2, 6, dtype=torch.int64)}, "3 dims"),
    ({"input_ids": torch.zeros(2, 6, dtype=torch.int64)}, "no tensor for input"),
    ({"input_ids": torch.zeros(2, 6, dtype=torch.int64), "attention_mask": torch.ones(2, 6, dtype=torch.int64),
      "typo": torch.zeros(1)}, "unknown input"),
])
def test_verify_inputs_are_checked_against_the_export(cli, tmp_path, value, message):
    model = _kw_export(tmp_path / "kw.pt2")
    bad = tmp_path / "bad.pt"
    torch.save(value, bad)
    r = cli("verify", model, "--inputs", bad)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err


class _StaticCacheWrite(torch.nn.Module):
    """One decode step's write into a 4-slot static cache at ``cache_position`` (index_copy along the sequence dim)."""

    def forward(self, cache, k, cache_position):
        return cache.index_copy(2, cache_position, k) * 2


def test_cache_positions_are_drawn_inside_the_cache(tmp_path):
    from opmap.checking.verify import draw_inputs
    from opmap.loading.capture import capture

    path = tmp_path / "write.pt2"
    torch.export.save(torch.export.export(_StaticCacheWrite(), (torch.zeros(1, 2, 4, 8), torch.ones(1, 2, 1, 8),
                                                                torch.tensor([3]))), str(path))
    graph = capture(path).graph
    for seed in range(20):  # [0, 10) by default: 6 of 10 draws would write past the 4 slots
        values, how = draw_inputs(graph, seed)
        assert 0 <= int(values["cache_position"]) < 4, how["cache_position"]
    assert "[0, 4)" in how["cache_position"] and "index_copy" in how["cache_position"], how["cache_position"]


class _NotATensor:  # pickled by reference: loading it would import and build an object of this module
    pass


def test_verify_inputs_file_with_objects_is_refused_without_offering_unsafe_loading(cli, tmp_path):
    model = _kw_export(tmp_path / "kw.pt2")
    bad = tmp_path / "objects.pt"
    torch.save({"input_ids": _NotATensor()}, bad)
    r = cli("verify", model, "--inputs", bad)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "would run code" in r.err and "weights_only=False" not in r.err and "\x1b[" not in r.err, r.err


def test_verify_inputs_outside_the_dynamic_range(cli, tmp_path):
    model = _kw_export(tmp_path / "kw.pt2", dynamic=True)
    bad = tmp_path / "bad.pt"
    torch.save({"input_ids": torch.zeros(2, 40, dtype=torch.int64), "attention_mask": torch.ones(2, 40, dtype=torch.int64)}, bad)
    r = cli("verify", model, "--inputs", bad)
    assert r.code == 2 and "outside the export's range" in r.err, r.err


def test_verify_nested_inputs(cli, tmp_path):
    batch = {"image": torch.randn(2, 3), "extra": [torch.randn(4)]}
    ep = torch.export.export(Nested(), (batch,))
    torch.save  # the flattened placeholders carry the container path in their names
    model = tmp_path / "nested.pt2"
    torch.export.save(ep, str(model))
    r = cli("verify", model, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["ok"] and report["compared"] == 1 and len(report["inputs"]) == 2


def test_verify_compares_scalar_outputs(cli, tmp_path):
    model = export_to(tmp_path / "numel.pt2", Numel(), torch.randn(3, 4),
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8)},))
    r = cli("verify", model, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert [p["compared"] for p in report["points"]] == [2, 2, 2] and report["compared"] == report["expected"]
    scalars = [o for o in report["outputs"] if o["name"] == "output1"]
    assert len(scalars) == 3 and all(o["ok"] and "scalar: PyTorch" in o["note"] for o in scalars)
    assert len({o["note"] for o in scalars}) == 3  # numel differs at min, opt and max: compared as values each time


def test_verify_traced_torchscript(cli, tmp_path):
    model = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(Embedder().eval(), (torch.randint(0, 5, (2, 6)), torch.ones(2, 6, dtype=torch.int64)),
                                   strict=False), str(model))
    r = cli("verify", model, "--json", "--trust-model")  # loading TorchScript can run code from the file
    assert r.code == 0, r.err
    assert json.loads(r.out)["ok"]


def test_a_missing_output_is_a_failure_not_a_skip(tmp_path):
    from opmap.checking.verify import OutputCheck, Report

    report = Report(outputs=[OutputCheck("output0", "x", (2,), "float32", 0.0, 0.0, 0.0, True)], expected=2)
    assert not report.ok
    assert not Report(expected=0).ok  # "compared 0 of 0" proves nothing either


def test_traced_torchscript_stays_static_unless_asked(tmp_path):
    from opmap.loading.capture import DynamicSpec, capture
    from opmap.errors import CaptureError

    model = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(Embedder().eval(), (torch.randint(0, 5, (2, 6)), torch.ones(2, 6, dtype=torch.int64)),
                                   strict=False), str(model))
    static = capture(model, trust_model=True).graph
    assert [list(m.shape) for m in static.inputs.values()] == [[2, 6], [2, 6]]
    dynamic = capture(model, trust_model=True, dynamic=[DynamicSpec.parse("input_ids:0=1..8"), DynamicSpec.parse("attention_mask:0=1..8")]).graph
    (batch, seq), = {tuple(m.shape) for m in dynamic.inputs.values()}  # both inputs share the batch symbol
    assert isinstance(batch, str) and seq == 6
    assert dynamic.symbols[batch].lower in (1, 2) and dynamic.symbols[batch].upper == 8  # torch.export specializes 0/1
    with pytest.raises(CaptureError, match="forward takes"):
        capture(model, trust_model=True, dynamic=[DynamicSpec.parse("ids:0=1..8")])
    with pytest.raises(CaptureError, match="NAME:DIM=MIN..MAX"):
        DynamicSpec.parse("input_ids=1..8")


def test_compare_treats_nan_and_infinity_honestly():
    from opmap.checking.verify import compare

    inf, nan = float("inf"), float("nan")
    assert compare(torch.tensor([inf, -inf, nan, 1.0]), torch.tensor([inf, -inf, nan, 1.0]))[3]  # equal: agree
    max_abs, _, mismatch, ok = compare(torch.tensor([1.0, 2.0]), torch.tensor([nan, 2.0]))
    assert not ok and max_abs == inf and mismatch == 0.5  # NaN on one side is a mismatch, never a pass
    assert not compare(torch.tensor([inf]), torch.tensor([1.0]))[3]


def test_inputs_files_get_the_archive_gate(cli, tmp_path):
    """--inputs is a zip torch.load would read: a member declaring 2 GiB is refused from the directory alone."""
    from tests.hostile import _set_declared_size

    model = _kw_export(tmp_path / "kw.pt2")
    bomb = tmp_path / "in.pt"
    torch.save({"input_ids": torch.zeros(2, 6, dtype=torch.int64), "attention_mask": torch.ones(2, 6, dtype=torch.int64)}, bomb)
    import zipfile

    with zipfile.ZipFile(bomb) as zf:
        member = next(n for n in zf.namelist() if n.endswith("/data/0"))
    _set_declared_size(bomb, member, 2 << 30)
    r = cli("verify", model, "--inputs", bomb)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "declares 2147483648 bytes" in r.err, r.err
