"""The CLI imports only what a command needs: help and version import neither torch nor TensorRT, and listing
rules loads no model machinery (torch.export's serializer, dynamo, sympy) and no TensorRT."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("tensorrt", "tensorrt_rtx", "torch._dynamo", "torch._export.serde.serialize", "sympy")


def _modules_after(args, db):
    code = (
        "import json, sys\n"
        "from opmap.cli import main\n"
        f"try:\n    main({list(args)!r})\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPMAP_DB": db}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    return set(json.loads(proc.stderr.rsplit("MODULES ", 1)[1])), proc.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_neither_torch_nor_tensorrt(args, tmp_path):
    modules, out = _modules_after(args, str(tmp_path / "c.db"))
    assert "opmap" in modules
    assert not {"torch", *HEAVY} & modules


def test_rules_list_imports_no_model_machinery(tmp_path):
    modules, out = _modules_after(["rules", "list"], str(tmp_path / "c.db"))
    assert "torch/decomposition" in out
    assert not set(HEAVY) & modules


def test_suggest_as_json_imports_no_progress_bar(tmp_path):
    """A hidden progress bar (--json, or stderr not a terminal) costs nothing: rich.progress is not even imported."""
    import torch

    path = tmp_path / "relu.pt2"
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.randn(2, 3),)), str(path))
    modules, out = _modules_after(["suggest", str(path), "--json", "--no-record"], str(tmp_path / "c.db"))
    assert json.loads(out)["nodes"][0]["choice"]["strategy"]
    assert "rich.progress" not in modules
