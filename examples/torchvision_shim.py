"""Makes ``import torchvision`` work where its compiled ops do not load (this project's CPU torch 2.13.0 beside the only
torchvision 0.28.0 wheel the index has, built for CUDA torch: ``_C.so`` needs ``libc10_cuda.so``).

timm imports torchvision at import time (``timm.layers`` uses ``torchvision.ops.misc.FrozenBatchNorm2d``), and so does
transformers' ``modeling_utils`` whenever torchvision is installed (through ``loss_utils`` -> ``image_utils``). Without
its compiled library, ``import torchvision`` fails with ``RuntimeError: operator torchvision::nms does not exist``:
its Python side registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms``, whose schemas the C++
library would have declared. :func:`declare_torchvision_ops` declares those two schemas (a ``torch.library`` FRAGMENT,
no kernel) when, and only when, that library does not load — enough for the pure-Python side (models, layers,
``ops.misc``, transforms). Calling ``torchvision::nms`` itself still fails; no model here does. `examples/__init__.py`
calls it, so every script and test that imports from ``examples`` gets it before transformers or timm is imported.
"""

from __future__ import annotations

import glob
import importlib.util
import os

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_LIB: list = []  # the FRAGMENT must stay alive: dropping it undefines the schemas


def declare_torchvision_ops() -> None:
    """Declare ``torchvision::nms``/``qnms`` if torchvision is installed and its compiled ops do not load (idempotent)."""
    spec = importlib.util.find_spec("torchvision")
    if _LIB or spec is None or not spec.submodule_search_locations:
        return
    import torch

    for path in glob.glob(os.path.join(spec.submodule_search_locations[0], "_C.*")):
        try:
            torch.ops.load_library(path)  # what torchvision itself does first; loading it twice is a no-op
            return  # its own library declares the ops
        except OSError:
            pass
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            lib.define(op + _SCHEMA)
        except RuntimeError:  # declared already
            pass
    _LIB.append(lib)
