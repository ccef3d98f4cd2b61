"""Reliability under fuzzing (issue 21): the four cases that were internal errors or a half-write, and a fixed sample of
the campaign in bench/fuzz_archives.py (the whole campaign, 1,000 archives and 500 expressions and options, is
`make fuzz-archives`, bench/FUZZ_ARCHIVES.md)."""

import importlib.util
import json
import struct
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from opmap.planning.collect import select
from opmap.grammar import MAX_DEPTH, evaluate, parse_selection
from tests.conftest import ROOT
from tests.test_catalog import url  # noqa: F401  (the sqlite / postgres catalog fixture)
from tests.test_reliability import finish, opmap

spec = importlib.util.spec_from_file_location("fuzz_archives", ROOT / "bench" / "fuzz_archives.py")
fuzz = sys.modules.setdefault("fuzz_archives", importlib.util.module_from_spec(spec))
spec.loader.exec_module(fuzz)


def one_line(result, code: int = 2) -> str:
    assert result.code == code, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in lines[0] and "Traceback" not in result.err, result.err
    return lines[0]


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zf:
        items = [(i.filename, zf.read(i)) for i in zf.infolist()]
    dst.write_bytes(fuzz.rezip(edit(items)))
    return dst


# -- the four cases of the issue ---------------------------------------------------------------------------------------


def test_a_bad_crc_in_model_json_names_the_file_and_member(cli, detector_pt2, tmp_path):
    with zipfile.ZipFile(detector_pt2) as zf:
        info = zf.getinfo("detector/models/model.json")
    data = bytearray(detector_pt2.read_bytes())
    at = fuzz._central_record(bytes(data), info.filename)
    struct.pack_into("<I", data, at + 16, info.CRC ^ 0xFFFF)  # the directory's CRC no longer matches the bytes
    bad = tmp_path / "bad_crc.pt2"
    bad.write_bytes(bytes(data))
    line = one_line(cli("suggest", bad, "--no-record"))
    assert str(bad) in line and "detector/models/model.json" in line and "CRC" in line, line


def test_an_archive_without_a_root_folder_loads_and_one_without_archive_format_is_refused(cli, detector_pt2, tmp_path):
    # members at the top level: the older layout that was `KeyError: "There is no item named '/archive_format'"`
    flat = _rewrite(detector_pt2, tmp_path / "flat.pt2", lambda items: [(n.split("/", 1)[1], b) for n, b in items])
    same = cli("suggest", flat, "--no-record", "--json")
    want = cli("suggest", detector_pt2, "--no-record", "--json")
    assert same.code == want.code == 0, same
    chosen = lambda r: [(n["name"], (n["choice"] or {}).get("strategy")) for n in json.loads(r.out)["nodes"]]  # noqa: E731
    assert chosen(same) == chosen(want)
    # no archive_format member at all: refused (it is what tells a torch.export archive), in one line naming it
    missing = _rewrite(detector_pt2, tmp_path / "no_format.pt2", lambda items: [(n, b) for n, b in items if not n.endswith("/archive_format")])
    line = one_line(cli("suggest", missing, "--no-record"))
    assert str(missing) in line and "archive_format" in line


def test_deeply_nested_selections_are_one_line_errors(cli):
    deep = "not " * 1000 + "relu"  # the case (within the length limit)
    line = one_line(cli("rules", "list", "-k", deep))
    assert f"nested deeper than {MAX_DEPTH}" in line and len(line) < 400
    line = one_line(cli("rules", "list", "-m", "(" * 200 + "user" + ")" * 200))
    assert f"nested deeper than {MAX_DEPTH}" in line
    assert "4,096" in one_line(cli("rules", "list", "-k", "not " * 5000 + "x"))
    # within the limits: the same selection as without the nesting
    plain = cli("rules", "list", "-k", "relu", "--json")
    nested = cli("rules", "list", "-k", "not " * 40 + "relu", "--json")  # an even number of nots
    assert plain.code == nested.code == 0 and json.loads(plain.out) == json.loads(nested.out) != []


RULE_ONCE = '''
import os
from opmap import strategy

_TOKEN = os.path.join(os.path.dirname(__file__), "token")
with open(_TOKEN) as f:  # needs this file and deletes it: the import works once, not twice
    f.read()
os.remove(_TOKEN)


@strategy("mine/once", op="aten.relu.default", kind="direct")
def rule_once(node):
    """Loads the first time only."""
'''


def _dump(db_url: str) -> dict:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {t: sorted(map(repr, conn.execute(text(f'SELECT * FROM "{t}"')))) for t in inspect(conn).get_table_names()}
    finally:
        engine.dispose()


def _catalog_bytes(db_url: str) -> dict:
    if not db_url.startswith("sqlite:///"):
        return {}
    path = Path(db_url[len("sqlite:///"):])
    return {p.name: p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists()}


@pytest.mark.parametrize("measure", ["--no-measure", "--measure"])
def test_rules_add_of_a_rule_that_fails_on_reload_leaves_the_catalog_as_it_was(url, tmp_path, measure):  # noqa: F811
    rule = tmp_path / "rule_once.py"
    rule.write_text(RULE_ONCE)
    (tmp_path / "token").write_text("x")
    code, _, err = finish(opmap("--db", url, "rules", "list"), timeout=300)  # a catalog with its built-ins, closed
    assert code == 0, err
    before, files = _dump(url), _catalog_bytes(url)
    code, out, err = finish(opmap("--db", url, "rules", "add", rule, measure), timeout=300)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(rule) in err and "did not load back" in err and "nothing was stored" in err
    assert not (tmp_path / "token").exists(), "the rule file was not imported twice"
    assert _dump(url) == before and _catalog_bytes(url) == files


def test_rules_add_still_adds_a_rule_that_loads_twice(cli, db_url, tmp_path):
    rule = tmp_path / "rule_twice.py"
    rule.write_text(RULE_ONCE.replace("os.remove(_TOKEN)", "").replace("mine/once", "mine/twice"))
    (tmp_path / "token").write_text("x")
    result = cli("rules", "add", rule, "--no-measure")
    assert result.code == 0 and "mine/twice" in result.out, result
    assert "mine/twice" in cli("rules", "list", "-m", "user").out


# -- the grammar ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expr, words, want", [
    ("a", {"a"}, True), ("not a", {"a"}, False), ("a and b", {"a"}, False), ("a or b", {"b"}, True),
    ("not a and b", {"b"}, True), ("not (a and b)", {"a", "b"}, False), ("a or b and c", {"a"}, True),
    ("(a or b) and c", {"a"}, False), ("not not a", {"a"}, True), ("", set(), True), ("((a))", {"a"}, True),
])
def test_selection_grammar(expr, words, want):
    assert evaluate(parse_selection(expr, "-k"), words.__contains__) is want


@pytest.mark.parametrize("expr", ["a b", "(a", "a)", "and", "a and", "not", "()", "a or or b", ")("])
def test_selection_grammar_refuses(expr):
    with pytest.raises(Exception) as info:
        select([], expr)
    assert type(info.value).__name__ == "OpmapError" and "bad -k expression" in str(info.value)


@pytest.mark.parametrize("argv, needle", [
    (["suggest", "{model}", "--bound", "n=\u00b2"], "--bound"),
    (["suggest", "{model}", "--bound", "n=" + "9" * 5000], "4,096"),
    (["suggest", "{model}", "--bound", "n=1_0"], "--bound"),
    (["suggest", "{model}", "--input-shape", "x=" + "x".join(["2147483647"] * 3)], "elements"),
    (["suggest", "{model}", "--dynamic", "x:0=1..\u0663\u0663"], "--dynamic"),
    (["build", "{model}", "-o", "{out}", "--shape", "image=1x3x32x32:1x3x32x32:1x3x32x" + "9" * 30], "--shape"),
    (["verify", "{model}", "--point", "image=1x3x32x\u0663"], "--point"),
    (["--db", "sqlite:///x.db\x00y", "rules", "list"], "NUL"),
])
def test_option_texts_are_one_line_errors(cli, detector_pt2, tmp_path, argv, needle):
    args = [a.replace("{model}", str(detector_pt2)).replace("{out}", str(tmp_path / "e.engine")) for a in argv]
    assert needle in one_line(cli(*args))


# -- a fixed sample of the campaign ---------------------------------------------------------------------------------------


def test_a_fixed_sample_of_the_fuzz_campaign(tmp_path, monkeypatch, detector_pt2):
    monkeypatch.setattr(fuzz, "base_archive", lambda _folder: detector_pt2.read_bytes())
    monkeypatch.setenv("OPMAP_CACHE_DIR", str(tmp_path / "cache"))
    results = fuzz.campaign(tmp_path, archives=80, texts=60, inputs=21, rules=24, processes=2, seed=21)
    table = fuzz.summary(results)
    failures = [f"{o.id} ({o.what}): {o.problems}" for outcomes in results.values() for o in outcomes if not o.ok]
    assert not failures, failures
    assert table["archive"]["cases"] == 80 and table["archive"]["exit 0"] > 0 and table["archive"]["exit 2"] > 0
    assert table["option"]["exit 2"] > 0 and table["rules"]["exit 0"] > 0 and table["process"]["cases"] == 2
