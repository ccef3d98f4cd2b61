"""pytest plugin (entry point ``pytest11``): fixtures for testing opmap rules in plain pytest.

    def test_my_rule(opmap_judge):
        verdict = opmap_judge("rules/rule_mine.py::mine/nonzero", torch.nonzero, torch.ones(3, dtype=torch.bool))
        assert verdict.outcome == "REJECTED"
        assert "bound" in verdict.reason

    def test_my_examples(opmap_examples):
        opmap_examples("rules/rule_mine.py")     # fails with every failing accept/reject example
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


@pytest.fixture(scope="session")
def opmap_ruleset():
    """Built-in rules, installed rule packs and their fixtures (no catalog involved)."""
    from opmap.app import load_rules

    return load_rules(None)


def _resolve(target: Any, ruleset) -> list:
    """A Strategy, a strategy id, a rule file path, or ``path::strategy-id``."""
    from opmap.planning.collect import load_source, rule_files
    from opmap.planning.strategy import Strategy, StrategyFamily

    if isinstance(target, Strategy):
        return [target]
    if isinstance(target, StrategyFamily):
        return list(target)
    text = str(target)
    path, _, sid = text.partition("::")
    if Path(path).suffix == ".py" or Path(path).is_dir():
        found = []
        for file in rule_files(Path(path)):
            found += load_source(file.read_text(), str(file.resolve()), origin="user")
        return [s for s in found if not sid or s.id == sid] or pytest.fail(f"no strategy {sid!r} in {path}")
    if text in ruleset.strategies:
        return [ruleset.strategies[text]]
    pytest.fail(f"unknown strategy {text!r}: pass a Strategy, a built-in id, a rule file or 'file.py::id'")


@pytest.fixture
def opmap_capture() -> Callable:
    """``opmap_capture(fn, *inputs) -> Graph``: a real torch.export of a function or module."""
    from opmap.loading.capture import capture_callable

    return lambda fn, *inputs, **kw: capture_callable(fn, *inputs, **kw).graph


@pytest.fixture
def opmap_judge(opmap_ruleset) -> Callable:
    """``opmap_judge(strategy, fn, *inputs, backend=None, node=None, **settings) -> Verdict``."""
    from opmap.checking.examples import judge_example
    from opmap.planning.strategy import Example

    def judge(target, fn, *inputs, backend=None, node=None, **settings):
        (strat, *_rest) = _resolve(target, opmap_ruleset)
        ops = frozenset(op for s in opmap_ruleset.strategies.values() for op in s.ops if op != "*")
        verdict, _ = judge_example(strat, Example(fn, inputs, "accept", backend, None, node, settings), opmap_ruleset, ops)
        return verdict

    return judge


@pytest.fixture
def opmap_examples(opmap_ruleset) -> Callable:
    """``opmap_examples(target)``: run the strategies' own accept/reject examples; fail listing every failure."""
    from opmap.checking.examples import run_examples

    def run(target):
        strategies = _resolve(target, opmap_ruleset)
        results = run_examples(strategies, opmap_ruleset)
        failures = [f"{r.strategy} {r.label}: {r.message}" for r in results if not r.passed]
        if failures:
            pytest.fail("rule examples failed:\n" + "\n".join(failures), pytrace=False)
        return results

    return run
