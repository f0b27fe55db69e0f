"""Load k-diffusion's ``sampling`` module (the parity reference) without its package ``__init__``.

k-diffusion 0.1.1.post1 is installed with ``--no-deps``: its ``__init__`` imports every submodule
(models, evaluation, config, ...) and with them clip/wandb/skimage, which are not installed. Its
``sampling.py`` only needs ``from . import utils`` (PIL, safetensors, torchvision), so we register an
empty package module by hand and import exactly ``utils`` and ``sampling`` into it, after
:func:`sampler_bench.compat.import_torchvision` has made torchvision importable on CPU.

Usage (tests/ is on ``sys.path`` under pytest's default import mode)::

    from kdiffusion_ref import load_sampling
    K = load_sampling()          # the k_diffusion.sampling module
    K.sample_dpmpp_2m(model, x, sigmas, disable=True)
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types


@functools.cache
def load_sampling() -> types.ModuleType:
    """``k_diffusion.sampling``, imported once; ImportError with the reason if k-diffusion is missing."""
    from sampler_bench.compat import import_torchvision

    import_torchvision()
    loaded = sys.modules.get("k_diffusion")
    if loaded is None:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("k-diffusion is not installed (pip install --no-deps k-diffusion==0.1.1.post1)")
        # An empty package with the real search path: submodule imports find the real files,
        # and the package __init__ (with its heavy optional dependencies) never runs.
        package = types.ModuleType("k_diffusion")
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = "k_diffusion"
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules["k_diffusion"] = package
    importlib.import_module("k_diffusion.utils")
    return importlib.import_module("k_diffusion.sampling")
