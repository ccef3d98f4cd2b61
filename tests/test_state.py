"""State updated in place (issue 19): writes into views of intermediates become out-of-place ops, and a mutated
buffer, weight or input becomes an engine input and an output named after it (state in, state out), verified like
any output."""

import json

import pytest
import torch

import opmap
from tests.conftest import export_to


class RescaledWeight(torch.nn.Module):
    """RWKV-style: the weight is divided in place on every call (``div_`` on a buffer), then used."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(4, 8))

    def forward(self, x):
        self.w.div_(2.0)
        return x @ self.w.t()


class ClassToken(torch.nn.Module):
    """``copy_`` into a ``select`` view of an intermediate: the token row is overwritten."""

    def forward(self, x, token):
        y = x * 2
        y[:, 0].copy_(token)
        return y + 1


class GhostAdd(torch.nn.Module):
    """``add_`` into an ``alias`` of an intermediate that is read again afterwards through its base."""

    def forward(self, x):
        y = x.relu()
        torch.ops.aten.alias(y).add_(1.0)
        return y * 2


class StaticCacheWrite(torch.nn.Module):
    """transformers' StaticCache pattern: new keys written in place at their positions (``index_copy_``) into a cache
    buffer, which the step then reads whole."""

    def __init__(self):
        super().__init__()
        self.register_buffer("keys", torch.zeros(2, 16, 4))

    def forward(self, x, pos):
        self.keys.index_copy_(1, pos, x)
        return self.keys.sum(-1)


def _verify(tmp_path, module, *inputs):
    report = opmap.verify(module, inputs, db=str(tmp_path / "c.db"))
    (point,) = report.points
    return report, {o["name"]: o for o in point.outputs}


def test_a_mutated_buffer_is_state_in_and_state_out(tmp_path):
    engine = opmap.build(RescaledWeight(), (torch.randn(3, 8),), db=str(tmp_path / "c.db"))
    assert [b.name for b in engine.inputs] == ["b_w", "x"]
    assert [b.name for b in engine.outputs] == ["b_w.updated", "output1"]
    assert engine.sidecar["state"] == [{"input": "b_w", "output": "b_w.updated", "target": "w", "kind": "BUFFER_MUTATION"}]
    report = opmap.verify(engine)
    outputs = {o["name"]: o for o in report.points[0].outputs}
    assert report.ok and set(outputs) == {"b_w.updated", "output1"}, outputs  # the returned state is compared too
    assert outputs["b_w.updated"]["shape"] == [4, 8]


def test_copy_into_a_select_view_is_a_select_scatter(tmp_path):
    report, outputs = _verify(tmp_path, ClassToken(), torch.randn(3, 5), torch.randn(3))
    assert report.ok and list(outputs) == ["output0"]
    plan = opmap.plan(ClassToken(), (torch.randn(3, 5), torch.randn(3)), db=str(tmp_path / "c.db"), record=False)
    ops = [n.op for n in plan.nodes]
    assert "aten.select_scatter.default" in ops and "aten.copy_.default" not in ops


def test_add_into_an_alias_read_again_through_its_base(tmp_path):
    report, outputs = _verify(tmp_path, GhostAdd(), torch.randn(3, 5))
    assert report.ok and list(outputs) == ["output0"]


def test_static_cache_index_copy_into_a_buffer(tmp_path):
    report, outputs = _verify(tmp_path, StaticCacheWrite(), torch.randn(2, 3, 4), torch.tensor([1, 4, 5]))
    assert report.ok and set(outputs) == {"b_keys.updated", "output1"}
    assert outputs["b_keys.updated"]["shape"] == [2, 16, 4]


def test_a_mutated_user_input_is_returned_and_the_plan_states_the_contract(cli, tmp_path):
    path = export_to(tmp_path / "bump.pt2", Bump(), torch.randn(2, 3), torch.randn(2, 3))
    r = cli("suggest", path, "--json")
    assert r.code == 0 and json.loads(r.out)["state"] == ["input x: engine input x, its new value engine output x.updated"]
    verified = cli("verify", path, "--json")
    data = json.loads(verified.out)
    assert verified.code == 0 and data["ok"] and {o["name"] for o in data["outputs"]} == {"x.updated", "output1"}


class Bump(torch.nn.Module):
    def forward(self, x, y):
        x.add_(y)
        return x * 2
