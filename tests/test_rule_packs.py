"""Third-party rule packs, found through the `opmap.rules` entry-point group of an installed distribution."""

import sys
import textwrap

import pytest

from opmap.planning.collect import RuleSet, load_packs


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path holding real distributions (dist-info with entry_points.txt)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(dist: str, module: str, source: str) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[opmap.rules]\n{dist} = {module}\n")

    yield install
    for name in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[name]


def test_pack_is_loaded_rewritten_and_tagged(site):
    site("acme-rules", "acme_rules", '''
        from opmap import strategy
        @strategy("acme/relu", op="aten.relu.default", kind="direct")
        def rule_acme_relu(node):
            limit = 1
            assert node.out.rank <= limit, "acme's kernel is 1-D"
    ''')
    ruleset = RuleSet()
    load_packs(ruleset)
    strat = ruleset.strategies["acme/relu"]
    assert strat.origin == "pack:acme-rules" and strat.source_path.endswith("acme_rules.py")
    import torch

    from opmap.checking.examples import judge_example
    from opmap.planning.strategy import accept

    verdict, _ = judge_example(strat, accept(torch.relu, torch.randn(2, 3)), ruleset, frozenset())
    assert verdict.reason == "acme's kernel is 1-D" and verdict.evidence["limit"] == "1", "pack asserts are rewritten too"


def test_broken_pack_is_reported_not_fatal(site):
    site("acme-broken", "acme_broken", "import not_installed_anywhere\n")
    ruleset = RuleSet()
    load_packs(ruleset)
    (problem,) = [p for p in ruleset.problems if "acme-broken" in p]
    assert "ModuleNotFoundError" in problem and "rule_* functions carry @strategy" in problem
