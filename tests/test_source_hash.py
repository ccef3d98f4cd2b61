"""A strategy's source hash covers everything its rule, emit and expand functions run inside opmap (issue 22)."""

from __future__ import annotations

import textwrap

from opmap.app import load_rules
from opmap.planning import reach
from opmap.planning.collect import load_source

RULES = textwrap.dedent('''
    from opmap import accept, strategy

    def _limit():
        return {limit}

    def _check(node):
        assert node.arg("dim", 0) < _limit(), "dim too large"

    @strategy("mine/soft", op="aten._softmax.default", kind="direct")
    def rule_soft(node):
        _check(node)

    @rule_soft.emit
    def _emit(ctx, node):
        return ctx.cast(ctx.input("self"), ctx.output_dtype())
''')


def _hash(limit: int, name: str = "mine.py") -> str:
    (strat,) = load_source(RULES.format(limit=limit), name)
    return strat.source_hash


def test_a_helper_two_calls_away_changes_the_hash():
    assert _hash(4) == _hash(4)
    assert _hash(4) != _hash(5)  # _limit is called by _check, which the rule calls


def test_the_emit_api_it_calls_is_covered():
    (strat,) = load_source(RULES.format(limit=4), "mine.py")
    keys = [k for k, _ in reach.reached([strat.rule, strat.emit_fn])]
    assert "EmitContext.cast" in keys  # ctx.cast, read from the builder's text
    assert "EmitContext.output_dtype" in keys
    assert "Node.arg" in keys  # node.arg in the helper the rule calls
    assert not any("EmitContext.elementwise" in k for k in keys)  # not every method: only those it names


def test_closure_constants_tell_factory_made_emitters_apart():
    strategies = load_rules(None).strategies
    add, mul = strategies["ew/add"], strategies["ew/mul"]
    assert add.emit_fn.__code__ is mul.emit_fn.__code__  # one text, two operations
    assert reach.digest([add.emit_fn]) != reach.digest([mul.emit_fn])
    assert add.source_hash != mul.source_hash


def test_a_shared_helper_of_the_builtins_is_covered():
    strategies = load_rules(None).strategies
    keys = [k for k, _ in reach.reached([strategies["ew/add"].rule, strategies["ew/add"].emit_fn])]
    assert any(k.startswith("compute_dtype#") for k in keys)


def test_the_disk_cache_of_builtin_digests_agrees_with_the_walk():
    strategies = load_rules(None).strategies
    for sid in ("ew/add", "act/relu", "torch/decomposition", "attn/decomposed"):
        strat = strategies.get(sid)
        if strat is None:
            continue
        roots = [strat.rule, strat.emit_fn, strat.expand_fn]
        assert reach.builtin(roots)
        assert reach.builtin_digest(sid, roots) == reach.digest(roots)
