"""Every built-in strategy judges its own accept/reject examples correctly (real torch.export each)."""

import pytest

from opmap.app import load_rules
from opmap.checking.examples import run_examples
from opmap.planning.strategy import KINDS

RULESET = load_rules(None)


@pytest.mark.parametrize("strategy", list(RULESET.strategies.values()), ids=lambda s: s.id)
def test_examples(strategy):
    results = run_examples([strategy], RULESET)
    failures = [f"{r.label}: {r.message}" for r in results if not r.passed]
    assert not failures, failures
    assert any(r.label.startswith("accept") for r in results) or strategy.no_accept
    assert any(r.label.startswith("reject") for r in results) or strategy.no_reject


def test_all_four_kinds_are_represented():
    assert {s.kind for s in RULESET.strategies.values()} == set(KINDS)


def test_census_ops_are_all_covered():
    """Every op of the census (bench/census.json), as exported and after decomposition, has a built-in strategy."""
    import json
    from pathlib import Path

    census = json.loads((Path(__file__).resolve().parent.parent / "bench" / "census.json").read_text())
    from opmap.loading.inplace import functional_op

    covered = {op for s in RULESET.strategies.values() for op in s.ops}
    ops = set(census["exported"]["total"]) | set(census["decomposed"]["total"])
    missing = sorted(op for op in ops if op not in covered and (functional_op(op) or ("",))[0] not in covered)  # in-place: via its functional op
    assert not missing, missing
    assert len(census["models"]) >= 11


def test_strategy_ids_are_unique_per_op_key():
    """No op is listed twice in one strategy (the 'two keys for the same op' trap)."""
    for s in RULESET.strategies.values():
        assert len(set(s.ops)) == len(s.ops), s.id
