"""The pytest-style rule engine: discovery, fixtures and scopes, outcomes, evidence, selection."""

import textwrap

import pytest
import torch

from opmap.planning import fixtures as context
from opmap.loading.capture import capture_callable
from opmap.planning.collect import RuleSet, load_source, module_fixtures, select
from opmap.planning.judge import Judge
from opmap.planning.strategy import Outcome
from opmap.errors import OpmapError, RuleDefinitionError


def rules(src: str, name: str = "rule_test.py"):
    return {s.id: s for s in load_source(textwrap.dedent(src), f"/virtual/{name}")}


@pytest.fixture(scope="module")
def graph():
    return capture_callable(lambda x: torch.relu(x).sum() + torch.nonzero(x > 0).shape[0], torch.randn(3, 4)).graph


def judge_all(strats, graph, op, backend="tensorrt_rtx", settings=None):
    from opmap.building.backend import profile

    judge = Judge(base={"settings": settings or context.Settings(), "backend": profile(backend), "catalog_ops": frozenset()},
                  builtin_fixtures=module_fixtures(context))
    out = {}
    with judge.graph_scope(graph):
        for node in graph:
            if node.op == op:
                for s in strats.values():
                    out[s.id] = judge.judge(s, node)
    judge.close()
    return out


def test_four_outcomes_with_reason_expression_evidence(graph):
    s = rules('''
        from opmap import strategy, skip
        @strategy("t/applies", op="aten.relu.default", kind="direct")
        def rule_applies(node):
            assert node.out.rank == 2
        @strategy("t/rejected", op="aten.relu.default", kind="direct")
        def rule_rejected(node):
            limit = 1
            assert node.out.rank <= limit, f"rank {node.out.rank} too high"
        @strategy("t/skip", op="aten.relu.default", kind="plugin")
        def rule_skip(node, backend):
            if not backend.plugins:
                skip("backend has no plugins")
        @strategy("t/error", op="aten.relu.default", kind="direct")
        def rule_error(node):
            return {}["missing"]
    ''')
    v = judge_all(s, graph, "aten.relu.default")
    assert v["t/applies"].outcome is Outcome.APPLIES and v["t/applies"].reason is None
    r = v["t/rejected"]
    assert r.outcome is Outcome.REJECTED and r.reason == "rank 2 too high"
    assert r.expression == "node.out.rank <= limit"
    assert r.evidence["node.out.rank"] == "2" and r.evidence["limit"] == "1"
    assert r.location.endswith("rule_test.py:9")
    assert v["t/skip"].outcome is Outcome.NOT_APPLICABLE and v["t/skip"].reason == "backend has no plugins"
    e = v["t/error"]
    assert e.outcome is Outcome.ERROR and "KeyError" in e.reason


def test_assert_without_message_and_calls_evaluated_once(graph):
    s = rules('''
        from opmap import strategy
        calls = []
        def costly(x):
            calls.append(x)
            return x * 10
        @strategy("t/once", op="aten.relu.default", kind="direct")
        def rule_once(node):
            assert costly(node.out.rank) < 5 and calls.append("never")
    ''')
    v = judge_all(s, graph, "aten.relu.default")["t/once"]
    assert v.outcome is Outcome.REJECTED
    assert v.reason == "assert costly(node.out.rank) < 5 and calls.append('never')"
    assert v.evidence["costly(node.out.rank)"] == "20"
    mod = __import__("sys").modules[[m for m in __import__("sys").modules if m.startswith("opmap_user_rules.rule_test")][-1]]
    assert mod.calls == [2], "the failing call ran exactly once and short-circuiting held"


def test_returning_a_value_is_an_error_not_a_silent_bool(graph):
    s = rules('''
        from opmap import strategy
        @strategy("t/bool", op="aten.relu.default", kind="direct")
        def rule_bool(node):
            return False
    ''')
    v = judge_all(s, graph, "aten.relu.default")["t/bool"]
    assert v.outcome is Outcome.ERROR and "assert cond" in v.reason


def test_fixture_scopes_yield_teardown_and_errors(graph):
    s = rules('''
        from opmap import strategy, fixture
        log = []
        @fixture(scope="session")
        def sess():
            log.append("session")
            return "s"
        @fixture(scope="graph")
        def per_graph(graph):
            log.append("graph")
            yield len(graph)
            log.append("graph-teardown")
        @fixture
        def per_node(node, per_graph, sess):
            log.append("node")
            return node.name
        @fixture(scope="graph")
        def bad_scope(node):
            return 1
        @fixture
        def loop_a(loop_b):
            return 1
        @fixture
        def loop_b(loop_a):
            return 1
        @strategy("t/fx", op=["aten.relu.default", "aten.sum.default"], kind="direct")
        def rule_fx(node, per_node, per_graph, bounds):
            assert per_node == node.name
        @strategy("t/mismatch", op="aten.relu.default", kind="direct")
        def rule_mismatch(bad_scope):
            pass
        @strategy("t/unknown", op="aten.relu.default", kind="direct")
        def rule_unknown(no_such_fixture):
            pass
        @strategy("t/cycle", op="aten.relu.default", kind="direct")
        def rule_cycle(loop_a):
            pass
    ''', "rule_fx.py")
    from opmap.building.backend import profile
    judge = Judge(base={"settings": context.Settings(), "backend": profile("tensorrt_rtx")}, builtin_fixtures=module_fixtures(context))
    fx = s["t/fx"]
    with judge.graph_scope(graph):
        for node in graph:
            if node.op in fx.ops:
                assert judge.judge(fx, node).applies
        relu = next(n for n in graph if n.op == "aten.relu.default")
        assert "scope mismatch" in judge.judge(s["t/mismatch"], relu).reason
        unknown = judge.judge(s["t/unknown"], relu)
        assert unknown.outcome is Outcome.ERROR and "'no_such_fixture' not found" in unknown.reason and "bounds" in unknown.reason
        assert "fixture cycle" in judge.judge(s["t/cycle"], relu).reason
    judge.close()
    log = fx.rule.__globals__["log"]
    assert log.count("session") == 1 and log.count("graph") == 1 and log.count("node") == 2
    assert log[-1] == "graph-teardown"


def test_fixture_that_asserts_rejects(graph):
    s = rules('''
        from opmap import strategy, fixture
        @fixture
        def static_input(node):
            meta = node.meta("self")
            assert meta.rank > 5, "needs rank > 5"
            return meta
        @strategy("t/pre", op="aten.relu.default", kind="direct")
        def rule_pre(static_input):
            pass
    ''')
    v = judge_all(s, graph, "aten.relu.default")["t/pre"]
    assert v.outcome is Outcome.REJECTED and v.reason == "needs rank > 5" and v.evidence["meta.rank"] == "2"


def test_parametrize_makes_variants_with_ids(graph):
    s = rules('''
        from opmap import strategy, parametrize
        @strategy("t/prec", op="aten.relu.default", kind="approximate")
        @parametrize("precision", ["fp16", "bf16", "fp32"])
        def rule_prec(node, precision):
            assert precision != "bf16", "bf16 not wanted here"
    ''')
    assert list(s) == ["t/prec[fp16]", "t/prec[bf16]", "t/prec[fp32]"]
    v = judge_all(s, graph, "aten.relu.default")
    assert [v[k].outcome for k in s] == [Outcome.APPLIES, Outcome.REJECTED, Outcome.APPLIES]
    assert len({x.source_hash for x in s.values()}) == 3


def test_discovery_by_naming_and_definition_order():
    s = rules('''
        from opmap import strategy
        @strategy("t/b", op="aten.relu.default", kind="direct")
        def rule_second(node): pass
        @strategy("t/a", op="aten.relu.default", kind="direct")
        def rule_first(node): pass
        def helper(node): pass
    ''')
    assert list(s) == ["t/b", "t/a"]
    with pytest.raises(RuleDefinitionError, match="rule_orphan is named like a rule but has no @strategy"):
        rules("def rule_orphan(node):\n    pass\n")
    with pytest.raises(RuleDefinitionError, match="rule functions must be named rule_"):
        rules('from opmap import strategy\n@strategy("t/x", op="aten.relu.default", kind="direct")\ndef check(node): pass\n')
    with pytest.raises(RuleDefinitionError, match="kind 'fast' is not one of"):
        rules('from opmap import strategy\n@strategy("t/x", op="aten.relu.default", kind="fast")\ndef rule_x(node): pass\n')
    with pytest.raises(RuleDefinitionError, match="must look like 'pack/slug'"):
        rules('from opmap import strategy\n@strategy("NoPack", op="aten.relu.default", kind="direct")\ndef rule_x(node): pass\n')
    with pytest.raises(RuleDefinitionError, match=r"rule_bad.py:1: syntax error"):
        rules("def rule_x(:\n", "rule_bad.py")
    with pytest.raises(RuleDefinitionError, match="importing the rule file failed: ModuleNotFoundError"):
        rules("import not_a_module_anywhere\n")


def test_duplicate_ids_are_refused():
    rs = RuleSet()
    rs.add(load_source('from opmap import strategy\n@strategy("t/d", op="aten.relu.default", kind="direct")\ndef rule_d(node): pass\n', "/v/rule_one.py"))
    with pytest.raises(RuleDefinitionError, match="t/d is defined twice: in /v/rule_one.py and in /v/rule_two.py"):
        rs.add(load_source('from opmap import strategy\n@strategy("t/d", op="aten.relu.default", kind="direct")\ndef rule_e(node): pass\n', "/v/rule_two.py"))


def test_selection_k_and_m():
    s = rules('''
        from opmap import strategy
        @strategy("t/nonzero-pad", op="aten.nonzero.default", kind="decompose", tags=("data-dependent",))
        def rule_a(node): pass
        @strategy("t/nonzero-plugin", op="aten.nonzero.default", kind="plugin", tags=("data-dependent",))
        def rule_b(node): pass
        @strategy("t/relu", op="aten.relu.default", kind="direct")
        def rule_c(node): pass
    ''')
    ids = lambda **kw: [x.id for x in select(s.values(), **kw)]  # noqa: E731
    assert ids(k="nonzero and not plugin") == ["t/nonzero-pad"]
    assert ids(k="relu or plugin") == ["t/nonzero-plugin", "t/relu"]
    assert ids(m="data-dependent and not decompose") == ["t/nonzero-plugin"]
    assert ids(m="user") == list(s)
    with pytest.raises(OpmapError, match="bad -k expression"):
        ids(k="nonzero and (")
