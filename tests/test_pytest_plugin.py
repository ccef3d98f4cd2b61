"""Rule authors test their rules in plain pytest with the plugin's fixtures (real pytest run via pytester)."""

pytest_plugins = ["pytester"]


def test_plugin_fixtures(pytester):
    pytester.makepyfile(rule_mine='''
from opmap import strategy, accept, reject
import torch

@strategy("mine/small-relu", op="aten.relu.default", kind="direct",
          examples=[accept(torch.relu, torch.randn(2, 3)), reject(torch.relu, torch.randn(2, 3, 4, 5, 6))])
def rule_small_relu(node):
    assert node.out.rank <= 3, f"rank {node.out.rank} is too big for my kernel"
''')
    pytester.makepyfile(test_mine='''
import torch

def test_judge(opmap_judge):
    v = opmap_judge("rule_mine.py::mine/small-relu", torch.relu, torch.randn(1, 2, 3, 4))
    assert v.outcome == "REJECTED"
    assert v.reason == "rank 4 is too big for my kernel"
    assert v.evidence["node.out.rank"] == "4"

def test_builtin(opmap_judge):
    assert opmap_judge("act/relu", torch.relu, torch.randn(3)).applies

def test_examples(opmap_examples):
    results = opmap_examples("rule_mine.py")
    assert len(results) == 2

def test_capture(opmap_capture):
    assert opmap_capture(torch.relu, torch.randn(3)).ops() == {"aten.relu.default": 1}
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_failing_example_is_reported(pytester):
    pytester.makepyfile(rule_bad='''
from opmap import strategy, accept, reject
import torch

@strategy("mine/wrong", op="aten.relu.default", kind="direct",
          examples=[accept(torch.relu, torch.randn(2)), reject(torch.relu, torch.randn(2))])
def rule_wrong(node):
    pass
''')
    pytester.makepyfile(test_bad='''
def test_examples(opmap_examples):
    opmap_examples("rule_bad.py")
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mine/wrong reject[[]0]: expected a rejection, got APPLIES*"])
