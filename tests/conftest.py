import io
import os
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import examples  # noqa: F401  (before any test imports transformers: declares torchvision's ops where they do not load)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def db_url(tmp_path, monkeypatch):
    """A fresh SQLite catalog per test (also exported as OPMAP_DB for subprocesses)."""
    path = tmp_path / "catalog.db"
    monkeypatch.setenv("OPMAP_DB", str(path))
    return f"sqlite:///{path}"


@pytest.fixture
def cli(db_url):
    """Run the opmap CLI in-process; returns (exit code, stdout, stderr)."""
    from opmap.cli import main

    def run(*args: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--db", db_url, *map(str, args)])
        return Result(code, out.getvalue(), err.getvalue())

    return run


def export_to(path: Path, module, *inputs, dynamic_shapes=None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(module, tuple(inputs), dynamic_shapes=dynamic_shapes, strict=False)
    torch.export.save(ep, str(path))
    return path


@pytest.fixture(scope="session")
def detector_pt2(tmp_path_factory) -> Path:
    from examples.detector import export_detector

    path = tmp_path_factory.mktemp("models") / "detector.pt2"
    torch.export.save(export_detector(), str(path))
    return path


@pytest.fixture(scope="session")
def selector_pt2(tmp_path_factory) -> Path:
    from tests.helpers import Selector

    return export_to(tmp_path_factory.mktemp("models") / "selector.pt2", Selector(), torch.randn(4, 5))


@pytest.fixture
def squash(tmp_path) -> Path:
    """examples/custom_op's model (a Linear, then the custom op mylib::soft_clip), exported with a dynamic batch."""
    example = str(ROOT / "examples" / "custom_op")
    sys.path.insert(0, example)
    try:
        from model import export  # examples/custom_op/model.py (imports soft_clip_op, registering mylib::soft_clip)
    finally:
        sys.path.remove(example)
    return export(str(tmp_path / "squash.pt2"))
