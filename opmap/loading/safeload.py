"""Load a torch.export archive that the gate accepted, without ``torch.export.load``.

Weights and constants are rebuilt from their raw byte records (dtype, sizes, strides
and offset from the payload config, bounded by the record's real size), sample inputs
are never read, and the program JSON goes through torch's deserializer inside
:func:`no_code`: symbolic expressions are parsed by :mod:`opmap.loading.symexpr`, and
unpickling, non-weights-only ``torch.load``, TorchScript object loading and AOTInductor
raise. Guard code is dropped from the loaded program, so nothing can execute it.
"""

from __future__ import annotations

import json
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from opmap.loading import symexpr
from opmap.loading.archive import MAX_JSON, Inspection, read_member
from opmap.errors import CaptureError, first_line


class Refused(Exception):
    """Loading tried to do something the gate should have refused (defence in depth)."""


def load_program(path: Path, insp: Inspection) -> Any:
    """The ExportedProgram of ``models/model.json`` in an archive the gate accepted."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass

    reading = ""  # the member being read, named in the error
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = insp.member("")

            def parsed(name: str) -> Any:  # what the gate parsed and checked; read here only if it did not
                nonlocal reading
                reading = prefix + name
                known = insp.take(name)
                return known if known is not None else json.loads(read_member(zf, prefix + name, MAX_JSON))

            def payloads(kind: str) -> dict[str, Any]:
                config = _dict_to_dataclass(schema.PayloadConfig, parsed(f"data/{kind}/model_{kind}_config.json"))
                return _tensors(zf, f"{prefix}data/{kind}/", config, path)

            state_dict = payloads("weights")
            constants = payloads("constants")
            serialized = _dict_to_dataclass(schema.ExportedProgram, parsed("models/model.json"))
            _portable_specs(serialized)
    except zipfile.BadZipFile as exc:
        raise CaptureError(f"{path}: corrupt zip archive ({first_line(exc)})") from None
    except CaptureError:
        raise
    except Exception as exc:  # malformed JSON / schema: the archive is not a valid export
        raise CaptureError(f"{path}: cannot read torch.export archive: member {reading}: {type(exc).__name__}: "
                           f"{first_line(exc)}") from None
    try:
        with no_code():
            program = ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)
    except Refused as exc:
        raise CaptureError(f"{path}: refused while loading: {exc}; pass --trust-model only if you trust this file") from None
    # never executed by opmap; dropped so that nothing downstream can. Their text is kept apart, read only by the
    # restricted size-expression parser (the export's facts about input dims: opmap.loading.shapefacts)
    program.opmap_guard_text = [str(g) for g in (program._guards_code or ()) if isinstance(g, str)]
    program._guards_code = []
    return program


def _portable_specs(serialized: Any) -> None:
    """Container types this process has not registered with pytree (transformers' ``ModelOutput`` dataclasses, say)
    become tuples of their fields in the program's input/output specs. opmap works on the flat inputs and outputs, so
    nothing is lost, and no module named by the file is imported to register them."""
    import torch.utils._pytree as pytree

    known = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE

    def plain(spec: Any) -> Any:
        if isinstance(spec, dict):
            if spec.get("type") is not None and spec["type"] not in known:
                spec = {**spec, "type": "builtins.tuple", "context": "null"}
            return {**spec, "children_spec": [plain(c) for c in spec.get("children_spec", [])]}
        return spec

    for entry in serialized.graph_module.module_call_graph:
        signature = entry.signature
        if signature is None:
            continue
        for field in ("in_spec", "out_spec"):
            text = getattr(signature, field, None)
            if text:
                protocol, spec = json.loads(text)
                setattr(signature, field, json.dumps([protocol, plain(spec)]))


def _tensors(zf: zipfile.ZipFile, folder: str, config: Any, path: Path) -> dict[str, Any]:
    import torch
    from torch._export.serde.serialize import deserialize_scalar_type, deserialize_size, deserialize_storage_offset, \
        deserialize_stride

    records: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for fqn, meta in config.config.items():
        if meta.use_pickle or meta.tensor_meta is None:
            raise CaptureError(f"{path}: refused: {folder}{meta.path_name}: a pickled payload")
        tm = meta.tensor_meta
        dtype = deserialize_scalar_type(tm.dtype)
        if meta.path_name not in records:
            data = read_member(zf, folder + meta.path_name, zf.getinfo(folder + meta.path_name).file_size)
            itemsize = torch.empty((), dtype=dtype).element_size()
            if len(data) % itemsize:
                raise CaptureError(f"{path}: corrupt archive: {folder}{meta.path_name} holds {len(data)} bytes, "
                                   f"not a whole number of {dtype} elements")
            records[meta.path_name] = torch.frombuffer(bytearray(data), dtype=dtype) if data else torch.empty(0, dtype=dtype)
        flat = records[meta.path_name]
        if flat.dtype != dtype:
            flat = flat.view(torch.uint8).view(dtype)
        sizes, strides = deserialize_size(tm.sizes), deserialize_stride(tm.strides)
        offset = deserialize_storage_offset(tm.storage_offset)
        if any(not isinstance(v, int) or v < 0 for v in (*sizes, *strides, offset)) or len(sizes) != len(strides):
            raise CaptureError(f"{path}: corrupt archive: {fqn!r} has invalid sizes/strides")
        extent = 0 if 0 in sizes else offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides))
        if extent > flat.numel():
            if flat.numel() == 0:  # torch writes no bytes for an empty or fake tensor: zeros of the declared size
                flat = torch.zeros(extent, dtype=dtype)
            else:
                raise CaptureError(f"{path}: corrupt archive: {fqn!r} reaches element {extent} of a "
                                   f"{flat.numel()}-element record {meta.path_name}")
        tensor = torch.as_strided(flat, sizes, strides, offset)
        out[fqn] = torch.nn.Parameter(tensor, requires_grad=tm.requires_grad) if meta.is_param else tensor
    return out


class _RestrictedSympy:
    """Stands in for the ``sympy`` module inside torch's deserializer: same names, but sympify parses safely."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    @staticmethod
    def sympify(text: Any, locals: dict | None = None, **_kwargs: Any) -> Any:  # noqa: A002 - sympy's keyword
        import sympy

        if isinstance(text, sympy.Basic):
            return text
        if type(text) in (int, bool):
            return sympy.sympify(text)
        try:
            return symexpr.parse(text, names=locals)
        except ValueError as exc:
            raise Refused(str(exc)) from None


def _refuse(what: str):
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise Refused(what)

    return refuse


@contextmanager
def no_code() -> Iterator[None]:
    """Within: restricted sympify in torch's deserializer; pickle, unsafe torch.load, AOTI loading raise."""
    import pickle

    import torch
    import torch._export.serde.serialize as serde

    real_load = torch.load

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights_only") is not True:
            raise Refused("torch.load without weights_only=True")
        return real_load(*args, **kwargs)

    patches: list[tuple[Any, str, Any]] = [
        (serde, "sympy", _RestrictedSympy(serde.sympy)),
        (torch, "load", weights_only_load),
        (pickle, "loads", _refuse("pickle.loads")),
        (pickle, "load", _refuse("pickle.load")),
        (torch._C, "_pickle_load_obj", _refuse("a pickled TorchScript object")),
        (torch.ops, "load_library", _refuse("a native library")),
    ]
    aoti = getattr(torch._C, "_aoti", None)
    if aoti is not None and hasattr(aoti, "AOTIModelPackageLoader"):
        patches.append((aoti, "AOTIModelPackageLoader", _refuse("AOTInductor native code")))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
