"""Reliability under fuzzing: damaged model archives, input files, rule files, and every text the CLI parses.

Seeded and reproducible: case ``i`` of a campaign is drawn from ``random.Random(f"{seed}:{kind}:{i}")`` alone, so one
case can be rerun by itself (``--only KIND:I``). The base is the bundled detector archive (``examples/detector.py``).

Every case runs **in-process** (``opmap.cli.main`` with a catalog in a temporary folder) and must end with exit 0, 1 or
2, stderr at most one line for exit 2, no traceback, within a time limit (SIGALRM), and no file written outside the
catalog (the folder holding the case, the working directory and the cache folder are listed before and after). A small
sample runs as real processes (``python -m opmap.cli``) to check the exit code and stderr of the real thing.

    python bench/fuzz_archives.py                 # 1,000 archive cases + 500 expression/option cases + files + rules
    python bench/fuzz_archives.py --archives 200 --texts 100 --no-write
    python bench/fuzz_archives.py --only archive:17   # one case, with its output

Writes bench/FUZZ_ARCHIVES.md (the counts, and any failing case with its id and one line).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASE_SECONDS = 60  # a case running longer is a hang
CATALOG_FILES = ("catalog.db", "catalog.db-wal", "catalog.db-shm", "catalog.db-journal")


class Hang(BaseException):
    """Raised by SIGALRM inside a case that ran past CASE_SECONDS (a BaseException: the CLI's handlers let it through)."""


@dataclass
class Case:
    id: str  # KIND:I
    what: str  # the mutation, in words
    argv: list[str]  # CLI arguments after --db; "{file}" stands for the case's file
    file: bytes | None = None  # the file's bytes, written as {file}
    suffix: str = ".pt2"
    extra: dict[str, bytes] = field(default_factory=dict)  # more files beside it (rule folders)


@dataclass
class Outcome:
    id: str
    what: str
    code: int | None
    err: str
    seconds: float
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# -- the base archive ---------------------------------------------------------------------------------------------------


def base_archive(folder: Path) -> bytes:
    path = ROOT / "examples" / "detector.pt2"
    if not path.is_file():
        import torch

        from examples.detector import export_detector

        path = folder / "detector.pt2"
        torch.export.save(export_detector(), str(path))
    return path.read_bytes()


def members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


def rezip(items: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", compression) as zf:
        warnings.filterwarnings("ignore", message="Duplicate name")  # the duplicated-member cases, written on purpose
        for name, body in items:
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, body)
    return buf.getvalue()


def _data_start(data: bytes, info: zipfile.ZipInfo) -> int:
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len


# -- hostile JSON values ------------------------------------------------------------------------------------------------


def _nest(depth: int, leaf: Any = 1, as_dict: bool = False) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


def hostile_value(rng: random.Random) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: None, lambda: True, lambda: False, lambda: 0, lambda: -1, lambda: -(2 ** 63), lambda: 2 ** 63,
        lambda: 2 ** 64 + 1, lambda: 10 ** 300, lambda: -(10 ** 300), lambda: 1.5, lambda: 1e308, lambda: -1e308,
        lambda: float("nan"), lambda: float("inf"), lambda: float("-inf"), lambda: "", lambda: "x" * rng.choice((300, 70_000)),
        lambda: "torch.ops.aten.frobnicate.default", lambda: "torch.ops.nosuchns.op.default", lambda: "aten::nope",
        lambda: "s0 + s1", lambda: "Symbol('s0')", lambda: "\u202e\u0000\u00e9\U0001f4a5\u4e2d", lambda: "\ud800",
        lambda: "1", lambda: "NaN", lambda: [], lambda: {}, lambda: [1, "a", None], lambda: {"unknown": 1},
        lambda: _nest(rng.choice((30, 200, 900))), lambda: _nest(rng.choice((30, 200, 900)), as_dict=True),
        lambda: {"as_int": 2 ** 62}, lambda: {"as_expr": {"expr_str": "s0*2", "hint": None}}, lambda: ["s0"] * 50,
    ]
    return rng.choice(choices)()


def json_paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, path + (index,))


def _set(doc: Any, path: tuple, fn: Callable[[Any, Any], None]) -> Any:
    if not path:
        holder = [doc]
        fn(holder, 0)
        return holder[0]
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    fn(parent, path[-1])
    return doc


def mutate_json(doc: Any, rng: random.Random) -> tuple[Any, str]:
    paths = list(json_paths(doc))
    path = rng.choice(paths)
    where = "/".join(map(str, path))[-90:] or "(root)"
    op = rng.random()
    if op < 0.7:
        value = hostile_value(rng)
        return _set(doc, path, lambda p, k: p.__setitem__(k, value)), f"{where} = {json.dumps(value)[:40]}"
    if op < 0.85 and path:
        return _set(doc, path, lambda p, k: p.pop(k)), f"{where} removed"
    if op < 0.92 and path and isinstance(path[-1], str):
        def rename(p, k):
            p[k + "_"] = p.pop(k)
        return _set(doc, path, rename), f"{where} renamed"
    other = _get(doc, rng.choice(paths))
    twin = copy.deepcopy(other)
    return _set(doc, path, lambda p, k: p.__setitem__(k, twin)), f"{where} = another field's value"


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


# -- archive cases ------------------------------------------------------------------------------------------------------

JSON_MEMBERS = ("models/model.json", "data/weights/model_weights_config.json", "data/constants/model_constants_config.json")


def layout_cases(base: bytes) -> list[tuple[str, bytes]]:
    """Older and newer archive layouts and structural variants: fixed, the first cases of every campaign."""
    items = [(i.filename, body) for i, body in members(base)]
    root = items[0][0].split("/", 1)[0]

    def without(*names):
        return [(n, b) for n, b in items if n.split("/", 1)[1] not in names]

    def replaced(name, body):
        return [(n, body if n == f"{root}/{name}" else b) for n, b in items]

    def edited(name, fn):
        body = dict(items)[f"{root}/{name}"]
        doc = json.loads(body)
        fn(doc)
        return replaced(name, json.dumps(doc).encode())

    model = json.loads(dict(items)[f"{root}/models/model.json"])
    legacy = [(f"{root}/serialized_exported_program.json", dict(items)[f"{root}/models/model.json"]),
              (f"{root}/serialized_state_dict.pt", b"\x80\x02}q\x00."), (f"{root}/serialized_constants.pt", b"\x80\x02}q\x00."),
              (f"{root}/serialized_example_inputs.pt", b"\x80\x02}q\x00."), (f"{root}/version", b"0")]
    return [
        ("no archive_format (older layout)", rezip(without("archive_format"))),
        ("no archive_format, no archive_version", rezip(without("archive_format", "archive_version"))),
        ("archive_format 'pt3' (newer)", rezip(replaced("archive_format", b"pt3"))),
        ("archive_format empty", rezip(replaced("archive_format", b""))),
        ("archive_version 99 (newer)", rezip(replaced("archive_version", b"99"))),
        ("archive_version 0 (older)", rezip(replaced("archive_version", b"0"))),
        ("archive_version not a number", rezip(replaced("archive_version", b"\xff\xfe"))),
        ("byteorder big", rezip(replaced("byteorder", b"big"))),
        ("byteorder missing", rezip(without("byteorder"))),
        ("no .data/version", rezip(without(".data/version"))),
        ("members at the top level (no root folder)", rezip([(n.split("/", 1)[1], b) for n, b in items])),
        ("root folder renamed", rezip([("other/" + n.split("/", 1)[1], b) for n, b in items])),
        ("two root folders", rezip(items + [("second/archive_format", b"pt2")])),
        ("nested one level deeper", rezip([("outer/" + n, b) for n, b in items])),
        ("legacy layout (serialized_exported_program.json)", rezip(legacy)),
        ("models/model.json renamed models/other.json",
         rezip([(n.replace("models/model.json", "models/other.json"), b) for n, b in items])),
        ("a second program models/extra.json", rezip(items + [(f"{root}/models/extra.json", dict(items)[f"{root}/models/model.json"])])),
        ("schema_version 99.0 (newer)", rezip(edited("models/model.json", lambda d: d.__setitem__("schema_version", {"major": 99, "minor": 0})))),
        ("schema_version 1.0 (older)", rezip(edited("models/model.json", lambda d: d.__setitem__("schema_version", {"major": 1, "minor": 0})))),
        ("schema_version missing", rezip(edited("models/model.json", lambda d: d.pop("schema_version", None)))),
        ("torch_version missing", rezip(edited("models/model.json", lambda d: d.pop("torch_version", None)))),
        ("every member deflated", rezip(items, zipfile.ZIP_DEFLATED)),
        ("every member bzip2", rezip(items, zipfile.ZIP_BZIP2)),
        ("every member lzma", rezip(items, zipfile.ZIP_LZMA)),
        ("no sample inputs", rezip(without("data/sample_inputs/model.pt"))),
        ("no constants config", rezip(without("data/constants/model_constants_config.json"))),
        ("no weights config", rezip(without("data/weights/model_weights_config.json"))),
        ("no weights at all", rezip([(n, b) for n, b in items if "/data/weights/" not in n])),
        ("model.json empty", rezip(replaced("models/model.json", b""))),
        ("model.json is 'null'", rezip(replaced("models/model.json", b"null"))),
        ("model.json is a list", rezip(replaced("models/model.json", b"[]"))),
        ("model.json is UTF-16", rezip(replaced("models/model.json", json.dumps(model).encode("utf-16")))),
        ("model.json with a BOM", rezip(replaced("models/model.json", b"\xef\xbb\xbf" + json.dumps(model).encode()))),
        ("model.json nested 100,000 deep", rezip(replaced("models/model.json", b"[" * 100_000 + b"]" * 100_000))),
        ("model.json with duplicate keys", rezip(replaced("models/model.json", b'{"graph_module": 1, ' + json.dumps(model).encode()[1:]))),
        ("a zip comment", _with_comment(rezip(items), b"comment " * 100)),
        ("empty zip", rezip([])),
        ("an unknown extra member", rezip(items + [(f"{root}/extra/\u00e9\U0001f4a5.bin", os.urandom(64))])),
        ("an empty directory entry", rezip(items + [(f"{root}/data/empty/", b"")])),
    ]


def _with_comment(data: bytes, comment: bytes) -> bytes:
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.comment = comment
    return buf.getvalue()


def archive_case(base: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of the base archive."""
    entries = members(base)
    names = [info.filename for info, _ in entries]
    root = names[0].split("/", 1)[0]
    kind = rng.choices(["flip", "flip-crc-ok", "crc", "truncate", "drop", "duplicate", "swap", "json", "json", "json",
                        "json", "header"], k=1)[0]
    if kind == "flip":  # bytes flipped inside one member's stored data: its CRC no longer matches
        info, body = rng.choice([(i, b) for i, b in entries if b])
        data = bytearray(base)
        start = _data_start(base, info)
        spots = sorted({start + rng.randrange(len(body)) for _ in range(rng.choice((1, 1, 3, 16)))})
        for at in spots:
            data[at] ^= rng.randrange(1, 256)
        return f"flip {len(spots)} byte(s) in {info.filename} (CRC not updated)", bytes(data)
    if kind == "flip-crc-ok":  # the same, rewritten with a matching CRC: only the content is wrong
        index = rng.randrange(len(entries))
        info, body = entries[index]
        changed = bytearray(body)
        for _ in range(rng.choice((1, 2, 8))):
            if changed:
                changed[rng.randrange(len(changed))] ^= rng.randrange(1, 256)
        items = [(i.filename, bytes(changed) if k == index else b) for k, (i, b) in enumerate(entries)]
        return f"flip bytes in {info.filename} (CRC updated)", rezip(items)
    if kind == "crc":  # the CRC field itself, in the central directory or the local header or both
        info, _ = rng.choice(entries)
        data = bytearray(base)
        where = rng.choice(("local", "central", "both"))
        crc = rng.randrange(1 << 32)
        if where in ("local", "both"):
            struct.pack_into("<I", data, info.header_offset + 14, crc)
        if where in ("central", "both"):
            offset = _central_record(base, info.filename)
            if offset is not None:
                struct.pack_into("<I", data, offset + 16, crc)
        return f"CRC of {info.filename} set to {crc:#010x} ({where})", bytes(data)
    if kind == "truncate":
        cut = rng.choice((rng.randrange(len(base)), len(base) - rng.randrange(1, 200), rng.randrange(64)))
        return f"truncated to {cut} of {len(base)} bytes", base[:cut]
    if kind == "drop":
        index = rng.randrange(len(entries))
        items = [(i.filename, b) for k, (i, b) in enumerate(entries) if k != index]
        return f"member {names[index]} dropped", rezip(items)
    if kind == "duplicate":
        index = rng.randrange(len(entries))
        items = [(i.filename, b) for i, b in entries]
        body = rng.choice((items[index][1], b"", os.urandom(32)))
        items.insert(rng.randrange(len(items) + 1), (names[index], body))
        return f"member {names[index]} duplicated", rezip(items)
    if kind == "swap":
        a, b = rng.sample(range(len(entries)), 2)
        items = [(i.filename, body) for i, body in entries]
        (na, ba), (nb, bb) = items[a], items[b]
        if rng.random() < 0.5:
            items[a], items[b] = (na, bb), (nb, ba)
            return f"contents of {na} and {nb} swapped", rezip(items)
        items[a], items[b] = items[b], items[a]
        return f"order of {na} and {nb} swapped", rezip(items)
    if kind == "json":
        target = rng.choices(JSON_MEMBERS, weights=(6, 3, 1), k=1)[0]
        full = f"{root}/{target}"
        doc = json.loads(dict((i.filename, b) for i, b in entries)[full])
        edits = []
        for _ in range(rng.choice((1, 1, 1, 2, 4))):
            doc, what = mutate_json(doc, rng)
            edits.append(what)
        text = json.dumps(doc, allow_nan=True).encode()
        items = [(i.filename, text if i.filename == full else b) for i, b in entries]
        return f"{target}: {'; '.join(edits)}", rezip(items)
    # header: a local or central header field overwritten (sizes, method, flags, name length, offsets)
    info, _ = rng.choice(entries)
    data = bytearray(base)
    field_, width, value = rng.choice([
        ("method", 2, rng.choice((8, 12, 14, 99, 0xFFFF))), ("flags", 2, rng.choice((1, 8, 0x40, 0xFFFF))),
        ("compressed size", 4, rng.choice((0, 0xFFFFFFFF, rng.randrange(1 << 32)))),
        ("size", 4, rng.choice((0, 0xFFFFFFFF, rng.randrange(1 << 32)))), ("name length", 2, rng.choice((0, 0xFFFF))),
        ("offset", 4, rng.choice((0, 0xFFFFFFFF, rng.randrange(len(base))))),
    ])
    central = _central_record(base, info.filename)
    if central is None:
        return "no central record found (unchanged)", base
    offsets = {"method": 10, "flags": 8, "compressed size": 20, "size": 24, "name length": 28, "offset": 42}
    struct.pack_into("<H" if width == 2 else "<I", data, central + offsets[field_], value)
    return f"central header of {info.filename}: {field_} = {value:#x}", bytes(data)


def _central_record(data: bytes, name: str) -> int | None:
    encoded = name.encode()
    at = 0
    while True:
        at = data.find(b"PK\x01\x02", at)
        if at < 0:
            return None
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len] == encoded:
            return at
        at += 4


def archive_cases(base: bytes, n: int, seed: int, command: list[str]) -> list[Case]:
    cases = []
    fixed = layout_cases(base)
    for i in range(n):
        if i < len(fixed):
            what, data = fixed[i]
        else:
            what, data = archive_case(base, random.Random(f"{seed}:archive:{i}"))
        cases.append(Case(f"archive:{i}", what, [*command[:1], "{file}", *command[1:]], data))
    return cases


# -- --inputs / --data files ----------------------------------------------------------------------------------------------


def inputs_cases(n: int, seed: int) -> list[Case]:
    """torch.save'd input dicts, good and hostile, for ``calibrate --data`` and ``verify --inputs``."""
    import torch

    def saved(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    good = saved({"image": torch.randn(1, 3, 32, 32)})
    values: list[tuple[str, Callable[[random.Random], bytes]]] = [
        ("a good input dict", lambda r: good),
        ("a list of good dicts", lambda r: saved([{"image": torch.randn(1, 3, 32, 32)}] * 2)),
        ("wrong name", lambda r: saved({"x": torch.randn(1, 3, 32, 32)})),
        ("wrong dtype", lambda r: saved({"image": torch.zeros(1, 3, 32, 32, dtype=torch.int64)})),
        ("wrong rank", lambda r: saved({"image": torch.randn(3, 32)})),
        ("a zero-size tensor", lambda r: saved({"image": torch.randn(0, 3, 32, 32)})),
        ("NaN and inf values", lambda r: saved({"image": torch.full((1, 3, 32, 32), float("nan"))})),
        ("not a dict", lambda r: saved([1, 2, 3])),
        ("a dict of strings", lambda r: saved({"image": "x"})),
        ("nested dicts", lambda r: saved({"image": {"image": torch.randn(1)}})),
        ("an empty dict", lambda r: saved({})),
        ("an empty list", lambda r: saved([])),
        ("None", lambda r: saved(None)),
        ("a pickled object", lambda r: saved(zipfile.ZipInfo("x"))),
        ("not a file torch wrote", lambda r: os.urandom(r.randrange(1, 4096))),
        ("empty", lambda r: b""),
        ("a flipped byte", lambda r: _flip(good, r)),
        ("truncated", lambda r: good[: r.randrange(len(good))]),
        ("a model archive instead", lambda r: rezip([("a/archive_format", b"pt2")])),
        ("a 1,000-long list of dicts", lambda r: saved([{"image": torch.randn(1, 3, 32, 32)}] * 1000)),
        ("a non-contiguous view", lambda r: saved({"image": torch.randn(1, 3, 64, 32)[:, :, ::2]})),
    ]
    cases = []
    for i in range(n):
        rng = random.Random(f"{seed}:inputs:{i}")
        what, make = values[i] if i < len(values) else rng.choice(values)
        # every fourth through verify --inputs (which builds the network first: slower), the rest through calibrate --data
        argv = ["verify", "{model}", "--inputs", "{file}"] if i % 4 == 3 else ["calibrate", "{model}", "--data", "{file}"]
        cases.append(Case(f"inputs:{i}", what, argv, make(rng), suffix=".pt"))
    return cases


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 4, 32))):
        out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    return bytes(out)


# -- rule files -----------------------------------------------------------------------------------------------------------

GOOD_RULE = '''from opmap import strategy

@strategy("fuzz/relu", op="aten.relu.default", kind="direct")
def rule_relu(node):
    """A relu."""
'''


def rule_cases(n: int, seed: int) -> list[Case]:
    bodies: list[tuple[str, Callable[[random.Random], bytes]]] = [
        ("a good rule", lambda r: GOOD_RULE.encode()),
        ("a syntax error", lambda r: b"def broken(:\n"),
        ("not UTF-8", lambda r: b"\xff\xfe\x00x = 1\n"),
        ("NUL bytes", lambda r: b"x = 1\x00\n"),
        ("empty", lambda r: b""),
        ("raises at import", lambda r: b"raise ValueError('no')\n"),
        ("sys.exit at import", lambda r: b"import sys\nsys.exit(3)\n"),
        ("KeyboardInterrupt at import", lambda r: b"raise KeyboardInterrupt\n"),
        ("RecursionError at import", lambda r: b"def f():\n    return f()\nf()\n"),
        ("MemoryError at import", lambda r: b"raise MemoryError\n"),
        ("deep nesting", lambda r: b"x = " + b"(" * 5000 + b"1" + b")" * 5000 + b"\n"),
        ("unknown op", lambda r: GOOD_RULE.replace("aten.relu.default", "aten.frobnicate.default").encode()),
        ("unknown kind", lambda r: GOOD_RULE.replace('kind="direct"', 'kind="sideways"').encode()),
        ("an empty id", lambda r: GOOD_RULE.replace('"fuzz/relu"', '""').encode()),
        ("a huge id", lambda r: GOOD_RULE.replace('"fuzz/relu"', '"' + "x" * 100_000 + '"').encode()),
        ("a unicode id", lambda r: GOOD_RULE.replace('"fuzz/relu"', '"fuzz/\u202e\U0001f4a5"').encode()),
        ("a non-string op", lambda r: GOOD_RULE.replace('"aten.relu.default"', "12").encode()),
        ("a non-string id", lambda r: GOOD_RULE.replace('"fuzz/relu"', "None").encode()),
        ("duplicate ids", lambda r: (GOOD_RULE + GOOD_RULE.replace("def rule_relu", "def rule_relu2")).encode()),
        ("a very long file", lambda r: (GOOD_RULE + "# pad\n" * 200_000).encode()),
        ("a line of 1 MB", lambda r: (GOOD_RULE + "x = '" + "y" * (1 << 20) + "'\n").encode()),
        ("random bytes", lambda r: os.urandom(r.randrange(1, 2048))),
        ("a flipped byte", lambda r: _flip(GOOD_RULE.encode(), r)),
        ("truncated", lambda r: GOOD_RULE.encode()[: r.randrange(len(GOOD_RULE))]),
    ]
    cases = []
    for i in range(n):
        rng = random.Random(f"{seed}:rules:{i}")
        what, make = bodies[i] if i < len(bodies) else rng.choice(bodies)
        body = make(rng).replace(b"fuzz/relu", f"fuzz/case{i}".encode())  # an id of its own: cases do not clash
        cases.append(Case(f"rules:{i}", what, ["rules", "add", "{file}", "--no-measure"], body, suffix=".py"))
    return cases


# -- expressions and options ----------------------------------------------------------------------------------------------

WORDS = ["nonzero", "relu", "plugin", "direct", "user", "builtin", "approximate", "conv", "aten", "x", "and", "or", "not",
         "(", ")", "((", "))", "True", "False", "__import__", "'", '"', ";", "\\", "\u00e9", "\U0001f4a5", "\x00", "-", "*", ""]


def hostile_text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.15:
        depth = rng.choice((50, 200, 1000, 5000, 50_000))
        return "not " * depth + "x" if rng.random() < 0.5 else "(" * depth + "x" + ")" * depth
    if pick < 0.2:
        return rng.choice(("x", "a b", "x y z")) * rng.choice((1000, 100_000))
    if pick < 0.25:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 12)))


def hostile_dims(rng: random.Random) -> str:
    parts = [rng.choice(("1", "0", "-1", "3", "32", "2147483648", "9" * 30, "9" * 5000, "\u0663", "\u00b2", "1_0", " 4",
                         "+4", "0x10", "1e3", "", "x", "nan", "1.5")) for _ in range(rng.choice((1, 2, 4, 9, 40)))]
    return "x".join(parts)


def option_case(rng: random.Random) -> tuple[str, list[str]]:
    flag = rng.choice(("-k", "-m", "-k-test", "--shape", "--bound", "--dynamic", "--point", "--input-shape", "--db"))
    if flag in ("-k", "-m"):
        text = hostile_text(rng)
        return f"rules list {flag} {text[:40]!r}", ["rules", "list", flag, text]
    if flag == "-k-test":
        text = hostile_text(rng)
        return f"measure -k {text[:40]!r}", ["measure", "-k", text, "--seeds", "1", "--op", "aten.nosuch.default"]
    name = rng.choice(("image", "x", "", "image.0", "\u00e9", "a" * 5000, "image=image"))
    if flag == "--shape":
        text = f"{name}={hostile_dims(rng)}:{hostile_dims(rng)}:{hostile_dims(rng)}" if rng.random() < 0.8 else hostile_text(rng)
        return f"build --shape {text[:40]!r}", ["build", "{model}", "-o", "{out}/e.engine", "--shape", text]
    if flag == "--bound":
        value = rng.choice(("64", "0", "-1", "9" * 5000, "\u00b2", "\u0663", "1_0", "", "x", " 5", "2" * 19))
        text = f"{name}={value}" if rng.random() < 0.8 else hostile_text(rng)
        return f"suggest --bound {text[:40]!r}", ["suggest", "{model}", "--no-record", "--json", "--bound", text]
    if flag == "--dynamic":
        dim = rng.choice(("0", "9" * 30, "\u0663", "-1"))
        text = f"{name}:{dim}={hostile_dims(rng).replace('x', '..', 1)}" if rng.random() < 0.8 else hostile_text(rng)
        return f"suggest --dynamic {text[:40]!r}", ["suggest", "{model}", "--no-record", "--json", "--dynamic", text]
    if flag == "--point":
        text = f"{name}={hostile_dims(rng)}" if rng.random() < 0.8 else hostile_text(rng)
        return f"verify --point {text[:40]!r}", ["verify", "{model}", "--point", text]
    if flag == "--input-shape":
        dtype = rng.choice(("", ":float32", ":int64", ":bool", ":nosuch", ":__class__", ":" + "x" * 300, ":float32:float32"))
        text = f"{name}={hostile_dims(rng)}{dtype}" if rng.random() < 0.8 else hostile_text(rng)
        return f"suggest --input-shape {text[:40]!r}", ["suggest", "{model}", "--no-record", "--json", "--input-shape", text]
    url = rng.choice((
        "sqlite://", "sqlite:///{out}/x.db?mode=ro", "sqlite:////nonexistent/dir/x.db", "nosuch://x", "://", "sqlite:",
        "postgresql://u:p@127.0.0.1:1/db?connect_timeout=2", "mysql://x", "sqlite:///" + "a" * 5000, "{out}", "",
        "sqlite:///{out}/\u00e9\U0001f4a5.db", "sqlite:///{out}/x.db\x00y", "file:///{out}/x.db", "sqlite:///:memory:",
        "postgresql://[::1", "sqlite:///{out}/x.db?timeout=-1", "sqlite:///{out}/x.db?uri=true&mode=rwc",
        "sqlite+pysqlite:///{out}/y.db", "sqlite:///{out}/" + "%" * 10, hostile_text(rng),
    ))
    return f"--db {url[:50]!r} rules list", ["--db=" + url, "rules", "list"]


def option_cases(n: int, seed: int) -> list[Case]:
    cases = []
    for i in range(n):
        what, argv = option_case(random.Random(f"{seed}:option:{i}"))
        cases.append(Case(f"option:{i}", what, argv))
    return cases


# -- running ------------------------------------------------------------------------------------------------------------


def _listing(*folders: Path) -> dict[str, tuple[int, int]]:
    seen = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                stat = path.stat()
                seen[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return seen


def _alarm(_signum, _frame):
    raise Hang()


class Runner:
    """Cases in-process, one catalog for all (in ``work/catalog.db``), a fresh folder per case."""

    def __init__(self, work: Path, model: Path) -> None:
        self.work, self.model = work, model
        self.catalog = work / "catalog.db"
        self.cache = work / "cache"
        os.environ["OPMAP_CACHE_DIR"] = str(self.cache)
        os.environ["OPMAP_RULE_IMPORT_TIMEOUT"] = "20"

    def prepare(self, case: Case) -> tuple[Path, list[str]]:
        folder = Path(tempfile.mkdtemp(prefix="case-", dir=self.work))
        path = folder / f"case{case.suffix}"
        if case.file is not None:
            path.write_bytes(case.file)
        out = folder / "out"
        out.mkdir()
        (folder / "cwd").mkdir()  # the working directory: a relative --db path lands here
        argv = [a.replace("{file}", str(path)).replace("{model}", str(self.model)).replace("{out}", str(out)) for a in case.argv]
        if not any(a.startswith("--db") for a in argv):
            argv = ["--db", str(self.catalog), *argv]
        return folder, argv

    def run(self, case: Case) -> Outcome:
        from opmap.cli import main

        folder, argv = self.prepare(case)
        cwd = folder / "cwd"
        watched = (folder, self.model.parent, self.work)
        before = _listing(*watched)
        stdout, stderr = io.StringIO(), io.StringIO()
        here = os.getcwd()
        start = time.monotonic()
        problems: list[str] = []
        code = None
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(CASE_SECONDS)
        try:
            os.chdir(cwd)
            with redirect_stdout(stdout), redirect_stderr(stderr):
                code = main(argv)
        except Hang:
            problems.append(f"hang (over {CASE_SECONDS}s)")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a finding
            problems.append(f"escaped main: {type(exc).__name__}: {str(exc)[:120]}")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            os.chdir(here)
        seconds = time.monotonic() - start
        err = stderr.getvalue()
        problems += judge(code, err, stdout.getvalue())
        after = _listing(*watched)
        written = sorted(p for p in after if before.get(p) != after[p]
                         and not p.startswith((str(folder / "out") + "/", str(self.cache) + "/")))
        catalogs = {str(self.catalog)} | {str(cwd / a[len("--db="):]) for a in argv if a.startswith("--db=") and "://" not in a}
        written = [p for p in written if not any(p in (c, c + "-wal", c + "-shm", c + "-journal") for c in catalogs)]
        if written:
            problems.append(f"wrote {', '.join(written[:3])}")
        _rmtree(folder)
        return Outcome(case.id, case.what, code, err, seconds, problems)


def judge(code: int | None, err: str, out: str) -> list[str]:
    problems = []
    if code is not None and code not in (0, 1, 2):
        problems.append(f"exit {code}: {err.strip()[:300]}")
    lines = err.strip().splitlines()
    if code == 2 and len(lines) != 1:
        problems.append(f"exit 2 with {len(lines)} lines on stderr: {err[:300]!r}")
    if "Traceback" in err or "Traceback" in out:
        problems.append("traceback")
    return problems


def _rmtree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def run_in_processes(runner: Runner, cases: list[Case]) -> list[Outcome]:
    """The same cases as real processes: exit code and stderr of ``python -m opmap.cli``, with a wall-clock limit."""
    results = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for case in cases:
        folder, argv = runner.prepare(case)
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "opmap.cli", *argv], cwd=folder / "cwd", env=env, capture_output=True,
                                  text=True, timeout=CASE_SECONDS * 3)
            code, err, out, problems = proc.returncode, proc.stderr, proc.stdout, []
        except subprocess.TimeoutExpired:
            code, err, out, problems = None, "", "", ["hang (real process)"]
        problems += judge(code, err, out)
        results.append(Outcome(case.id + "/process", case.what, code, err, time.monotonic() - start, problems))
        _rmtree(folder)
    return results


# -- the campaign ------------------------------------------------------------------------------------------------------


def campaign(work: Path, archives: int, texts: int, inputs: int, rules: int, processes: int, seed: int,
             only: str | None = None, on_case: Callable[[Outcome], None] | None = None) -> dict[str, list[Outcome]]:
    saved = dict(os.environ)
    try:
        return _campaign(work, archives, texts, inputs, rules, processes, seed, only, on_case)
    finally:  # the runner sets the cache folder and the import limit for its cases
        os.environ.clear()
        os.environ.update(saved)


def _campaign(work: Path, archives: int, texts: int, inputs: int, rules: int, processes: int, seed: int,
              only: str | None, on_case: Callable[[Outcome], None] | None) -> dict[str, list[Outcome]]:
    base = base_archive(work)
    model = work / "model" / "detector.pt2"
    model.parent.mkdir(exist_ok=True)
    model.write_bytes(base)
    runner = Runner(work, model)
    groups = {
        "archive": archive_cases(base, archives, seed, ["suggest", "--no-record", "--json"]),
        "option": option_cases(texts, seed),
        "inputs": inputs_cases(inputs, seed),
        "rules": rule_cases(rules, seed),
    }
    if only:
        groups = {k: [c for c in v if c.id == only] for k, v in groups.items()}
    results: dict[str, list[Outcome]] = {}
    for name, cases in groups.items():
        results[name] = []
        for case in cases:
            outcome = runner.run(case)
            results[name].append(outcome)
            if on_case:
                on_case(outcome)
    if processes and not only:
        rng = random.Random(f"{seed}:processes")
        runnable = {k: [c for c in v if not any("\x00" in a for a in c.argv)] for k, v in groups.items()}  # argv holds no NUL
        sample = [c for cases in runnable.values() for c in rng.sample(cases, min(len(cases), max(1, processes // 4)))]
        results["process"] = run_in_processes(runner, sample[:processes])
    return results


def summary(results: dict[str, list[Outcome]]) -> dict[str, dict[str, Any]]:
    table = {}
    for name, outcomes in results.items():
        codes = Counter(o.code for o in outcomes)
        table[name] = {
            "cases": len(outcomes), "exit 0": codes[0], "exit 1": codes[1], "exit 2": codes[2],
            "exit 3": sum(1 for o in outcomes if o.code == 3), "other exit": sum(1 for o in outcomes if o.code not in (0, 1, 2, 3)),
            "hangs": sum(1 for o in outcomes if any("hang" in p for p in o.problems)),
            "tracebacks": sum(1 for o in outcomes if "traceback" in o.problems),
            "writes outside the catalog": sum(1 for o in outcomes if any(p.startswith("wrote") for p in o.problems)),
            "failed": sum(1 for o in outcomes if not o.ok),
            "slowest s": round(max((o.seconds for o in outcomes), default=0.0), 2),
            "total s": round(sum(o.seconds for o in outcomes), 1),
        }
    return table


TITLES = {"archive": "damaged detector archives (`suggest`)", "option": "expressions and options",
          "inputs": "`--data` / `--inputs` files (`calibrate`, `verify`)", "rules": "rule files (`rules add`)",
          "process": "real processes (a sample of the above)"}


FINDINGS = """## What the first run found (issue 21), each now a test in tests/test_fuzz_archives.py

- Internal errors (exit 3) on damaged archives, all from reading a member: a bad CRC (`BadZipFile`, in any member
  the gate or the loader reads), a compression method or flag zipfile cannot read (`NotImplementedError`), a
  member marked encrypted (`RuntimeError`). Now one line naming the file and the member, exit 2.
- An archive with its members at the top level (no root folder): `KeyError: "There is no item named
  '/archive_format'"`. Now read like any archive.
- `-k`/`-m` with deep nesting (`not not ... x`): `RecursionError` or `MemoryError` from `eval`. Now a parser with
  depth and length limits (`opmap/grammar.py`).
- `--bound n=²` or 5,000 digits: `ValueError` from `int`. `--db` with a NUL: `ValueError: embedded null byte`. Now
  one line each.
- Not found by the campaign but by the issue: `rules add` of a rule that imports once but not twice left its rows
  behind while reporting failure; the load-back check now runs inside the write transaction.

An archive case that exits 0 changed something the loader never reads (sample inputs, the serialization id, an
unknown extra member) or a value that still makes a valid program; the plan is then the plan of the program the file
holds."""


def write_page(path: Path, results: dict[str, list[Outcome]], args: argparse.Namespace, wall: float) -> None:
    import opmap

    table = summary(results)
    cols = ["cases", "exit 0", "exit 1", "exit 2", "exit 3", "hangs", "tracebacks", "writes outside the catalog", "slowest s"]
    lines = [
        "# Reliability under fuzzing",
        "",
        f"`python bench/fuzz_archives.py --seed {args.seed} --archives {args.archives} --texts {args.texts} "
        f"--inputs {args.inputs} --rules {args.rules} --processes {args.processes}` (`make fuzz-archives`), opmap "
        f"{opmap.__version__}, {time.strftime('%Y-%m-%d', time.gmtime())}, {wall:.0f} s wall on this machine.",
        "",
        "Every case runs in-process through `opmap.cli.main` with a catalog in a temporary folder and must end with exit "
        "0, 1 or 2, exactly one line on stderr for exit 2, no traceback, within "
        f"{CASE_SECONDS} s, and no file written outside the catalog. The sample in the last row runs the same cases as "
        "real `python -m opmap.cli` processes. A case is reproducible alone: `--only archive:17`.",
        "",
        "| campaign | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name, row in table.items():
        lines.append(f"| {TITLES.get(name, name)} | " + " | ".join(str(row[c]) for c in cols) + " |")
    failures = [o for outcomes in results.values() for o in outcomes if not o.ok]
    lines += ["", "What the archive cases are: the fixed layouts first (older and newer archive layouts, no root folder, "
              "legacy `serialized_exported_program.json`, other compressions, schema versions), then seeded random "
              "mutations: bytes flipped in one member with and without a matching CRC, the CRC field damaged, truncation, "
              "a member dropped, duplicated, or two swapped, central-header fields overwritten, and hostile values "
              "(wrong types, huge and negative numbers, NaN, deep nesting, long strings, unknown op names, unicode) at "
              "random places of `models/model.json` and the payload configs.", ""]
    lines += [FINDINGS, ""]
    if failures:
        lines += ["## Failing cases", ""] + [f"- `{o.id}` ({o.what}): {'; '.join(o.problems)[:300]}" for o in failures[:50]]
    else:
        lines += ["No case failed."]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--archives", type=int, default=1000)
    parser.add_argument("--texts", type=int, default=500)
    parser.add_argument("--inputs", type=int, default=60)
    parser.add_argument("--rules", type=int, default=60)
    parser.add_argument("--processes", type=int, default=24)
    parser.add_argument("--only", help="run one case, KIND:I, and print its output")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/FUZZ_ARCHIVES.md")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="opmap-fuzz-") as tmp:
        def show(o: Outcome) -> None:
            if args.only or args.verbose or not o.ok:
                first = o.err.strip().splitlines()[0][:200] if o.err.strip() else ""
                print(f"{o.id:14} exit {o.code} {o.seconds:6.2f}s {o.what[:70]} | {first}"
                      + (f"  PROBLEM: {'; '.join(o.problems)}" if o.problems else ""), flush=True)

        results = campaign(Path(tmp), args.archives, args.texts, args.inputs, args.rules, args.processes, args.seed,
                           args.only, show)
    wall = time.monotonic() - start
    for name, row in summary(results).items():
        print(name, row)
    if not args.no_write and not args.only:
        write_page(ROOT / "bench" / "FUZZ_ARCHIVES.md", results, args, wall)
    return 0 if all(o.ok for outcomes in results.values() for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
