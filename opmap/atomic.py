"""Files that appear whole or not at all: written to temporary files in the same directory, then renamed."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path
from typing import Callable


def _temporary(path: Path, data: bytes) -> str:
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # name the file the user asked for, not the temporary one
        raise OSError(exc.errno, f"cannot write it: {exc.strerror}", str(path)) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the mode a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(files: dict[Path, bytes], before_rename: Callable[[], None] | None = None) -> None:
    """Write each file atomically (a temporary in the same directory, so the rename cannot cross file systems), and
    the group together: every temporary is complete before the first rename, and SIGINT waits until all are renamed.
    ``before_rename`` may raise to abandon them all; temporaries are removed on any failure."""
    temps: dict[Path, str] = {}
    try:
        for path, data in files.items():
            temps[path] = _temporary(path, data)
        if before_rename is not None:
            before_rename()
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for path, tmp in list(temps.items()):
                os.replace(tmp, path)
                del temps[path]
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    finally:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
