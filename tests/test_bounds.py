"""User-declared bounds for data-dependent sizes (--bound NODE=N / SYMBOL=N): ops without a bound in the export become
buildable without re-exporting; a bound exceeded at run time is visible through the exact count."""

import json

import torch

from tests.conftest import export_to


class Repeat(torch.nn.Module):
    def forward(self, x, r):
        return torch.repeat_interleave(x, r)


class Sparse(torch.nn.Module):
    def forward(self, m):
        return torch.nonzero(m)


def _repeat(tmp_path):
    return export_to(tmp_path / "repeat.pt2", Repeat(), torch.arange(4.0), torch.tensor([1, 2, 0, 3]))


def test_without_a_bound_the_plan_says_how_to_give_one(cli, tmp_path):
    r = cli("suggest", _repeat(tmp_path), "--json", "--no-record")
    assert r.code == 1
    node = next(n for n in json.loads(r.out)["nodes"] if n["op"] == "aten.repeat_interleave.self_Tensor")
    assert node["choice"] is None and "--bound repeat_interleave=N" in node["why"]


def test_a_declared_bound_makes_it_buildable(cli, tmp_path):
    path = _repeat(tmp_path)
    inputs = tmp_path / "in.pt"
    torch.save({"x": torch.arange(4.0), "r": torch.tensor([3, 0, 2, 1])}, inputs)
    r = cli("verify", path, "--bound", "repeat_interleave=16", "--inputs", inputs, "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)["outputs"][0]
    assert out["ok"] and "count exact" in out["note"]


def test_an_exceeded_bound_is_reported_as_truncation(cli, tmp_path):
    path = _repeat(tmp_path)
    inputs = tmp_path / "in.pt"
    torch.save({"x": torch.arange(4.0), "r": torch.tensor([3, 3, 3, 3])}, inputs)  # 12 rows, bound 8
    r = cli("verify", path, "--bound", "repeat_interleave=8", "--inputs", inputs, "--json")
    assert r.code == 1
    out = json.loads(r.out)["outputs"][0]
    assert not out["ok"] and "exceeds the bound 8" in out["note"] and "truncated" in out["note"]


def test_a_symbol_bound_shrinks_a_sparse_nonzero(cli, tmp_path):
    path = export_to(tmp_path / "sparse.pt2", Sparse(), torch.zeros(64, 64, dtype=torch.bool))
    symbol = next(s for s in json.loads(cli("build", path, "-o", tmp_path / "a.engine", "--json").out)["plan"]
                  if s["node"] == "nonzero")  # the default bound: every element of the mask (4096 rows)
    assert symbol["strategy"] == "nonzero/static-bound"
    r = cli("build", path, "-o", tmp_path / "b.engine", "--bound", "nonzero=32", "--json")
    assert r.code == 0, r.err
    checked = json.loads(r.out)["checked"]  # the drawn mask is dense: cut off at the declared bound, as declared
    assert checked["ok"] is None and "inconclusive" in checked["note"] and "exceeds the bound 32" in checked["note"]
    sparse = tmp_path / "in.pt"
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[3, 5] = mask[40, 1] = True
    torch.save({"m": mask}, sparse)
    r = cli("verify", path, "--bound", "nonzero=32", "--inputs", sparse, "--json")
    assert r.code == 0 and json.loads(r.out)["ok"], r.err


def test_bad_bounds_are_one_line_errors(cli, tmp_path):
    for spec in ("repeat_interleave", "repeat_interleave=0", "=4", "x=abc"):
        r = cli("suggest", _repeat(tmp_path), "--bound", spec)
        assert r.code == 2 and "bad --bound" in r.err and len(r.err.strip().splitlines()) == 1, (spec, r.err)
