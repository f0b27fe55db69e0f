"""What a sweep needs from a model: a denoiser plus its process, prior, noise range and shape.

Every model (a built-in analytic one, a trained checkpoint from ``sb.load_model``, an adapter for an
outside network) satisfies :class:`Model`:

* ``model(x, sigma)`` -> E[x0 | x], ``sigma`` of shape [B] (docs/notation.md, "The public API");
* ``model.prior(n, generator=None)`` -> n starting states at ``model.sigma_max``;
* ``sigma_min``, ``sigma_max``, ``shape``, ``process`` ('gaussian', 'pfgmpp', 'cld', ...);
* ``fingerprint()`` -> a content hash recorded with every result;
* ``sample_data(n, generator=None)`` -> draws of the data distribution (reference statistics), or
  ``None`` when the model has no data attached; ``distribution`` -> the analytic law, if any.
* optional ``floor_data(n, generator=None)`` -> draws for the noise floor that share no row with
  what ``sample_data`` gives (a model whose data is a finite set of rows must have it: trained
  models read the other split); without it the floor uses ``sample_data`` (exact draws of a law).

Gradients: a network-backed model runs its network under :func:`network_grad_mode` -- with autograd
only when the caller is in grad mode *and* passes an input that requires a gradient (a schedule
optimiser differentiating through the sampler, ``solvers/optimised/ld3.py``). Sampling runs under
``torch.no_grad`` (``solvers/driver.py``, ``run_solver``), and a plain call with inputs that need no
gradient builds no graph either, although the network's parameters require gradients.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ..hashing import tensor_hash  # noqa: F401  re-exported
from ..rng import randn_like


def network_grad_mode(*inputs) -> torch.set_grad_enabled:
    """The grad mode to run a network in: enabled iff the caller's grad mode is on and one of ``inputs``
    (the state, the noise level, ...) requires a gradient. Without the second condition a call outside
    ``no_grad`` would record a graph over the parameters (memory, and the time to free it) that no one
    asked for; without the first, a network would ignore a caller's ``no_grad``."""
    wanted = torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs)
    return torch.set_grad_enabled(wanted)


@runtime_checkable
class Model(Protocol):
    name: str
    process: str
    shape: tuple[int, ...]
    sigma_min: float
    sigma_max: float

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...

    def prior(self, n: int, generator=None) -> torch.Tensor: ...

    def fingerprint(self) -> str: ...


class AnalyticModel:
    """A model whose denoiser is exact: a Gaussian (mixture) or point set under the Gaussian kernel.

    The prior is N(0, sigma_max^2 I) (the VE/EDM convention; the exact marginal at sigma_max differs
    from it by the data spread, as for any trained EDM model).
    """

    process = "gaussian"

    def __init__(self, name: str, distribution, sigma_min: float = 0.002, sigma_max: float = 80.0, description: str = ""):
        self.name = name
        self.distribution = distribution
        self.shape = (int(distribution.dim),) if hasattr(distribution, "dim") else tuple(distribution.shape)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.description = description

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.distribution(x, sigma)

    def prior(self, n: int, generator=None, dtype=torch.float64) -> torch.Tensor:
        return self.sigma_max * randn_like(torch.empty((n, *self.shape), dtype=dtype), generator)

    def sample_data(self, n: int, generator=None) -> torch.Tensor:
        return self.distribution.sample(n, generator=generator)

    def fingerprint(self) -> str:
        d = self.distribution
        parts = [getattr(d, a) for a in ("weights", "means", "covs", "points", "mean") if isinstance(getattr(d, a, None), torch.Tensor)]
        return tensor_hash(*parts, extra={"name": self.name, "type": type(d).__name__, "std": getattr(d, "std", None),
                                          "sigma_min": self.sigma_min, "sigma_max": self.sigma_max})
