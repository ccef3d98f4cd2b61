"""Image models from timm (random weights): a CNN-like hybrid with GroupNorm(1, C) (poolformer) and a ViT, exported
statically and with a dynamic batch, built on tensorrt_rtx and verified at every point of the profile; and the two
emitter defects the sweep found (TinyViT's rank-3 attention mask, VOLO's unfold), which now verify or are refused with a
reason. The 43-model sweep is `make bench-timm` (bench/TIMM.md), not a test."""

import pytest

import examples  # noqa: F401  (first: declares torchvision's ops where they do not load, examples/torchvision_shim.py)

timm = pytest.importorskip("timm", reason="timm is a dev dependency (pip install -e '.[dev]')")

from examples.timm_models import TIMM, export_timm  # noqa: E402
from examples.zoo_check import check  # noqa: E402

SAMPLE = [("poolformer_s12", "static"), ("poolformer_s12", "dynamic batch"), ("vit_tiny_patch16_224", "dynamic batch")]


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    from opmap import app as svc

    return svc.open_catalog(str(tmp_path_factory.mktemp("timm") / "catalog.db"))


def test_transformers_models_import_beside_a_torchvision_without_its_ops():
    """timm needs torchvision; installed without its compiled ops it would break every transformers model's import."""
    import torchvision
    import transformers as T

    assert torchvision.ops.misc.FrozenBatchNorm2d  # the pure-Python side timm uses
    T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))


def test_poolformer_normalizes_with_one_group():
    program, _ = export_timm("poolformer_s12", dynamic=False)
    groups = [n.args[1] for n in program.graph.nodes if str(n.target) == "aten.group_norm.default"]
    assert len(groups) == 24 and set(groups) == {1}, groups  # GroupNorm(1, C): two per block, 12 blocks


@pytest.mark.parametrize("name,variant", SAMPLE)
def test_sample_builds_on_tensorrt_rtx_and_verifies_at_every_point(opened, name, variant):
    catalog, ruleset = opened
    dynamic = variant == "dynamic batch"
    row = check(name, variant, catalog, ruleset, export=lambda: export_timm(name, dynamic))
    assert row.ok, row.failure
    assert row.engine_bytes > 100_000 and row.max_abs < 1e-3
    assert set(row.verified) == ({"min", "opt", "max"} if dynamic else {"static"}) and all(row.verified.values())
    if dynamic:
        assert "[1, 4]" in row.dynamic_dims
    assert TIMM[name].size == 64  # a reduced input size (the default is 224)


def test_bench_marks_rows_past_its_budget_not_run(tmp_path):
    from bench.timm_zoo import main

    out = tmp_path / "TIMM.md"
    main(["--only", "resnet18,vit_tiny_patch16_224", "--budget", "1e-9", "--out", str(out)])
    text = out.read_text()
    assert "0 of 4 rows run" in text and "| static | 0 | 0 | 0 | 0 | 0 | 0 | 2 |" in text
    assert text.count("| not run | not run |") == 2 and (tmp_path / "TIMM.json").read_text().strip() == "[]"


def _verified_or_refused(opened, fn, *inputs):
    """A verified engine, or a planner refusal with its reasons — never an emitter's crash (a BuildError)."""
    from opmap import app as svc
    from opmap.building.backend import profile
    from opmap.loading.capture import capture_callable
    from opmap.planning.fixtures import Settings
    from opmap.checking.verify import draw_inputs, verify_built

    catalog, ruleset = opened
    captured = capture_callable(fn, *inputs)
    plan = svc.make_plan(captured, catalog, ruleset, profile("tensorrt_rtx"), Settings(), for_build=True)
    if not plan.complete:
        assert all(n.why for n in plan.nodes if not n.mapped)
        return
    _, built = svc.build(captured, catalog, ruleset, profile("tensorrt_rtx"), Settings())
    report = verify_built(built, captured.program, draw_inputs(captured.graph, seed=0)[0], seed=0)
    assert report.ok and report.compared == report.expected > 0


def test_attention_with_a_mask_broadcast_over_the_batch(opened):
    """tiny_vit_5m_224: IAttention takes a 4-D mask only; attn/fused refuses a rank-3 one and attn/decomposed serves it."""
    import torch
    import torch.nn.functional as F

    q, k, v = (torch.randn(2, 4, 49, 32) for _ in range(3))
    _verified_or_refused(opened, lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m).transpose(1, 2),
                         q, k, v, torch.randn(4, 49, 49))


def test_unfold_builds_or_is_refused(opened):
    """volo_d1_224: F.unfold's decomposition indexes after a skipped leading dim (gather/index-nd)."""
    import torch
    import torch.nn.functional as F

    _verified_or_refused(opened, lambda x: F.unfold(x, 3, padding=1, stride=2), torch.randn(2, 8, 8, 8))
