"""The catalog is never left half-written: concurrent first use, non-finite numbers, all-or-nothing rule adds, foreign
databases, Ctrl-C. Real subprocesses (``python -m opmap.cli``), real SQLite and (where OPMAP_TEST_PG_URL is set) a
real PostgreSQL."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import create_engine, func, select, text

from opmap.db import Catalog
from opmap.db.models import Decision, Measurement, Probe, RuleSource, Run, StrategyRow
from opmap.errors import CatalogError
from opmap.nonfinite import dumps, encode
from tests.conftest import ROOT, export_to
from tests.helpers import TwoLayer
from tests.test_catalog import url  # noqa: F401  (the sqlite / postgres catalog fixture)

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# Each round starts 12 interpreters on a new catalog (about a minute on two cores); CI (.ci/run) repeats 3 times.
ROUNDS = int(os.environ.get("OPMAP_CONCURRENCY_ROUNDS") or 1)


def opmap(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opmap.cli", *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def counts(db: str) -> dict[str, int]:
    cat = Catalog(db)
    try:
        with cat.session() as s:
            out = {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in (StrategyRow, Measurement, Run, Decision, RuleSource, Probe)}
        out["catalog_version"] = cat.version
        return out
    finally:
        cat.close()


def user_rule(name: str) -> str:
    return textwrap.dedent(f'''
        from opmap import strategy
        @strategy("mine/{name}", op="aten.relu.default", kind="direct")
        def rule_{name}(node):
            """{name}."""
    ''')


@pytest.fixture(scope="module")
def small_pt2(tmp_path_factory) -> Path:
    return export_to(tmp_path_factory.mktemp("small") / "two.pt2", TwoLayer(), torch.randn(2, 4))


# -- non-finite numbers -----------------------------------------------------------------------------


def test_nonfinite_encoding_is_strict_json():
    data = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": (float("nan"),)}
    assert encode(data) == {"a": "NaN", "b": ["Infinity", "-Infinity", 1.5], "c": ["NaN"]}
    parsed = json.loads(dumps(data), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert math.isnan(float(parsed["a"])) and float(parsed["b"][1]) == -math.inf


def test_nonfinite_numbers_round_trip_in_the_catalog(url):  # noqa: F811
    from opmap.service import open_catalog

    cat, _ = open_catalog(url)
    cat.add_measurements([Measurement(strategy_id="act/relu", op="aten.relu.default", shape_bucket="4", dtype="float32",
                                      backend="nonfinite-test", provenance="estimated", opmap_version="t", source_hash="h",
                                      max_rel_err=float("nan"), max_abs_err=float("inf"), latency_ms=-float("inf"))])
    (m,) = cat.measurements("nonfinite-test")
    assert math.isnan(m.max_rel_err) and m.max_abs_err == math.inf and m.latency_ms == -math.inf
    run_id = cat.record_run(Run(model_path="m", model_kind="export", opmap_version="t", catalog_version=0, backend="b",
                                settings={"tolerance": float("inf")}, summary={"err": float("nan")}))
    run = cat.run(run_id)
    assert run.settings == {"tolerance": "Infinity"} and run.summary == {"err": "NaN"}
    cat.close()


def test_suggest_json_is_strict_and_a_nan_measurement_is_kept(cli, detector_pt2, db_url):
    """A NaN accuracy measured for a strategy (as batch norm's once was) reaches --json as "NaN", never a bare NaN."""
    from opmap.service import open_catalog

    cat, ruleset = open_catalog(db_url)
    strat = ruleset.strategies["norm/batch-norm"]
    buckets = {(m.shape_bucket, m.dtype) for m in cat.measurements("tensorrt_rtx") if m.strategy_id == strat.id}
    cat.add_measurements([Measurement(strategy_id=strat.id, op="aten.batch_norm.default", shape_bucket=b, dtype=d,
                                      backend="tensorrt_rtx", provenance="estimated", opmap_version="t",
                                      source_hash=strat.source_hash, build_ok=True, latency_ms=1e-6, max_rel_err=float("nan"))
                          for b, d in sorted(buckets)])  # the latest row of every bucket the node could take
    cat.close()
    result = cli("suggest", detector_pt2, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))
    norms = [n["choice"]["cost"] for n in data["nodes"] if n["choice"] and n["choice"]["strategy"] == "norm/batch-norm"]
    assert norms and all(c["max_rel_err"] == "NaN" for c in norms), "the NaN error is explicit, not dropped"
    assert any(m.max_rel_err != m.max_rel_err for m in Catalog(db_url).measurements("tensorrt_rtx")), "SQLite keeps NaN"


# -- concurrent first use ---------------------------------------------------------------------------


def _fresh_pg_database(base: str, name: str) -> str:
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


def _concurrent_rounds(make_db, small_pt2, tmp_path, rounds: int) -> None:
    rules = []
    for i in range(4):
        path = tmp_path / f"rule_c{i}.py"
        path.write_text(user_rule(f"c{i}"))
        rules.append(path)
    # What one command at a time gives (run in this process, to save 12 interpreter starts): the reference counts.
    from opmap.cli import main

    ref = make_db("ref")
    for cmd in [("suggest", small_pt2)] * 8 + [("rules", "add", r) for r in rules]:
        assert main(["--db", ref, *map(str, cmd)]) == 0
    expected = counts(ref)
    assert expected["runs"] == 8 and expected["rule_sources"] == 4
    for n in range(rounds):
        db = make_db(f"r{n}")
        procs = [opmap("--db", db, "suggest", small_pt2) for _ in range(8)] + [opmap("--db", db, "rules", "add", r) for r in rules]
        results = [finish(p) for p in procs]
        for code, _, err in results:
            assert code == 0, err
        assert counts(db) == expected, f"round {n}: concurrent first use differs from one process at a time"


def test_concurrent_first_use_sqlite(small_pt2, tmp_path):
    _concurrent_rounds(lambda name: str(tmp_path / f"{name}.db"), small_pt2, tmp_path, ROUNDS)


@pytest.mark.postgres
def test_concurrent_first_use_postgres(small_pt2, tmp_path):
    base = os.environ.get("OPMAP_TEST_PG_URL")
    if not base:
        if os.environ.get("OPMAP_REQUIRE_PG"):
            pytest.fail("OPMAP_REQUIRE_PG is set but OPMAP_TEST_PG_URL is not: the PostgreSQL server did not start")
        pytest.skip("OPMAP_TEST_PG_URL not set (.ci/run starts a PostgreSQL server and sets it)")
    made = []

    def make(name):
        made.append(f"opmap_conc_{os.getpid()}_{name}")
        return _fresh_pg_database(base, made[-1])

    try:
        _concurrent_rounds(make, small_pt2, tmp_path, ROUNDS)
    finally:
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            for name in made:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_an_unchanged_catalog_is_not_written(tmp_path, monkeypatch):
    """The sync is keyed by the stored hash of the shipped rules and measurements: a second open takes no write lock
    and leaves the file byte for byte as it was."""
    from opmap.service import open_catalog

    db = tmp_path / "c.db"
    open_catalog(str(db))[0].close()
    before = db.read_bytes()

    def no_writes(self):
        raise AssertionError("an unchanged catalog took the write lock")

    monkeypatch.setattr(Catalog, "locked", no_writes)
    cat, ruleset = open_catalog(str(db), write=False)
    assert "act/relu" in ruleset.strategies
    cat.close()
    assert db.read_bytes() == before


# -- migrations and foreign databases ----------------------------------------------------------------


def test_migrations_are_one_transaction(url, monkeypatch):  # noqa: F811
    """A migration that fails takes the earlier ones of the same open with it: no half-made schema."""
    from opmap.db import migrations

    def boom(conn):
        raise RuntimeError("migration 0099 failed")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, ("0099_boom", boom)])
    with pytest.raises(RuntimeError, match="0099"):
        Catalog(url)
    engine = create_engine(url)
    from sqlalchemy import inspect

    assert inspect(engine).get_table_names() == [], "every table of the failed open was rolled back"
    engine.dispose()


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path):
    from opmap.cli import main

    other = tmp_path / "app.db"
    import sqlite3

    with sqlite3.connect(other) as conn:  # another application's database, with a table name opmap also uses
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, what TEXT)")
        conn.execute("CREATE TABLE customers (name TEXT)")
        conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.close()
    before = other.read_bytes()
    for args in (["suggest", "x.pt2"], ["rules", "list"], ["audit"]):
        assert main(["--db", str(other), *args]) == 2
    with pytest.raises(CatalogError, match="is not an opmap catalog .*customers, runs.*left untouched"):
        Catalog(str(other))
    assert other.read_bytes() == before, "not one byte changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"], "no -wal / -shm / journal left beside it"


@pytest.mark.postgres
def test_a_foreign_postgres_database_is_refused(url):  # noqa: F811
    if not url.startswith("postgresql"):
        pytest.skip("the SQLite case has its own test")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (name TEXT)"))
    with pytest.raises(CatalogError, match="not an opmap catalog"):
        Catalog(url)
    from sqlalchemy import inspect

    assert inspect(engine).get_table_names() == ["customers"]
    engine.dispose()


# -- rules add: all or nothing -----------------------------------------------------------------------


def _user_state(db_url: str) -> tuple:
    cat = Catalog(db_url)
    try:
        return cat.version, sorted(r.id for r in cat.strategy_rows(enabled_only=False) if r.origin == "user"), cat.user_sources()
    finally:
        cat.close()


def test_rules_add_is_all_or_nothing(cli, db_url, tmp_path):
    assert cli("rules", "list").code == 0
    empty = _user_state(db_url)
    cases = {
        "later-file-fails": {"rule_a.py": user_rule("a"), "rule_b.py": "def broken(:\n"},
        "duplicate-ids": {"rule_a.py": user_rule("a"), "rule_b.py": user_rule("a").replace("def rule_a", "def rule_other")},
        "sys-exit": {"rule_a.py": user_rule("a"), "rule_z.py": "import sys\nsys.exit(0)\n"},
        "keyboard-interrupt": {"rule_a.py": user_rule("a"), "rule_z.py": "raise KeyboardInterrupt\n"},
    }
    messages = {}
    for name, files in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        for fname, src in files.items():
            (folder / fname).write_text(src)
        result = cli("rules", "add", folder, "--no-measure")
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, (name, result)
        assert _user_state(db_url) == empty, f"{name}: something was stored"
        messages[name] = result.err
    assert "syntax error" in messages["later-file-fails"]
    assert "rule_a.py" in messages["duplicate-ids"] and "rule_b.py" in messages["duplicate-ids"]
    assert "SystemExit" in messages["sys-exit"] and "KeyboardInterrupt" in messages["keyboard-interrupt"]


def test_an_id_owned_by_another_stored_file_is_refused(cli, db_url, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = tmp_path / "one" / "rule_a.py", tmp_path / "two" / "rule_a.py"
    first.write_text(user_rule("a"))
    second.write_text(user_rule("a").replace('"""a."""', '"""another a."""'))
    assert cli("rules", "add", first, "--no-measure").code == 0
    stored = _user_state(db_url)
    result = cli("rules", "add", second, "--no-measure")
    assert result.code == 2 and str(first) in result.err and str(second) in result.err
    assert _user_state(db_url) == stored
    again = cli("rules", "add", first, "--no-measure")  # the same file again: allowed, and writes nothing
    assert again.code == 0 and _user_state(db_url) == stored


def test_a_rule_file_that_hangs_at_import_is_cut_off(cli, db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("OPMAP_RULE_IMPORT_TIMEOUT", "1")
    rule = tmp_path / "rule_hang.py"
    rule.write_text("import time\ntime.sleep(20)\n")
    start = time.monotonic()
    result = cli("rules", "add", rule, "--no-measure")
    assert result.code == 2 and "did not finish within 1s" in result.err and time.monotonic() - start < 15
    assert _user_state(db_url)[1] == []


def test_a_rule_file_that_leaves_a_thread_running_is_refused(tmp_path):
    rule = tmp_path / "rule_thread.py"
    rule.write_text("import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), name='sleeper', daemon=False).start()\n"
                    + user_rule("t"))
    start = time.monotonic()
    code, out, err = finish(opmap("--db", tmp_path / "c.db", "rules", "add", rule, "--no-measure"), timeout=120)
    assert code == 2 and "sleeper" in err and "non-daemon threads" in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - start < 100, "the leftover thread did not keep opmap from exiting"


# -- one line, exit 2 ---------------------------------------------------------------------------------


def _one_line_2(result) -> str:
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    return lines[0]


def test_bad_paths_and_numbers_exit_2_in_one_line(cli, tmp_path, small_pt2):
    _one_line_2(cli("suggest", tmp_path / ("a" * 300 + ".pt2")))
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    from opmap.cli import main
    import io
    from contextlib import redirect_stderr

    for db in ("/proc/opmap-test/c.db", "/proc/opmap-test.db", str(a_file / "c.db")):
        err = io.StringIO()
        with redirect_stderr(err):
            code = main(["--db", db, "rules", "list"])
        assert code == 2 and len(err.getvalue().strip().splitlines()) == 1, (db, err.getvalue())
    assert "--seed" in _one_line_2(cli("verify", small_pt2, "--seed", str(2**70)))
    _one_line_2(cli("audit", str(2**70)))
    _one_line_2(cli("audit", "1", "--diff", str(2**70)))
    profile = tmp_path / "profile.json"
    profile.write_text("[1, 2, 3]")
    assert "not a device profile" in _one_line_2(cli("measure", "--profile", profile, "--op", "aten.relu.default"))
    assert "does not exist" in _one_line_2(cli("build", small_pt2, "-o", tmp_path / "missing" / "e.engine"))
    assert "does not exist" in _one_line_2(cli("suggest", small_pt2, "--html", tmp_path / "missing" / "p.html"))


def test_build_into_an_unwritable_place_leaves_nothing(cli, tmp_path, small_pt2):
    _one_line_2(cli("build", small_pt2, "-o", "/proc/opmap-test.engine"))
    assert not Path("/proc/opmap-test.engine").exists()


def test_a_run_is_recorded_only_after_the_html_is_written(cli, db_url, small_pt2, tmp_path):
    assert "cannot write /proc/opmap-plan.html" in _one_line_2(cli("suggest", small_pt2, "--html", "/proc/opmap-plan.html"))
    assert Catalog(db_url).run_count() == 0
    page = tmp_path / "plan.html"
    assert cli("suggest", small_pt2, "--html", page).code == 0
    assert Catalog(db_url).run_count() == 1 and "run 1" in page.read_text()


def test_a_read_only_catalog_fails_before_planning_in_one_line(cli, db_url, small_pt2):
    from opmap.cli import main

    assert cli("suggest", small_pt2).code == 0
    path = db_url.removeprefix("sqlite:///")
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        code = main(["--db", read_only, "suggest", str(small_pt2)])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and "read-only" in lines[0] and "INSERT" not in lines[0], err.getvalue()
    with redirect_stderr(io.StringIO()):
        assert main(["--db", read_only, "audit"]) == 0, "a read-only catalog can still be audited"
    assert Catalog(db_url).run_count() == 1


# -- Ctrl-C ---------------------------------------------------------------------------------------------


def test_ctrl_c_exits_130_with_no_partial_engine_and_no_stray_rows(tmp_path, detector_pt2):
    db = tmp_path / "c.db"
    code, _, err = finish(opmap("--db", db, "suggest", detector_pt2))  # a synced catalog with the true probe rows
    assert code in (0, 1), err
    before = counts(str(db))
    engine = tmp_path / "out" / "det.engine"
    engine.parent.mkdir()
    start = time.monotonic()
    code, _, err = finish(opmap("--db", db, "build", detector_pt2, "-o", engine))
    full = time.monotonic() - start
    assert code == 0, err
    for p in engine.parent.iterdir():
        p.unlink()
    interrupted = 0
    for fraction in (0.4, 0.6, 0.8):
        proc = opmap("--db", db, "build", detector_pt2, "-o", engine)
        time.sleep(full * fraction)
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(proc)
        assert "not installed" not in err
        if code == 0:  # it had finished: a whole engine and its sidecar
            assert engine.stat().st_size > 0 and json.loads(engine.with_suffix(".engine.json").read_text())
            for p in engine.parent.iterdir():
                p.unlink()
            continue
        interrupted += 1
        assert code == 130 and err.strip() == "interrupted", (fraction, code, err)
        left = sorted(p.name for p in engine.parent.iterdir())
        # Nothing, or (a Ctrl-C just after the renames) the whole pair: never a partial file, one alone, or a temporary.
        assert left in ([], ["det.engine", "det.engine.json"]), left
        if left:
            assert json.loads(engine.with_suffix(".engine.json").read_text())["engine_bytes"] == engine.stat().st_size
            for p in engine.parent.iterdir():
                p.unlink()
        assert counts(str(db)) == before, "no stray rows (probes, measurements, runs)"
    assert interrupted, "no attempt was interrupted before it finished: the test proved nothing"


def test_a_read_only_catalog_is_refused_before_work_on_every_backend(url):  # noqa: F811
    from opmap.service import open_catalog

    open_catalog(url)[0].close()
    if url.startswith("sqlite"):
        read_only = f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
    else:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET default_transaction_read_only = on'))
        engine.dispose()
        read_only = url
    with pytest.raises(CatalogError, match="is read-only") as info:
        open_catalog(read_only)
    assert "WHERE" not in str(info.value) and "[SQL" not in str(info.value), "the driver's message, never the SQL"
    cat, ruleset = open_catalog(read_only, write=False)  # reading still works
    assert "act/relu" in ruleset.strategies and cat.run_count() == 0
    cat.close()
