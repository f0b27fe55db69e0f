"""The analytic Yukawa model: an exact oracle (:mod:`.exact`) with its process, for sweeps and tests."""

from __future__ import annotations

import torch

from ...hashing import tensor_hash
from ...rng import Generators
from .exact import YukawaMixture, YukawaPointSet
from .process import YukawaProcess


class YukawaAnalyticModel:
    """A Yukawa model whose denoiser and rate are exact (a mixture or a point set), for sweeps and tests.

    The model contract for ``process == 'yukawa'``: ``model(x, z)`` returns D; ``denoise_with_rate(x, z)``
    returns (D, kappa) from one evaluation; ``prior(n)`` is the kernel at z_max centred at 0;
    ``sigma_min``/``sigma_max`` are z_min/z_max; ``distribution`` the data's mixture when there is one.
    """

    process = "yukawa"

    def __init__(self, name: str, exact: YukawaMixture | YukawaPointSet, process: YukawaProcess | None = None,
                 description: str = "", shape=None):
        if not isinstance(exact, (YukawaMixture, YukawaPointSet)):
            raise ValueError("YukawaAnalyticModel takes a YukawaMixture or a YukawaPointSet")
        self.name = name
        self.exact = exact
        self.process_def = process or YukawaProcess(m=exact.m)
        if self.process_def.m != exact.m:
            raise ValueError(f"the oracle's mass m = {exact.m} differs from the process's m = {self.process_def.m}")
        self.distribution = exact.mixture if isinstance(exact, YukawaMixture) else None
        default_shape = (exact.dim,) if isinstance(exact, YukawaMixture) else exact.shape
        self.shape = tuple(shape) if shape is not None else tuple(default_shape)
        self.sigma_min = self.process_def.z_min
        self.sigma_max = self.process_def.z_max
        self.description = description

    def __call__(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.exact(x, z)

    def denoise_with_rate(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.exact.denoise_with_rate(x, z)

    def prior(self, n: int, generator: Generators = None, dtype=torch.float64, device=None) -> torch.Tensor:
        return self.process_def.prior(n, self.shape, generator, dtype=dtype, device=device)

    def sample_data(self, n: int, generator: Generators = None) -> torch.Tensor:
        return self.exact.sample(n, generator=generator).reshape(n, *self.shape)

    def fingerprint(self) -> str:
        ex = self.exact
        parts = (ex.mixture.weights, ex.mixture.means, ex.mixture.covs) if isinstance(ex, YukawaMixture) else (ex.points, ex.log_weights)
        return tensor_hash(*parts, extra={"name": self.name, "type": type(ex).__name__, "shape": list(self.shape),
                                          "process": self.process_def.config()})
