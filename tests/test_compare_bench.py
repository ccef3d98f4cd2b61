"""bench/compare.py's page: `--only` replaces just those rows, counts and medians are over every stored row, the header
names the run of each row, and the hand-written part of the page survives a rerun; served sequences fit the model."""

import importlib.util
import sys

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("compare_bench", ROOT / "bench" / "compare.py")
bench = sys.modules.setdefault("compare_bench", importlib.util.module_from_spec(spec))
spec.loader.exec_module(bench)


def _row(name: str, opmap_ms: float, onnx_ms: float) -> dict:
    est = {"precision": "fp32", "at": "served", "sizes": {}, "opmap": {"ms": opmap_ms}, "onnx": {"ms": onnx_ms}, "why": {}}
    cells = f"| {name} (dynamic) | 9 | builds (9 layers, 1.00 MB) | builds (9 layers, 1.00 MB) | - | x | agree | y | z |"
    return {"row": cells, "build_ratio": 1.0, "export": "dynamic", "estimates": [est]}


def test_rows_of_two_runs_make_one_page_with_medians_over_all(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    (tmp_path / "bench").mkdir()
    page = tmp_path / "bench" / "COMPARE.md"
    page.write_text("old table\n\n" + bench.NOTES_MARK + "\n\nwritten by hand\n")
    data = {"runs": {"1": {"commit": "aaa", "date": "2026-01-01 00:00 UTC", "argv": "--only bert,gpt2"},
                     "2": {"commit": "bbb", "date": "2026-01-02 00:00 UTC", "argv": "--only gpt2,vit"}},
            "models": {"vit": {"run": "2", **_row("vit", 0.9, 1.0)}, "bert": {"run": "1", **_row("bert", 0.5, 1.0)},
                       "gpt2": {"run": "2", **_row("gpt2", 1.2, 1.0)}}}
    text = bench.write(data, ["llama"], "not run yet", estimate=True)
    body = "\n".join(text)
    assert "median **0.90x** over 3 models both routes build; opmap's estimated slower on 1" in body
    assert "**3 of 3** models build through opmap" in body
    assert "commit aaa" in body and body.index("| bert") < body.index("| gpt2") < body.index("| vit")  # zoo order
    assert [line for line in text if line.startswith("* run 2")][0].endswith(": gpt2, vit")
    assert "Not run (not run yet): llama." in body
    written = page.read_text()
    assert "old table" not in written and written.rstrip().endswith("written by hand")
    assert bench.load_rows()["models"]["bert"]["run"] == "1"  # bench/compare.json keeps every row with its run


def test_served_sequences_fit_offset_positions():
    from examples.zoo import ZOO

    assert bench.longest_sequence(ZOO["roberta"].build()[0]) == 126  # 128 rows, counted from padding_idx + 1
    assert bench.longest_sequence(ZOO["bert"].build()[0]) is None
