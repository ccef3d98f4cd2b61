"""The on-disk caches: rewritten rule bytecode keyed by source, reused, and robust to corrupt entries."""

import textwrap
import threading

import pytest

from opmap.planning import diskcache, rewrite
from opmap.planning.collect import load_source

SRC = textwrap.dedent('''
    from opmap import strategy
    @strategy("c/one", op="aten.relu.default", kind="direct")
    def rule_one(node):
        limit = 2
        assert node.out.rank <= limit, "rank too high"
''')


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPMAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OPMAP_NO_CACHE", raising=False)
    return tmp_path / "cache" / "rules"


def _entries(cache):
    return sorted(cache.iterdir()) if cache.exists() else []


def test_rewritten_bytecode_is_cached_and_reused(cache, monkeypatch):
    first = rewrite.compile_rule_source(SRC, "/v/rule_c.py")
    assert len(_entries(cache)) == 1
    # a second compile of the same source never rewrites: the rewriter may be broken and it still loads
    monkeypatch.setattr(rewrite, "_AssertRewriter", None)
    again = rewrite.compile_rule_source(SRC, "/v/rule_c.py")
    assert again.co_code == first.co_code
    (strategy,) = load_source(SRC, "/v/rule_c.py")  # and its asserts still carry evidence
    with pytest.raises(rewrite.RuleAssertion) as info:
        strategy.rule(node=type("N", (), {"out": type("M", (), {"rank": 3})()})())
    assert info.value.reason == "rank too high" and info.value.evidence["limit"] == "2"


def test_a_changed_source_is_a_new_entry(cache):
    rewrite.compile_rule_source(SRC, "/v/rule_c.py")
    rewrite.compile_rule_source(SRC.replace("limit = 2", "limit = 3"), "/v/rule_c.py")
    assert len(_entries(cache)) == 2


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 10, b"x" * 32 + b"not marshal"])
def test_a_corrupt_entry_is_ignored_and_rewritten(cache, garbage):
    rewrite.compile_rule_source(SRC, "/v/rule_c.py")
    (entry,) = _entries(cache)
    good = entry.read_bytes()
    entry.write_bytes(garbage)
    code = rewrite.compile_rule_source(SRC, "/v/rule_c.py")
    assert code.co_filename == "/v/rule_c.py"
    assert entry.read_bytes() == good


def test_a_valid_checksum_over_bad_bytecode_is_rewritten(cache):
    rewrite.compile_rule_source(SRC, "/v/rule_c.py")
    (entry,) = _entries(cache)
    diskcache.store("rules", entry.name, b"\xff\xfe not a code object")
    assert rewrite.compile_rule_source(SRC, "/v/rule_c.py").co_filename == "/v/rule_c.py"


def test_concurrent_writers_leave_a_valid_entry(cache):
    errors = []

    def work():
        try:
            for _ in range(20):
                diskcache.store("rules", "shared", b"payload" * 100)
                assert diskcache.load("rules", "shared") in (None, b"payload" * 100)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert diskcache.load("rules", "shared") == b"payload" * 100
    assert [p.name for p in _entries(cache)] == ["shared"]  # no temporary files left behind


def test_no_cache_writes_nothing(cache, monkeypatch):
    monkeypatch.setenv("OPMAP_NO_CACHE", "1")
    rewrite.compile_rule_source(SRC, "/v/rule_c.py")
    assert _entries(cache) == []


def test_decomposition_traces_are_cached_per_op_and_argument_metas(tmp_path, monkeypatch):
    import torch

    from opmap.loading.capture import capture_callable
    from opmap.rules import decomposition

    monkeypatch.setenv("OPMAP_CACHE_DIR", str(tmp_path / "cache"))
    ln = torch.nn.functional.layer_norm
    graph = capture_callable(lambda x: ln(x, (3,)) + ln(x * 2, (3,)), torch.randn(2, 3)).graph
    norms = [n for n in graph if n.op == "aten.layer_norm.default"]
    first = decomposition._trace(norms[0], graph)
    entries = list((tmp_path / "cache" / "decompositions").iterdir())
    assert len([e for e in entries if e.stat().st_size > 100]) >= 1
    monkeypatch.setattr(decomposition, "_make_fx", None)  # the same op and metas never trace again
    second = decomposition._trace(norms[1], graph)
    assert [(n.op, n.outputs) for n in second] == [(n.op, n.outputs) for n in first] and len(first) > 1
    assert decomposition.resolve("aten.layer_norm.default") in decomposition._table()
    assert decomposition.resolve("aten.relu.default") not in decomposition._table()


_GETSOURCE = __import__("inspect").getsource


def _define(path, body):
    """Write and import a module with one function; the function's code object (what rules hash the text of)."""
    import importlib.util

    path.write_text(body)
    spec = importlib.util.spec_from_file_location(f"m_{abs(hash(body))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.f.__code__


def test_function_source_text_is_cached_per_file_content(tmp_path, monkeypatch):
    import inspect

    from opmap.planning import sourcetext

    monkeypatch.setenv("OPMAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sourcetext, "_FILES", {})
    path = tmp_path / "mod.py"
    code = _define(path, "x = 1\n\ndef f(a):\n    # one\n    return a + 1\n")
    assert sourcetext.code_source(code) == inspect.getsource(code) == "def f(a):\n    # one\n    return a + 1\n"
    # a fresh process (no in-memory state) reads the text from disk: inspect is not asked again
    monkeypatch.setattr(sourcetext, "_FILES", {})
    monkeypatch.setattr(sourcetext.inspect, "getsource", None)
    assert sourcetext.code_source(code) == "def f(a):\n    # one\n    return a + 1\n"
    # an edit that changes only a comment compiles to equal code, yet its new text is found (a new entry)
    monkeypatch.setattr(sourcetext.inspect, "getsource", _GETSOURCE)
    code2 = _define(path, "x = 1\n\ndef f(a):\n    # two, longer\n    return a + 1\n")
    assert sourcetext.code_source(code2) == "def f(a):\n    # two, longer\n    return a + 1\n"
    assert len(list((tmp_path / "cache" / "source").iterdir())) == 2


def test_a_corrupt_source_entry_is_ignored(tmp_path, monkeypatch):
    from opmap.planning import sourcetext

    monkeypatch.setenv("OPMAP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sourcetext, "_FILES", {})
    code = _define(tmp_path / "mod.py", "def f():\n    return 2\n")
    sourcetext.code_source(code)
    (entry,) = (tmp_path / "cache" / "source").iterdir()
    diskcache.store("source", entry.name, b'{"1:f": 5}')  # valid checksum, wrong content
    monkeypatch.setattr(sourcetext, "_FILES", {})
    assert sourcetext.code_source(code) == "def f():\n    return 2\n"
