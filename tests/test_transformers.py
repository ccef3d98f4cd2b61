"""Real transformers architectures (random weights from configs, tuple outputs) through `opmap suggest --json`."""

import json

import pytest
import torch

from examples.zoo import TRANSFORMERS, export_transformer
from opmap.loading.capture import graph_from_program


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")
    paths = {}
    for name in TRANSFORMERS:
        ep = export_transformer(name)
        paths[name] = (folder / f"{name}.pt2", len(graph_from_program(ep)))
        torch.export.save(ep, str(paths[name][0]))
    return paths


def test_zoo_has_at_least_ten_architectures():
    assert len(TRANSFORMERS) >= 10


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_every_node_gets_a_choice_or_a_reason(cli, exported, name):
    path, n_nodes = exported[name]
    r = cli("suggest", path, "--json")
    data = json.loads(r.out)
    assert len(data["nodes"]) == n_nodes == data["summary"]["nodes"], "no node is silently dropped"
    for node in data["nodes"]:
        if node["choice"] is None:
            assert node["why"] and node["verdicts"] or "no strategy in the catalog" in node["why"], node
        else:
            assert any(v["strategy"] == node["choice"]["strategy"] and v["outcome"] == "APPLIES" for v in node["verdicts"])
    assert data["summary"]["no mapping"] == 0, [n["why"] for n in data["nodes"] if n["choice"] is None]
    assert r.code == 0
    assert data["summary"]["errors"] == 0


@pytest.mark.parametrize("name", list(TRANSFORMERS))
def test_builds_on_tensorrt_rtx_and_verifies(cli, exported, name):
    """A real AOT engine on tensorrt_rtx, and the network agrees with PyTorch through the reference interpreter."""
    path, _ = exported[name]
    r = cli("verify", path, "--json", "--backend", "tensorrt_rtx")
    data = json.loads(r.out)
    assert r.code == 0 and data["ok"], [o for o in data["outputs"] if not o["ok"]]
    assert data["engine_bytes"] > 100_000
    assert all(o["max_abs_err"] < 1e-3 for o in data["outputs"])
