"""The catalog on a real temporary SQLite (and a real PostgreSQL where OPMAP_TEST_PG_URL is set)."""

import os
import textwrap
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text

from opmap.app import load_rules, open_catalog
from opmap.db import Catalog
from opmap.db.catalog import BUSY_TIMEOUT_S
from opmap.db import migrations
from opmap.db.models import Base
from opmap.planning.collect import load_source
from opmap.errors import CatalogError

USER_RULE = textwrap.dedent('''
    from opmap import strategy
    @strategy("mine/relu", op="aten.relu.default", kind="direct")
    def rule_mine_relu(node):
        """My relu."""
''')


def backends():
    yield pytest.param("sqlite", id="sqlite")
    yield pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)


@pytest.fixture(params=list(backends()))
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cat.db'}"
        return
    base = os.environ.get("OPMAP_TEST_PG_URL")
    if not base:
        if os.environ.get("OPMAP_REQUIRE_PG"):
            pytest.fail("OPMAP_REQUIRE_PG is set but OPMAP_TEST_PG_URL is not: the PostgreSQL server did not start")
        pytest.skip("OPMAP_TEST_PG_URL not set (.ci/run starts a PostgreSQL server and sets it)")
    name = f"opmap_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_migrations_schema_matches_models(url):
    cat = Catalog(url)
    insp = inspect(cat.engine)
    for table in Base.metadata.sorted_tables:
        assert insp.has_table(table.name), table.name
        assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}, table.name
    with cat.engine.connect() as conn:
        assert migrations.applied(conn) == [name for name, _ in migrations.MIGRATIONS]
    assert cat.migrate() == []  # idempotent
    cat.close()


def test_sqlite_pragmas(tmp_path):
    cat = Catalog(str(tmp_path / "plain-path.db"))
    with cat.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == BUSY_TIMEOUT_S * 1000
    cat.close()


def test_sync_is_idempotent_and_versioned(url):
    cat, ruleset = open_catalog(url)
    v1 = cat.version
    assert v1 == 1 and len(cat.strategy_rows()) == len([s for s in ruleset.strategies.values() if s.origin == "builtin"])
    assert cat.sync(ruleset.strategies.values()) == 0 and cat.version == v1
    assert "aten.nonzero.default" in cat.candidates_by_op()


def test_user_rules_survive_builtin_upgrade(url):
    cat, ruleset = open_catalog(url)
    strategies = load_source(USER_RULE, "/home/me/rule_mine.py", origin="user")
    cat.add_user_rules([("/home/me/rule_mine.py", USER_RULE, strategies)])
    # An "upgrade": one built-in changes, one disappears.
    from dataclasses import replace

    shipped = [s for s in ruleset.strategies.values() if s.origin == "builtin"]
    shipped[0] = replace(shipped[0], version=shipped[0].version + 1, _hash=None)  # a copy: the loaded rules stay as they are
    gone = shipped.pop()
    assert cat.sync(shipped) == 2
    rows = {r.id: r for r in cat.strategy_rows(enabled_only=False)}
    assert rows["mine/relu"].enabled and rows["mine/relu"].origin == "user"
    assert rows[shipped[0].id].version == shipped[0].version
    assert not rows[gone.id].enabled, "a vanished built-in is disabled, not deleted (its runs stay auditable)"
    assert ("/home/me/rule_mine.py", USER_RULE) in cat.user_sources()
    assert "mine/relu" in load_rules(cat).strategies


def test_add_replace_remove_user_rules(url):
    cat, _ = open_catalog(url)
    path = "/home/me/rule_mine.py"
    cat.add_user_rules([(path, USER_RULE, load_source(USER_RULE, path, origin="user"))])
    renamed = USER_RULE.replace("mine/relu", "mine/relu2")
    cat.add_user_rules([(path, renamed, load_source(renamed, path, origin="user"))])
    ids = {r.id for r in cat.strategy_rows() if r.origin == "user"}
    assert ids == {"mine/relu2"}, "re-adding a file replaces what it defined before"
    cat.remove_user_rule("mine/relu2")
    assert not [r for r in cat.strategy_rows() if r.origin == "user"]
    with pytest.raises(CatalogError, match="only user strategies can be removed"):
        cat.remove_user_rule("act/relu")
    with pytest.raises(CatalogError, match="no strategy nope/x"):
        cat.remove_user_rule("nope/x")


def test_clash_with_builtin_changes_nothing(url):
    cat, _ = open_catalog(url)
    before = (cat.version, len(cat.strategy_rows()))
    src = USER_RULE.replace("mine/relu", "act/relu")
    with pytest.raises(CatalogError, match="already a builtin strategy"):
        cat.add_user_rules([("/x/rule_clash.py", src, load_source(src, "/x/rule_clash.py", origin="user"))])
    assert (cat.version, len(cat.strategy_rows())) == before
    assert cat.user_sources() == []


def test_newer_catalog_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    Catalog(url).close()
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("INSERT INTO opmap_migrations (name, applied_at) VALUES ('9999_future', CURRENT_TIMESTAMP)"))
    with pytest.raises(CatalogError, match="written by a newer opmap"):
        Catalog(url)


def test_corrupt_file_and_bad_urls(tmp_path):
    bad = tmp_path / "garbage.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match="cannot open catalog"):
        Catalog(str(bad))
    assert bad.read_bytes() == b"this is not a database" * 100
    with pytest.raises(CatalogError, match="bad catalog URL"):
        Catalog("nosuchdialect://x/y")
    with pytest.raises(CatalogError, match="is a directory"):
        Catalog(str(tmp_path))


def test_upgrade_from_the_first_schema_keeps_data(tmp_path):
    """A catalog made by the first release (only 0001 applied) gains the probes table; its runs stay."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        migrations.m0001_initial(conn)
        migrations._LEDGER.create(conn)
        conn.execute(migrations._LEDGER.insert().values(name="0001_initial", applied_at=__import__("datetime").datetime(2026, 1, 1)))
        conn.execute(text("INSERT INTO runs (created_at, model_path, model_kind, opmap_version, catalog_version, backend, settings, summary)"
                          " VALUES (CURRENT_TIMESTAMP, 'old.pt2', 'export', '0.0.1', 1, 'tensorrt_rtx', '{}', '{}')"))
    cat = Catalog(url)
    assert inspect(cat.engine).has_table("probes")
    assert [r.model_path for r in cat.runs()] == ["old.pt2"]
    with cat.engine.connect() as conn:
        assert migrations.applied(conn) == sorted(name for name, _ in migrations.MIGRATIONS)
    assert {"precision", "precision_why"} <= {c["name"] for c in inspect(cat.engine).get_columns("decisions")}
    assert inspect(cat.engine).has_table("calibrations")


def test_probe_builds_are_recorded(cli, detector_pt2, db_url):
    assert cli("suggest", detector_pt2, "--backend", "tensorrt_rtx").code == 0
    probes = Catalog(db_url).probes("tensorrt_rtx")
    (nz,) = [p for p in probes if p.probe == "non_zero"]
    assert nz.ok is False and "no runners" in nz.message and nz.backend_version
    assert cli("suggest", detector_pt2, "--backend", "tensorrt_rtx").code == 0
    assert len(Catalog(db_url).probes("tensorrt_rtx")) == len(probes), "an unchanged result is not stored twice"
