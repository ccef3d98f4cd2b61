"""The backend seam: ``tensorrt`` when importable (data-centre TensorRT), else ``tensorrt_rtx``.

Everything that touches a TensorRT module goes through :func:`load`. A
:class:`BackendProfile` tells rules what a backend can do, from the installed
module where there is one (its network API, and real probe builds), and says
"unverified" where the backend is not installed here rather than guessing.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from opmap import interrupt
from opmap.native import native_stderr_silenced
from opmap.errors import OpmapError, first_line

BACKENDS = ("tensorrt", "tensorrt_rtx")


@lru_cache(maxsize=None)
def import_backend(name: str) -> Any | None:
    if name not in BACKENDS:
        raise OpmapError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken native library
        interrupt.check()  # a Ctrl-C during the native import can surface as an ImportError: it is not "not installed"
        return None


def default_backend() -> str:
    return "tensorrt" if import_backend("tensorrt") is not None else "tensorrt_rtx"


_LOGGERS: dict[str, Any] = {}


def logger(trt: Any) -> Any:
    """TensorRT honours only the first Logger of a process: create one per module and reuse it.

    It prints nothing; it keeps the last messages so a failed build can say why.
    """
    key = trt.__name__
    if key not in _LOGGERS:

        class QuietLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: list[str] = []

            def log(self, severity, msg):
                if severity <= trt.ILogger.Severity.WARNING:
                    self.messages = (self.messages + [" ".join(str(msg).split())])[-50:]

        _LOGGERS[key] = QuietLogger()
    return _LOGGERS[key]


def _relevant(messages: list[str]) -> str | None:
    """The most telling error: TensorRT also complains that no CUDA driver exists, which AOT builds ignore."""
    useful = [m for m in messages if "catchCudaError" not in m and "CUDA driver version" not in m]
    return useful[-1] if useful else None


def strongly_typed_network(trt: Any, builder: Any) -> Any:
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flag)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool | None  # None: could not be checked here (backend not installed)
    message: str
    seconds: float = 0.0


# Probe networks: the smallest network that exercises one capability. A probe is a real build.
def _probe_non_zero(trt, net):
    x = net.add_input("x", trt.DataType.FLOAT, (4, 4))
    nz = net.add_non_zero(x)
    net.mark_output(net.add_shape(nz.get_output(0)).get_output(0))


def _probe_nms(trt, net):
    boxes = net.add_input("boxes", trt.DataType.FLOAT, (1, 8, 4))
    scores = net.add_input("scores", trt.DataType.FLOAT, (1, 8, 1))
    k = net.add_constant((), trt.Weights(__import__("numpy").array(4, dtype="int32"))).get_output(0)
    layer = net.add_nms(boxes, scores, k)
    net.mark_output(layer.get_output(0))


def _probe_topk_1d(trt, net):
    x = net.add_input("x", trt.DataType.FLOAT, (16,))
    net.mark_output(net.add_topk(x, trt.TopKOperation.MAX, 4, 1).get_output(0))


def _probe_attention_fp32(trt, net):
    shape = (1, 2, 8, 16)
    q, k, v = (net.add_input(n, trt.DataType.FLOAT, shape) for n in "qkv")
    layer = net.add_attention(q, k, v, trt.AttentionNormalizationOp.SOFTMAX, False)
    net.mark_output(layer.get_output(0))


PROBES: dict[str, Callable] = {
    "non_zero": _probe_non_zero,
    "nms": _probe_nms,
    "topk_1d": _probe_topk_1d,
    "attention_fp32": _probe_attention_fp32,
}


@dataclass
class BackendProfile:
    name: str
    module: Any | None = field(default=None, repr=False)
    probed: dict[str, ProbeResult] = field(default_factory=dict, repr=False)  # the probes rules asked for

    @property
    def installed(self) -> bool:
        return self.module is not None

    @property
    def version(self) -> str | None:
        return getattr(self.module, "__version__", None) if self.module else None

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    def has_layer(self, method: str) -> bool | None:
        """Whether the network API offers ``INetworkDefinition.<method>`` (None: not installed here)."""
        if self.module is None:
            return None
        return hasattr(self.module.INetworkDefinition, method)

    @property
    def plugins(self) -> bool | None:
        """Whether plugin layers can be added at all (TensorRT-RTX has no add_plugin*)."""
        return self.has_layer("add_plugin_v3")

    def builds(self, probe: str) -> ProbeResult:
        """Build a probe network for real and report whether the backend has a runner for it."""
        result = _run_probe(self.name, probe)
        self.probed[probe] = result
        return result

    def __str__(self) -> str:
        return f"{self.name} {self.version or '(not installed here)'}"

    __repr__ = __str__


@lru_cache(maxsize=None)
def _run_probe(name: str, probe: str) -> ProbeResult:
    if probe not in PROBES:
        raise OpmapError(f"unknown probe {probe!r}: known probes are {', '.join(PROBES)}")
    trt = import_backend(name)
    if trt is None:
        return ProbeResult(None, f"unverified: {name} is not installed here, so the probe build could not run")
    start = time.perf_counter()
    try:
        builder = trt.Builder(logger(trt))
        net = strongly_typed_network(trt, builder)
        PROBES[probe](trt, net)
        config = builder.create_builder_config()
        recorder = _ErrorRecorder(trt)
        builder.error_recorder = recorder
        with native_stderr_silenced():
            engine = builder.build_serialized_network(net, config)
    except Exception as exc:
        interrupt.check()  # an interrupted probe proves nothing: never a (cached, recorded) false result
        return ProbeResult(False, f"probe {probe} raised: {first_line(exc)}", time.perf_counter() - start)
    interrupt.check()
    seconds = time.perf_counter() - start
    if engine is None:
        detail = _relevant(recorder.messages) or "build_serialized_network returned None"
        return ProbeResult(False, f"{name} cannot build {probe}: {detail}", seconds)
    return ProbeResult(True, f"{name} builds {probe} ({len(engine)} bytes)", seconds)


class _ErrorRecorder:
    """Collects TensorRT's own error messages so a failed build can say why."""

    def __new__(cls, trt):
        class Recorder(trt.IErrorRecorder):
            def __init__(self):
                trt.IErrorRecorder.__init__(self)
                self.messages: list[str] = []

            def clear(self):
                self.messages.clear()

            def get_error_code(self, i):
                return trt.ErrorCode.UNSPECIFIED_ERROR

            def get_error_desc(self, i):
                return self.messages[i]

            def has_overflowed(self):
                return False

            def num_errors(self):
                return len(self.messages)

            def report_error(self, code, desc):
                self.messages.append(" ".join(str(desc).split()))
                return False

        return Recorder()


def profile(name: str | None = None) -> BackendProfile:
    name = name or default_backend()
    return BackendProfile(name=name, module=import_backend(name))
