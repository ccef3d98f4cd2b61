"""Image models from timm (random weights): a CNN-like hybrid with GroupNorm(1, C) (poolformer) and a ViT, exported
statically and with a dynamic batch, built on tensorrt_rtx and verified at every point of the profile. The ~30-model
sweep is `make bench-timm` (bench/TIMM.md), not a test."""

import pytest

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
