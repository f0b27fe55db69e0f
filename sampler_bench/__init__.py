"""sampler-bench: which diffusion sampler to use at which NFE budget, with numbers you can trust.

Public API (docs/notation.md, "The public API")::

    import sampler_bench as sb
    sb.solvers.available(); sb.solvers.info(name)
    sb.sample(name, denoiser, x, sigmas, generator=None, **options)
    sb.schedules.karras(n, sigma_min, sigma_max, rho=7.0); sb.schedules.log_snr_uniform(...)

The names are imported on first use (PEP 562 module ``__getattr__``), so ``import sampler_bench``
and the command line's ``--help`` do not pay for importing torch.
"""

from importlib import import_module

from .version import __version__
from ._interrupt import deferred as _deferred_interrupt

#: public name -> (module, attribute or None for the module itself)
_LAZY = {
    "solvers": (".solvers", None),
    "schedules": (".solvers.schedules", None),
    "sample": (".solvers.driver", "sample"),
    "load_model": (".models.checkpoint", "load_model"),
}

__all__ = ["solvers", "schedules", "sample", "load_model", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'sampler_bench' has no attribute {name!r}")
    module, attr = _LAZY[name]
    with _deferred_interrupt():  # Ctrl-C while importing: one line, not an import traceback
        value = import_module(module, __name__)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
