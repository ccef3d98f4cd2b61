"""Model files are untrusted: nothing in one runs unless --trust-model says so (issue 8, section 1).

The hostile corpus (tests/hostile.py) is regenerated from a real torch.export.save each session.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys
import warnings

import pytest
import sympy
import torch

from opmap.loading import symexpr
from opmap.loading.capture import capture
from opmap.errors import CaptureError
from tests import hostile
from tests.conftest import ROOT
from tests.helpers import TwoLayer


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return hostile.write_corpus(tmp_path_factory.mktemp("hostile"))


def _fresh_marker(name, path):
    marker = path.with_suffix(".marker")
    marker.unlink(missing_ok=True)
    if name == "torchscript_setstate":
        marker.write_bytes(b"........")  # the TorchScript payload overwrites an existing file
    return marker


def _ran(name, marker):
    if name == "torchscript_setstate":
        return marker.read_bytes() != b"........"
    return marker.exists()


def _no_runs(cli):
    audit = cli("audit", "--json")
    assert audit.code == 0 and json.loads(audit.out) == []


@pytest.mark.parametrize("name", sorted(hostile.REFUSED))
def test_hostile_archive_is_refused_in_one_line(cli, corpus, name):
    path = corpus[name]
    marker = _fresh_marker(name, path)
    r = cli("suggest", path)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert hostile.REFUSED[name][1] in r.err
    assert not _ran(name, marker)
    _no_runs(cli)


@pytest.mark.parametrize("command", [("build", "-o", "{out}"), ("verify",), ("measure", "--op", "aten.relu.default", "--model")])
def test_every_command_refuses(cli, corpus, tmp_path, command):
    path = corpus["pickled_weight"]
    marker = _fresh_marker("pickled_weight", path)
    args = [a.format(out=tmp_path / "engine.plan") for a in command]
    r = cli(*args, path)
    assert r.code == 2 and r.err.count("\n") == 1 and "stored as a pickle" in r.err and "--trust-model" in r.err
    assert not marker.exists() and not (tmp_path / "engine.plan").exists()
    _no_runs(cli)


def test_refusal_names_member_and_flag(corpus):
    with pytest.raises(CaptureError) as info:
        capture(corpus["pickled_constant"])
    msg = str(info.value)
    assert "data/constants/model_constants_config.json" in msg and "'offset'" in msg and "--trust-model" in msg


def test_zip_bomb_is_refused_from_the_directory(corpus):
    """The bomb declares 2 GiB; the file is small and nothing was inflated to refuse it."""
    assert corpus["zip_bomb"].stat().st_size < 1 << 20
    with pytest.raises(CaptureError, match="2,147,483,648 bytes .* zip bomb"):
        capture(corpus["zip_bomb"])


@pytest.mark.parametrize("name", sorted(hostile.HARMLESS))
def test_hostile_parts_that_are_never_read_or_run(cli, corpus, name):
    """Sample inputs are never loaded and guard code is never executed: these archives plan normally."""
    path = corpus[name]
    marker = _fresh_marker(name, path)
    assert cli("suggest", path).code == 0
    assert cli("verify", path).code == 0
    assert not marker.exists()
    assert capture(path).program._guards_code == []


# Under PyTorch's own loaders these payloads run: proof that the corpus is hostile, and that the flag still works.
@pytest.mark.parametrize("name, loads", [("pickled_weight", True), ("opaque_constant", True), ("torchscript_setstate", True),
                                         ("unsafe_sample_inputs", False), ("eval_expr", False)])
def test_trust_model_lets_the_payload_run(tmp_path, corpus, name, loads):
    path = tmp_path / corpus[name].name
    shutil.copy(corpus[name], path)
    marker = _fresh_marker(name, corpus[name])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPMAP_DB": str(tmp_path / "catalog.db")}
    proc = subprocess.run([sys.executable, "-m", "opmap.cli", "suggest", str(path), "--trust-model", "--input-shape", "x=2x4",
                           "--no-record"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert _ran(name, marker), proc.stderr
    if loads:
        assert proc.returncode == 0, proc.stderr


def test_unsafe_pickle_is_an_alias(tmp_path, corpus, cli):
    path = corpus["opaque_constant"]
    marker = _fresh_marker("opaque_constant", path)
    # in-process is fine here: the payload only writes the marker (tests.hostile.touch)
    assert cli("suggest", path, "--unsafe-pickle", "--no-record").code == 0
    assert marker.exists()


# -- the safe loader gives what torch.export.load gives ---------------------------------------------


class Kw(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, *, x, y):
        return self.lin(x) + y


def _same_as_torch(path):
    c = capture(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.export.load(str(path))
    assert c.kind == "export"
    assert str(c.program.graph) == str(ref.graph)
    assert {str(k): (v.lower, v.upper) for k, v in c.program.range_constraints.items()} == \
        {str(k): (v.lower, v.upper) for k, v in ref.range_constraints.items()}
    for key, value in ref.state_dict.items():
        assert torch.equal(c.program.state_dict[key], value) and type(c.program.state_dict[key]) is type(value)
    for key, value in ref.constants.items():
        assert torch.equal(c.program.constants[key], value)
    assert c.program.call_spec.in_spec == ref.call_spec.in_spec
    return c


@pytest.mark.parametrize("dynamic", [False, True])
def test_safe_load_matches_torch_export_load(tmp_path, dynamic):
    path = hostile.export_small(tmp_path / "small.pt2", dynamic=dynamic)
    c = _same_as_torch(path)
    assert any(isinstance(d, str) for d in c.graph.inputs["x"].shape) == dynamic


def test_safe_load_keyword_export(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(Kw(), (), kwargs={"x": torch.randn(2, 4), "y": torch.randn(2, 3)})
    torch.export.save(ep, str(tmp_path / "kw.pt2"))
    c = _same_as_torch(tmp_path / "kw.pt2")
    assert set(c.graph.inputs) == {"x", "y"}


def test_safe_load_detector(detector_pt2):
    c = _same_as_torch(detector_pt2)
    assert c.graph.symbols["u0"].data_dependent


def test_torchscript_needs_the_flag(tmp_path):
    path = tmp_path / "traced.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(TwoLayer().eval(), torch.randn(2, 4)).save(str(path))
    with pytest.raises(CaptureError, match="TorchScript archive.*--trust-model"):
        capture(path)
    assert capture(path, trust_model=True).kind == "torchscript"


def test_defence_in_depth_while_deserializing():
    """Inside no_code(), what the gate should have refused raises instead of running."""
    from opmap.loading.safeload import Refused, no_code

    marker_payload = pickle.dumps(hostile.Payload("/nonexistent/never"))
    with no_code():
        for attempt in (lambda: pickle.loads(marker_payload),
                        lambda: torch.load(__file__, weights_only=False),
                        lambda: torch._C._pickle_load_obj(b""),
                        lambda: torch.ops.load_library("libevil.so")):
            with pytest.raises(Refused):
                attempt()
        import torch._export.serde.serialize as serde

        with pytest.raises(Refused):
            serde.sympy.sympify("__import__('os').system('true')")
    assert pickle.loads(pickle.dumps(3)) == 3  # restored afterwards


# -- the restricted parser --------------------------------------------------------------------------


def test_symexpr_reads_what_torch_writes():
    from torch.utils._sympy.functions import CeilDiv, FloorDiv, ModularIndexing, PythonMod, Where
    from torch.utils._sympy.numbers import int_oo

    s0 = sympy.Symbol("s0", integer=True, positive=True)
    s1 = sympy.Symbol("s1", integer=True, positive=True)
    for expr in (2 * s0 + 1, s0 * s1, FloorDiv(s0, 2), CeilDiv(s0, 4), ModularIndexing(s0, 2, 4), PythonMod(s0, 3),
                 sympy.Max(s0, 2), sympy.Eq(s0, 2), sympy.And(s0 < 4, s0 > 1), Where(s0 < 2, s0, 2), -int_oo,
                 sympy.Rational(1, 2), sympy.Float(1.5), s0 ** 2):
        assert symexpr.parse(sympy.srepr(expr)) == expr  # the archive form (srepr)
    assert type(symexpr.parse("(s0//2)")).__name__ == "FloorDiv"  # the printed form opmap stores
    assert symexpr.parse("2*s0 + 1").free_symbols == {sympy.Symbol("s0", integer=True)}


@pytest.mark.parametrize("text, token", [
    ("__import__('os').system('x')", "__import__"),
    ("Symbol('a').__class__", "Attribute"),
    ("getattr(s0, 'x')", "'getattr'"),
    ("lambda: 1", "Lambda"),
    ("Symbol('__x')", "'__x'"),
    ("Integer(2)**Integer(100000)", "power"),
    ("'text'", "literal"),
    ("[s0]", "List"),
    ("Symbol('a', evaluate=eval)", "'evaluate'"),
])
def test_symexpr_refuses_everything_else(text, token):
    with pytest.raises(ValueError, match="not allowed") as info:
        symexpr.parse(text)
    assert token in str(info.value)
