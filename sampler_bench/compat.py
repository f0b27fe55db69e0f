"""Compatibility with a torchvision build that does not match the installed torch.

torch-fidelity imports torchvision at import time. On CPU-only machines with a CUDA torchvision
wheel from PyPI, torchvision's compiled ops fail to load, and ``import torchvision`` raises
``RuntimeError: operator torchvision::nms does not exist`` while registering fake kernels for
``nms``/``qnms``. sampler-bench uses none of those ops (only the Inception network of
torch-fidelity, which is plain torch), so on that exact error we declare the two missing operator
schemas with ``torch.library`` and import again. Nothing else in the package imports torchvision.
"""

from __future__ import annotations

import sys

_MISSING_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = None  # keeps the torch.library fragment alive for the life of the process


def import_torchvision():
    """Import torchvision, declaring its missing compiled-op schemas if (and only if) they are missing."""
    global _LIBRARY
    try:
        import torchvision

        return torchvision
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise
    import torch

    for name in [m for m in list(sys.modules) if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _MISSING_OPS.items():
        try:
            _LIBRARY.define(schema)
        except RuntimeError:
            pass  # already defined by a partial load
    import torchvision

    return torchvision


def import_torch_fidelity():
    """Import torch_fidelity after making torchvision importable."""
    import_torchvision()
    import torch_fidelity

    return torch_fidelity
