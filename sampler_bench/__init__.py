"""sampler-bench: which diffusion sampler to use at which NFE budget, with numbers you can trust.

Public API (DESIGN.md "Contracts")::

    import sampler_bench as sb
    sb.solvers.available(); sb.solvers.info(name)
    sb.sample(name, denoiser, x, sigmas, generator=None, **options)
    sb.schedules.karras(n, sigma_min, sigma_max, rho=7.0); sb.schedules.log_snr_uniform(...)
"""

from .version import __version__
from ._interrupt import deferred as _deferred_interrupt

with _deferred_interrupt():  # Ctrl-C while the command line starts: one line, not an import traceback
    from . import solvers
    from .solvers import schedules
    from .solvers.driver import sample
    from .models.checkpoint import load_model

__all__ = ["solvers", "schedules", "sample", "load_model", "__version__"]
