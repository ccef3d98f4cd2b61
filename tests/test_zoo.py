"""The architecture zoo: a fixed small sample exported by keyword (static and dynamic), built on tensorrt_rtx and
verified at every point of its profile. The whole zoo is `make bench-build` (bench/BUILD.md), not a test."""

import pytest

from examples.zoo import ZOO, export_arch
from examples.zoo_check import VARIANTS, check

SAMPLE = [("vit", "keyword dynamic"), ("whisper_encoder", "keyword dynamic"), ("bert", "keyword static")]


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    from opmap import service as svc

    return svc.open_catalog(str(tmp_path_factory.mktemp("zoo") / "catalog.db"))


def test_zoo_spans_forty_architectures_across_families():
    assert len(ZOO) >= 40
    families = {a.family.split(" (")[0] for a in ZOO.values()}
    for family in ("encoder", "decoder", "encoder-decoder", "mixture-of-experts", "state-space", "recurrent", "vision CNN",
                   "vision transformer", "detection", "segmentation", "speech", "multimodal"):
        assert family in families, family
    assert {"decoder (ALiBi)", "decoder (rotary)", "vision transformer (shifted windows)"} <= {a.family for a in ZOO.values()}


def test_keyword_and_positional_exports_bind_inputs_differently():
    by_keyword, _ = export_arch("distilbert", keyword=True)
    positional, _ = export_arch("distilbert", keyword=False)
    args, kwargs = by_keyword.call_spec.in_spec.children()
    assert args.num_children == 0 and kwargs.context == ["input_ids", "attention_mask"]
    args, kwargs = positional.call_spec.in_spec.children()
    assert args.num_children == 2 and kwargs.num_children == 0


def test_dynamic_export_keeps_named_dims_symbolic_or_says_why():
    program, note = export_arch("mamba", keyword=True, dynamic=True)
    shape = next(iter(program.graph_signature.user_inputs))
    dims = [n.meta["val"].shape for n in program.graph.nodes if n.name == shape][0]
    assert not str(dims[0]).isdigit() and int(dims[1]) == 16  # batch symbolic, sequence kept static ...
    assert "seq" in ZOO["mamba"].static and note == ""  # ... as the zoo says, without a refused attempt


@pytest.mark.parametrize("name,variant", SAMPLE)
def test_sample_builds_on_tensorrt_rtx_and_verifies_at_every_point(opened, name, variant):
    catalog, ruleset = opened
    row = check(name, variant, catalog, ruleset)
    assert row.ok, row.failure
    assert row.engine_bytes > 100_000 and row.max_abs < 1e-3
    expected = {"min", "opt", "max"} if variant.endswith("dynamic") else {"static"}
    assert set(row.verified) == expected and all(row.verified.values())
    if variant.endswith("dynamic"):
        assert "[1, 4]" in row.dynamic_dims  # the batch range of examples.zoo.RANGES


def test_bench_marks_rows_past_its_budget_not_run(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from build_zoo import main

    out = tmp_path / "BUILD.md"
    main(["--only", "vit,bert", "--budget", "1e-9", "--out", str(out)])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.split(" | ")[1:2] and line.split(" | ")[1] in VARIANTS]
    assert len(rows) == 8 and all(line.endswith("| not run |") for line in rows) and "0 of 8 rows run" in text


def test_zoo_page_rows_read_back_as_written():
    """``--only`` keeps the other rows from the existing page: read back, they render as they were written."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "bench"))
    from build_zoo import parse_rows, render

    from examples.served_zoo import SERVED

    text = (root / "bench" / "BUILD.md").read_text()
    rows = parse_rows(text)
    assert rows and any(r.ok for r in rows.values()) and any(not r.ok for r in rows.values())
    again = render(rows, list(ZOO), list(VARIANTS), 0.0, list(SERVED), kept=len(rows))
    assert again.split("## Per architecture")[1] == text.split("## Per architecture")[1]
