"""The README documents every command and option; the public API is what __all__ says."""

import re
from pathlib import Path

import typer

import opmap
from opmap.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _commands(typer_app, prefix=""):
    cmd = typer.main.get_command(typer_app)
    for name, sub in cmd.commands.items():
        if hasattr(sub, "commands"):
            for inner_name, inner in sub.commands.items():
                yield f"{prefix}{name} {inner_name}", inner
        else:
            yield f"{prefix}{name}", sub


def test_readme_starts_with_the_two_commands():
    block = re.search(r"```\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]


def test_every_command_and_option_is_documented():
    for name, command in _commands(app):
        assert f"opmap {name}" in README, f"`opmap {name}` is not documented in the README"
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-") and opt not in ("--help",):
                    assert opt in README, f"option {opt} of `opmap {name}` is not documented"


def test_public_api():
    assert sorted(opmap.__all__) == sorted([
        "__version__",
        "plan", "build", "verify", "compare", "calibrate", "measure", "audit", "rules_list", "rules_add", "rules_remove",
        "rules_test", "Plan", "NodeChoice", "Engine", "Binding", "Report", "PointReport",
        "OpmapError", "CaptureError", "CatalogError", "RuleDefinitionError", "BuildError",
        "strategy", "fixture", "parametrize", "skip", "accept", "reject", "Outcome", "EmitContext",
    ])
    assert len(set(opmap.__all__)) == len(opmap.__all__)
    import importlib

    for module in ("opmap.calibration", "opmap.measuring"):  # a submodule must not shadow an API function's name
        importlib.import_module(module)

    for name in opmap.__all__:
        assert getattr(opmap, name) is not None
    assert callable(opmap.calibrate) and callable(opmap.measure)
