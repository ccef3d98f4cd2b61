"""The gate: a model archive is inspected with :mod:`zipfile` before anything of PyTorch's touches it.

Two kinds of checks, each refusal one line naming the member:

* structure, always: member count, declared sizes and compression ratios (a zip bomb
  is refused from the central directory alone, before a byte is inflated), member
  names (absolute, ``..``, backslashes, NUL, duplicates), a zip that is truncated or
  corrupt;
* content, waived only by ``--trust-model`` (alias ``--unsafe-pickle``): anything that
  would make loading run code — pickled weights, constants or custom objects, legacy
  ``.pt`` payloads, native code (AOTInductor members, shared libraries), symbolic
  expressions outside :mod:`opmap.loading.symexpr`'s grammar, call targets outside
  torch's operator namespaces, and TorchScript (whose code runs when it is loaded).
"""

from __future__ import annotations

import functools
import json
import lzma
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from opmap.loading import symexpr
from opmap.errors import CaptureError, first_line

MAX_MEMBERS = 100_000
MAX_RATIO = 200  # declared size / stored size of a compressed member (deflate peaks near 1032)
MAX_TOTAL = 1 << 40  # 1 TiB declared in all: beyond any model, well below a bomb's claims
MAX_JSON = 512 << 20  # largest model.json / payload config read into memory
TRUST_FLAG = "--trust-model"

_SHARED_LIB = (".so", ".dll", ".dylib", ".pyd")
_PAYLOAD_NAME = re.compile(r"^(weight|tensor)_\d+$")
_TARGET = re.compile(
    r"^(torch\.ops\.[A-Za-z_]\w*\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?"
    r"|_operator\.[a-z_]+|math\.(ceil|floor|trunc)"
    r"|torch\.(sym_[a-z_]+|_sym_[a-z_]+|_C\._set_grad_enabled|autograd\.grad_mode\.set_grad_enabled"
    r"|export\.custom_ops\._call_custom_autograd_function_in_pre_dispatch|_check[a-z_]*|_assert[a-z_]*))$"
)


@dataclass
class Inspection:
    """What the gate found: the archive kind and, for torch.export archives, the parsed program text."""

    kind: str  # export | torchscript | pickle-zip | export-legacy | unknown
    root: str = ""  # the archive's top-level folder (PyTorch writes every record under one)
    names: list[str] = field(default_factory=list)  # member names relative to root
    risks: list[str] = field(default_factory=list)  # content refusals, waived by --trust-model
    # the JSON members the gate parsed and checked (model programs, payload configs), by name: the loader deserializes
    # these very objects (:meth:`take`), so the file is parsed once and what is loaded is what was checked
    parsed: dict[str, Any] = field(default_factory=dict, repr=False)

    def member(self, name: str) -> str:
        """The full member name of ``name`` (relative to the root; an archive without a root folder has its members at
        the top level)."""
        return member_name(self.root, name)

    def take(self, name: str) -> Any:
        """A parsed member, handed over once (the loader's copy; None when the gate did not parse it)."""
        return self.parsed.pop(name, None)


def member_name(root: str, name: str) -> str:
    return f"{root}/{name}" if root else name


def refusal(path: Path, member: str, why: str) -> CaptureError:
    return CaptureError(f"{path}: refused: {member}: {why}; pass {TRUST_FLAG} (or --unsafe-pickle) only if you trust this file")


def inspect_file(path: Path) -> Inspection:
    """Structure checks for any zip; content checks by kind. Raises CaptureError on a broken structure."""
    with path.open("rb") as f:
        head = f.read(4)
    if head[:2] != b"PK":
        return Inspection("unknown")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CaptureError(f"{path}: truncated or corrupt zip archive ({first_line(exc)})") from None
    with zf:
        infos = zf.infolist()
        _check_structure(path, infos)
        root, names = _relative(path, infos)
        insp = Inspection(_kind(names), root, names)
        if insp.kind == "export":
            insp.risks = list(_export_risks(zf, root, names, insp.parsed))
        elif insp.kind == "torchscript":
            insp.risks = ["TorchScript archive: torch.jit.load compiles and runs the TorchScript code it holds "
                          "(__setstate__ runs at load time and can read and overwrite files through torch.from_file)"]
        elif insp.kind == "export-legacy":
            insp.risks = ["serialized_state_dict.pt: an older torch.export archive with pickled weights"]
    return insp


def _check_structure(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_MEMBERS:
        raise CaptureError(f"{path}: refused: {len(infos)} members (more than {MAX_MEMBERS})")
    size = path.stat().st_size
    seen: set[str] = set()
    total = packed = 0
    for info in infos:
        name = info.filename
        _check_name(path, info.orig_filename)  # the raw name: zipfile cuts info.filename at a NUL
        if name in seen:
            raise CaptureError(f"{path}: refused: member {name!r} appears twice (readers disagree on which one counts)")
        seen.add(name)
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise CaptureError(f"{path}: corrupt zip archive: stored member {name} declares {info.file_size} bytes "
                               f"but holds {info.compress_size}")
        if info.compress_size > size or info.header_offset + info.compress_size > size:
            raise CaptureError(f"{path}: truncated or corrupt zip archive: member {name} extends past the end of the file")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise CaptureError(f"{path}: refused: member {name} declares {info.file_size:,} bytes from "
                               f"{info.compress_size:,} (compression ratio above {MAX_RATIO}: a zip bomb)")
        total += info.file_size
        packed += info.compress_size
    if packed > size:
        raise CaptureError(f"{path}: refused: members overlap ({packed:,} stored bytes in a {size:,}-byte file: a zip bomb)")
    if total > MAX_TOTAL or total > MAX_RATIO * max(size, 1):
        raise CaptureError(f"{path}: refused: members declare {total:,} bytes in all from a {size:,}-byte file")


def _check_name(path: Path, name: str) -> None:
    bad = None
    if "\x00" in name:
        bad = "contains NUL"
    elif "\\" in name:
        bad = "contains a backslash"
    elif name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        bad = "is absolute"
    elif ".." in PurePosixPath(name).parts:
        bad = "climbs out of the archive (..)"
    if bad:
        raise CaptureError(f"{path}: refused: member name {name[:120]!r} {bad}")


def _relative(path: Path, infos: list[zipfile.ZipInfo]) -> tuple[str, list[str]]:
    if not infos:
        raise CaptureError(f"{path}: empty zip archive")
    root = infos[0].filename.split("/", 1)[0]
    names = []
    for info in infos:
        head, sep, rest = info.filename.partition("/")
        if head != root or not sep:
            return "", [i.filename for i in infos]  # not a PyTorch archive layout; kind "unknown"
        names.append(rest)
    return root, names


def _kind(names: list[str]) -> str:
    if "archive_format" in names or any(n.startswith("models/") for n in names):
        return "export"
    if "serialized_exported_program.json" in names:
        return "export-legacy"
    if any(n.startswith("code/") for n in names) and "constants.pkl" in names:
        return "torchscript"
    if "data.pkl" in names:
        return "pickle-zip"
    return "unknown"


def read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member's bytes, refusing more than ``limit`` (its declared size was checked; this bounds the real one)."""
    try:
        with zf.open(name) as f:
            data = f.read(limit + 1)
    except KeyError:
        raise CaptureError(f"{zf.filename}: corrupt archive: member {name} is missing") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
        # a damaged member: bad CRC, truncated or undecodable data, a header that contradicts the directory
        raise CaptureError(f"{zf.filename}: corrupt archive: member {name}: {first_line(exc)}") from None
    except (NotImplementedError, RuntimeError) as exc:  # a compression method, encryption or patch zipfile cannot read
        raise CaptureError(f"{zf.filename}: unsupported zip member {name}: {first_line(exc)}") from None
    if len(data) > limit:
        raise CaptureError(f"{zf.filename}: refused: member {name} is larger than {limit:,} bytes")
    return data


def read_json(zf: zipfile.ZipFile, name: str, object_hook: Callable[[dict], Any] | None = None) -> Any:
    try:
        return json.loads(read_member(zf, name, MAX_JSON), object_hook=object_hook)
    except (ValueError, RecursionError) as exc:
        raise CaptureError(f"{zf.filename}: corrupt archive: {name} is not JSON ({first_line(exc)})") from None


def _export_risks(zf: zipfile.ZipFile, root: str, names: list[str], parsed: dict[str, Any]) -> Iterator[str]:
    """Content that would make torch.export.load run code, as ``member: why`` lines; the JSON it parsed into ``parsed``."""
    members = set(names)
    full = functools.partial(member_name, root)
    for name in names:
        if name.startswith("data/aotinductor/"):
            yield f"{name}: AOTInductor native code (torch.export.load would extract and dlopen it)"
        elif name.lower().endswith(_SHARED_LIB):
            yield f"{name}: a native shared library"
        elif name.startswith(("data/constants/opaque_obj_", "data/constants/custom_obj_")):
            yield f"{name}: a pickled Python or TorchScript object (custom constant)"
    for folder, what in (("weights", "weights"), ("constants", "constants")):
        for name in names:
            if name.startswith(f"data/{folder}/") and name.endswith(".pt"):
                yield f"{name}: legacy pickled {what}"
    if "archive_format" not in members or read_member(zf, full("archive_format"), 64).strip() != b"pt2":
        yield "archive_format: missing or not 'pt2'"
        return
    models = [n for n in names if n.startswith("models/") and n.endswith(".json")]
    if "models/model.json" not in members:
        yield "models/model.json: missing"
    for model in models:
        stem = model[len("models/"):-len(".json")]
        for folder, config in (("weights", f"data/weights/{stem}_weights_config.json"),
                               ("constants", f"data/constants/{stem}_constants_config.json")):
            if config not in members:
                if f"data/{folder}/{stem}.pt" not in members:
                    yield f"{config}: missing"
                continue
            parsed[config] = read_json(zf, full(config))
            yield from _payload_risks(config, parsed[config])
        fields: list[tuple[str, Any]] = []  # every "target" and "expr_str" of any object, collected while parsing
        parsed[model] = read_json(zf, full(model), _collector(fields))
        yield from _program_risks(model, parsed[model], fields)


def _collector(fields: list[tuple[str, Any]]) -> Callable[[dict], dict]:
    """A JSON object hook noting the fields that name code (node targets, symbolic expressions) of every object, at any
    depth, as the parser builds it (after escapes are decoded, and the last of duplicate keys, as the loader sees it)."""
    def hook(obj: dict) -> dict:
        for key in ("target", "expr_str"):
            if key in obj:
                fields.append((key, obj[key]))
        return obj

    return hook


def _payload_risks(config: str, data: Any) -> Iterator[str]:
    entries = data.get("config") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        yield f"{config}: not a payload config"
        return
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            yield f"{config}: entry {fqn!r} is malformed"
            continue
        path_name = str(meta.get("path_name", ""))
        if meta.get("use_pickle"):
            yield f"{config}: {fqn!r} ({path_name}) is stored as a pickle"
        elif not _PAYLOAD_NAME.match(path_name):
            yield f"{config}: {fqn!r} names payload {path_name[:60]!r}, not a raw tensor record"
        elif not isinstance(meta.get("tensor_meta"), dict):
            yield f"{config}: {fqn!r} has no tensor metadata"


def _program_risks(model: str, program: Any, fields: list[tuple[str, Any]]) -> Iterator[str]:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        yield f"{model}: not a serialized ExportedProgram"
        return
    ranges = program.get("range_constraints") or {}
    for key in ranges if isinstance(ranges, dict) else ():
        yield from _expr_risk(model, key)
    for key, value in fields:
        if key == "expr_str":
            yield from _expr_risk(model, value)
        elif key == "target" and isinstance(value, str) and not _TARGET.match(value):
            yield f"{model}: call target {value[:80]!r} is outside torch's operator namespaces"


def _expr_risk(model: str, text: Any) -> Iterator[str]:
    try:
        symexpr.check(text)
    except ValueError as exc:
        yield f"{model}: {exc}"


