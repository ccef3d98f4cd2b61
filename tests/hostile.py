"""A generator of hostile model archives: a real ``torch.export.save`` of a small model, rewritten member by member.

Each case that would run code carries a payload that creates a *marker file* if it ever
executes (a pickle whose reduce calls :func:`touch`, an ``expr_str`` that ``sympify``
would ``eval``, guard code, a TorchScript ``__setstate__``). The corpus is generated at
test time; :func:`write_corpus` writes it to a folder to keep or inspect
(``python -m tests.hostile OUTDIR``).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Tuple

import torch

GIB = 1 << 30


def touch(marker: str, shape: tuple[int, ...] = (4,), param: bool = False) -> torch.Tensor:
    """What every pickled payload calls when unpickled: leave the marker, return a plausible tensor."""
    Path(marker).write_text("code from a model file ran\n")
    return torch.nn.Parameter(torch.ones(shape)) if param else torch.ones(shape)


class Payload:
    """Pickles to ``touch(marker, shape)``: unpickling it runs code."""

    def __init__(self, marker: Path, shape: tuple[int, ...] = (4,), param: bool = False) -> None:
        self.marker, self.shape, self.param = str(marker), tuple(shape), param

    def __reduce__(self):
        return touch, (self.marker, self.shape, self.param)


class Small(torch.nn.Module):
    """A linear layer, a buffer and a lifted tensor constant: every payload kind torch.export writes."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("scale", torch.full((4,), 2.0))
        self.offset = torch.arange(4.0)  # a plain tensor attribute: exported as a lifted constant

    def forward(self, x):
        return torch.relu(self.lin(x) * self.scale + self.offset)


def export_small(path: Path, dynamic: bool = True) -> Path:
    x = torch.randn(4, 4)
    shapes = ({0: torch.export.Dim("batch", min=2, max=64)},) if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(Small().eval(), (x,), dynamic_shapes=shapes, strict=False)
    torch.export.save(ep, str(path))
    return path


# -- rewriting ------------------------------------------------------------------------------------


def _members(path: Path) -> tuple[str, dict[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = names[0].split("/", 1)[0]
        return root, {n: zf.read(n) for n in names}


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def rewrite(base: Path, out: Path, edit: Callable[[str, dict[str, bytes]], None]) -> Path:
    root, members = _members(base)
    edit(root, members)
    return _write(out, members)


def _edit_json(members: dict[str, bytes], name: str, fn: Callable[[dict], None]) -> None:
    data = json.loads(members[name])
    fn(data)
    members[name] = json.dumps(data).encode()


def _torch_pickle(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# -- the cases ------------------------------------------------------------------------------------
# Each builder: (base archive, output path, marker path) -> the hostile file.


def pickled_weight(base: Path, out: Path, marker: Path) -> Path:
    def edit(root, m):
        cfg = f"{root}/data/weights/model_weights_config.json"
        entries = json.loads(m[cfg])["config"]
        fqn = "lin.weight"
        m[f"{root}/data/weights/{entries[fqn]['path_name']}_p"] = _torch_pickle(Payload(marker, (4, 4), param=True))

        def mark(data):
            data["config"][fqn]["path_name"] += "_p"
            data["config"][fqn]["use_pickle"] = True
        _edit_json(m, cfg, mark)
    return rewrite(base, out, edit)


def pickled_constant(base: Path, out: Path, marker: Path) -> Path:
    def edit(root, m):
        cfg = f"{root}/data/constants/model_constants_config.json"
        fqn = next(iter(json.loads(m[cfg])["config"]))
        m[f"{root}/data/constants/tensor_9"] = _torch_pickle(Payload(marker))

        def mark(data):
            data["config"][fqn].update(path_name="tensor_9", use_pickle=True)
        _edit_json(m, cfg, mark)
    return rewrite(base, out, edit)


def legacy_weights(base: Path, out: Path, marker: Path) -> Path:
    return rewrite(base, out, lambda root, m: m.__setitem__(f"{root}/data/weights/model.pt", _torch_pickle({"lin.weight": Payload(marker, (4, 4))})))


def legacy_constants(base: Path, out: Path, marker: Path) -> Path:
    return rewrite(base, out, lambda root, m: m.__setitem__(f"{root}/data/constants/model.pt", _torch_pickle({"offset": Payload(marker)})))


def opaque_constant(base: Path, out: Path, marker: Path) -> Path:
    def edit(root, m):
        cfg = f"{root}/data/constants/model_constants_config.json"
        m[f"{root}/data/constants/opaque_obj_0"] = pickle.dumps(Payload(marker))
        _edit_json(m, cfg, lambda d: d["config"].__setitem__("evil", {"path_name": "opaque_obj_0", "is_param": False,
                                                                        "use_pickle": True, "tensor_meta": None}))
    return rewrite(base, out, edit)


def custom_object(base: Path, out: Path, marker: Path) -> Path:
    def edit(root, m):
        cfg = f"{root}/data/constants/model_constants_config.json"
        m[f"{root}/data/constants/custom_obj_0"] = b"PK-not-really-a-torchbind-object"
        _edit_json(m, cfg, lambda d: d["config"].__setitem__("obj", {"path_name": "custom_obj_0", "is_param": False,
                                                                       "use_pickle": True, "tensor_meta": None}))
    return rewrite(base, out, edit)


def unsafe_sample_inputs(base: Path, out: Path, marker: Path) -> Path:
    """torch.export.load retries these with weights_only=False; opmap never reads sample inputs."""
    return rewrite(base, out, lambda root, m: m.__setitem__(
        f"{root}/data/sample_inputs/model.pt", _torch_pickle(((Payload(marker, (4, 4)),), {}))))


def eval_expr(base: Path, out: Path, marker: Path) -> Path:
    """An expr_str that sympify would eval (needs a dynamic base)."""
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran') and Symbol('s0')"

    def edit(root, m):
        name = f"{root}/models/model.json"
        text = m[name].decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        m[name] = (text[:start] + code.replace('"', '\\"') + text[end:]).encode()
    return rewrite(base, out, edit)


def foreign_target(base: Path, out: Path, marker: Path) -> Path:
    """A node whose target resolves to os.system through torch's module namespace."""
    def edit(root, m):
        def retarget(data):
            node = next(n for n in data["graph_module"]["graph"]["nodes"] if "relu" in n["target"])
            node["target"] = "torch.os.system"
        _edit_json(m, f"{root}/models/model.json", retarget)
    return rewrite(base, out, edit)


def escaped_target(base: Path, out: Path, marker: Path) -> Path:
    """The same foreign target hidden from a text scan: a duplicate key spelled with a JSON escape, after an innocent
    one (a JSON parser keeps the last of duplicate keys, so torch's loader would see the foreign target)."""
    def edit(root, m):
        name = f"{root}/models/model.json"
        text = m[name].decode()
        start = text.index('"target": "torch.ops.aten.relu')
        end = text.index('"', start + len('"target": "'))
        m[name] = (text[:end + 1] + ', "t\\u0061rget": "torch.os.system"' + text[end + 1:]).encode()
    return rewrite(base, out, edit)


def guard_code(base: Path, out: Path, marker: Path) -> Path:
    """Guard code that ExportedProgram.module() would exec; opmap never runs it (the archive is otherwise fine)."""
    code = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran') is None"
    return rewrite(base, out, lambda root, m: _edit_json(
        m, f"{root}/models/model.json", lambda d: d.__setitem__("guards_code", [code])))


def shared_library(base: Path, out: Path, marker: Path) -> Path:
    return rewrite(base, out, lambda root, m: m.__setitem__(f"{root}/extra/libevil.so", b"\x7fELF" + b"\x00" * 60))


def aotinductor(base: Path, out: Path, marker: Path) -> Path:
    return rewrite(base, out, lambda root, m: m.__setitem__(f"{root}/data/aotinductor/model/model.wrapper.so", b"\x7fELF" + b"\x00" * 60))


def dotdot_name(base: Path, out: Path, marker: Path) -> Path:
    return rewrite(base, out, lambda root, m: m.__setitem__(f"{root}/data/aotinductor/model/../../../../../evil.pth", b"import os\n"))


def absolute_name(base: Path, out: Path, marker: Path) -> Path:
    return rewrite(base, out, lambda root, m: m.__setitem__("/tmp/evil.pth", b"import os\n"))


def backslash_name(base: Path, out: Path, marker: Path) -> Path:
    return rewrite(base, out, lambda root, m: m.__setitem__(f"{root}/data\\..\\..\\evil.pth", b"import os\n"))


def nul_name(base: Path, out: Path, marker: Path) -> Path:
    """A NUL in a member name (zipfile truncates the name at it; the raw name keeps it)."""
    path = rewrite(base, out, lambda root, m: m.__setitem__(f"{root}/extra/a\x01b.txt", b"x"))
    path.write_bytes(path.read_bytes().replace(b"a\x01b.txt", b"a\x00b.txt"))
    return path


def duplicate_name(base: Path, out: Path, marker: Path) -> Path:
    root, members = _members(base)
    _write(out, members)
    with warnings.catch_warnings(), zipfile.ZipFile(out, "a") as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": the point of the case
        zf.writestr(f"{root}/models/model.json", b"{}")
    return out


def zip_bomb(base: Path, out: Path, marker: Path) -> Path:
    """A member that declares 2 GiB from a few KiB of deflate data: only the directory says so."""
    root, members = _members(base)
    _write(out, members)
    name = f"{root}/extra/bomb.bin"
    with zipfile.ZipFile(out, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, b"\x00" * (1 << 20))
    _set_declared_size(out, name, 2 * GIB)
    return out


def stored_bomb(base: Path, out: Path, marker: Path) -> Path:
    """A stored (uncompressed) weight record that declares 2 GiB in a small file."""
    root, members = _members(base)
    _write(out, members)
    _set_declared_size(out, f"{root}/data/weights/weight_0", 2 * GIB)
    return out


def truncated(base: Path, out: Path, marker: Path) -> Path:
    data = base.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def corrupt_crc(base: Path, out: Path, marker: Path) -> Path:
    """One flipped byte inside a weight record: the directory is intact, the CRC is not."""
    with zipfile.ZipFile(base) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("data/weights/weight_0"))
    data = bytearray(base.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)  # the local header's own lengths
    start = info.header_offset + 30 + name_len + extra_len
    data[start + 3] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def empty(base: Path, out: Path, marker: Path) -> Path:
    out.write_bytes(b"")
    return out


def not_a_zip(base: Path, out: Path, marker: Path) -> Path:
    out.write_bytes(b"\x13\x37 definitely not a model " * 40)
    return out


class FileWriter(torch.nn.Module):
    """Scripted, its ``__setstate__`` overwrites ``path`` through ``torch.from_file`` whenever it is loaded."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.w = torch.ones(4)
        self.path = path

    def forward(self, x):
        return x + self.w

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str]:
        return (self.w, self.path)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str]) -> None:
        self.path = state[1]
        self.training = False
        t = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8)
        self.w = state[0] + t.fill_(65).sum().float() * 0.0  # used, so TorchScript keeps the write


def torchscript_setstate(base: Path, out: Path, marker: Path) -> Path:
    """TorchScript that overwrites a file at load time. from_file maps an existing file, so the marker
    exists beforehand holding dots; the payload turns them into ``A``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(FileWriter(str(marker))).save(str(out))
    marker.write_bytes(b"........")
    return out


def _set_declared_size(path: Path, member: str, size: int) -> None:
    """Patch a member's uncompressed size in its local header and the central directory (no data is written)."""
    data = bytearray(path.read_bytes())
    raw = member.encode()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    assert data[info.header_offset:info.header_offset + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, info.header_offset + 22, size)
    eocd = data.rindex(b"PK\x05\x06")
    pos = struct.unpack_from("<I", data, eocd + 16)[0]
    while data[pos:pos + 4] == b"PK\x01\x02":
        n, e, c = struct.unpack_from("<HHH", data, pos + 28)
        if bytes(data[pos + 46:pos + 46 + n]) == raw:
            struct.pack_into("<I", data, pos + 24, size)
        pos += 46 + n + e + c
    path.write_bytes(bytes(data))


# name -> (builder, the fragment of the one-line refusal, whether the payload can run code under torch's loaders)
REFUSED = {
    "pickled_weight": (pickled_weight, "stored as a pickle", True),
    "pickled_constant": (pickled_constant, "stored as a pickle", True),
    "legacy_weights": (legacy_weights, "legacy pickled weights", True),
    "legacy_constants": (legacy_constants, "legacy pickled constants", True),
    "opaque_constant": (opaque_constant, "custom constant", True),
    "custom_object": (custom_object, "custom constant", False),
    "eval_expr": (eval_expr, "is not allowed", True),
    "foreign_target": (foreign_target, "outside torch's operator namespaces", False),
    "escaped_target": (escaped_target, "outside torch's operator namespaces", False),
    "shared_library": (shared_library, "native shared library", False),
    "aotinductor": (aotinductor, "AOTInductor native code", False),
    "dotdot_name": (dotdot_name, "climbs out of the archive", False),
    "absolute_name": (absolute_name, "is absolute", False),
    "backslash_name": (backslash_name, "backslash", False),
    "nul_name": (nul_name, "NUL", False),
    "duplicate_name": (duplicate_name, "appears twice", False),
    "zip_bomb": (zip_bomb, "zip bomb", False),
    "stored_bomb": (stored_bomb, "declares 2147483648 bytes", False),
    "truncated": (truncated, "truncated or corrupt zip archive", False),
    "corrupt_crc": (corrupt_crc, "CRC", False),
    "empty": (empty, "empty file", False),
    "not_a_zip": (not_a_zip, "not a model file", False),
    "torchscript_setstate": (torchscript_setstate, "TorchScript archive", True),
}
# Archives that load without running anything: the hostile part is never read or executed.
HARMLESS = {
    "unsafe_sample_inputs": unsafe_sample_inputs,
    "guard_code": guard_code,
}


def write_corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base = export_small(folder / "base.pt2")  # dynamic: it has expr_str and guard code to rewrite
    builders = {**{k: v[0] for k, v in REFUSED.items()}, **HARMLESS}
    return {name: build(base, folder / f"{name}.pt2", folder / f"{name}.marker") for name, build in builders.items()}


if __name__ == "__main__":
    from tests.hostile import write_corpus as corpus  # pickles must name tests.hostile.touch, not __main__.touch

    for name, path in corpus(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
