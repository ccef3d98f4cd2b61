"""opmap.db.reader: what `suggest --no-record` reads from an SQLite catalog without SQLAlchemy is what the full catalog
reads (same rows, same order, NaN kept), and anything unusual falls back to the full catalog."""

import json
import math
import sqlite3

import pytest
import torch

from opmap.db import Catalog
from opmap.db.models import Measurement
from opmap.db.reader import KNOWN_MIGRATIONS, CatalogReader, shipped_fingerprint, shipped_measurements_text
from opmap.service import _PLANNING_COLUMNS, load_rules, open_catalog
from tests.test_lazy_imports import _modules_after

RULE = '''
from opmap import strategy

@strategy("mine/relu-reader", op="aten.relu.default", kind="direct", no_reject="any float tensor")
def rule_relu_reader(node):
    """ReLU (a user's copy)."""
'''


def _fingerprint():
    shipped = load_rules(None)
    return shipped_fingerprint([s for s in shipped.strategies.values() if s.origin != "user"], shipped_measurements_text()[1])


def _same(a, b):
    return len(a) == len(b) and all(
        len(x) == len(y) and all(u == v or (isinstance(u, float) and isinstance(v, float) and math.isnan(u) and math.isnan(v))
                                 for u, v in zip(x, y)) for x, y in zip(a, b))


def test_the_reader_reads_what_the_catalog_reads(tmp_path):
    from opmap.db import migrations

    assert KNOWN_MIGRATIONS == tuple(name for name, _ in migrations.MIGRATIONS)
    db = str(tmp_path / "c.db")
    catalog, ruleset = open_catalog(db)
    rule = tmp_path / "rule_relu_reader.py"
    rule.write_text(RULE)
    from opmap.service import add_user_files

    add_user_files(catalog, [rule], ruleset)
    catalog.add_measurements([Measurement(strategy_id="mine/relu-reader", op="aten.relu.default", shape_bucket="2x3",
                                          dtype="float32", backend="tensorrt_rtx", build_ok=True, max_rel_err=float("nan"),
                                          latency_ms=float("inf"), provenance="measured", opmap_version="t", source_hash="x")])
    reader = CatalogReader.open(db, _fingerprint())
    assert reader is not None
    assert reader.user_sources() == catalog.user_sources() and reader.user_sources()
    assert reader.candidates_by_op() == catalog.candidates_by_op()
    for columns in (_PLANNING_COLUMNS + ("latency_ms",), _PLANNING_COLUMNS + ("engine_bytes",)):
        full = [tuple(r) for r in catalog.measurement_rows("tensorrt_rtx", columns)]
        mine = reader.measurement_rows("tensorrt_rtx", columns)
        assert len(full) > 100 and _same(mine, full)
        assert any(isinstance(r[5], float) and math.isnan(r[5]) for r in mine)  # NaN stored as 'NaN', read as NaN

    from opmap.building.backend import ProbeResult

    before = len(catalog.probes("tensorrt_rtx"))
    reader.record_probes("tensorrt_rtx", "9.9", {"p": ProbeResult(True, "ok")})  # new: the full catalog records it
    reader.record_probes("tensorrt_rtx", "9.9", {"p": ProbeResult(True, "ok")})  # recorded: nothing to write
    assert len(catalog.probes("tensorrt_rtx")) == before + 1
    reader.close()


def test_anything_unusual_opens_the_full_catalog(tmp_path):
    fingerprint = _fingerprint()
    assert CatalogReader.open(str(tmp_path / "missing.db"), fingerprint) is None
    assert CatalogReader.open("postgresql://nowhere/x", fingerprint) is None
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    assert CatalogReader.open(str(foreign), fingerprint) is None
    db = str(tmp_path / "c.db")
    Catalog(db).close()  # migrated, never synced
    assert CatalogReader.open(db, fingerprint) is None
    open_catalog(db)[0].close()
    assert CatalogReader.open(db, "another fingerprint") is None
    assert CatalogReader.open(db, fingerprint) is not None


def test_suggest_without_recording_imports_no_sqlalchemy_and_plans_the_same(tmp_path):
    path = tmp_path / "relu.pt2"
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.randn(2, 3),)), str(path))
    db = str(tmp_path / "c.db")
    _, recorded = _modules_after(["suggest", str(path), "--json"], db)
    modules, out = _modules_after(["suggest", str(path), "--json", "--no-record"], db)
    assert not {m for m in modules if m.split(".")[0] == "sqlalchemy"}
    a, b = json.loads(recorded), json.loads(out)
    assert a.pop("run_id") and b.pop("run_id") is None and a == b


@pytest.mark.parametrize("args", [["--precision", "fp16"], []])
def test_other_runs_use_the_full_catalog(tmp_path, args):
    path = tmp_path / "relu.pt2"
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.randn(2, 3),)), str(path))
    modules, out = _modules_after(["suggest", str(path), "--json", *args], str(tmp_path / "c.db"))
    assert "sqlalchemy" in modules and json.loads(out)["nodes"]
