"""Tiny plug-in model factories for the tests (importable as ``plugin_factories:NAME``).

``gaussian``: data N(mean, I) in ``dim`` dimensions, exact denoiser D = mean + (x - mean)/(1 + sigma^2).
``conditional``: data N(mu_c, I) for class c (mu_c = c * ones), exact class denoisers; label -1 (no
label) is the class-marginal... approximated here by mean 0, which is all guidance arithmetic needs.
The others break one rule of the protocol each.
"""

from __future__ import annotations

import torch

from sampler_bench.models.plugin import unpickles


def _col(s, x):
    return s.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class Gaussian:
    process = "gaussian"
    sigma_min, sigma_max = 0.002, 80.0

    def __init__(self, dim=2, mean=0.0, weight_files=()):
        self.shape = (dim,)
        self.mean = float(mean)
        self.weight_files = list(weight_files)
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.mean + (x - self.mean) / (1 + _col(sigma, x) ** 2)


def gaussian(dim=2, mean=0.0, weight_files=()):
    return Gaussian(dim, mean, weight_files)


class Conditional:
    process = "gaussian"
    sigma_min, sigma_max = 0.002, 80.0
    shape = (3,)

    def __init__(self, num_classes=4, null_label=True):
        self.num_classes = num_classes
        self.null_label = null_label
        self.forwards = []  # batch size of every forward call

    def __call__(self, x, sigma, class_labels=None):
        self.forwards.append(x.shape[0])
        if class_labels is None:
            class_labels = torch.full((x.shape[0],), -1)
        mu = class_labels.clamp_min(0).to(x.dtype) * (class_labels >= 0).to(x.dtype)
        mu = _col(mu, x)
        return mu + (x - mu) / (1 + _col(sigma, x) ** 2)


    def sample_data(self, n, generator=None):
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        return labels[:, None].double() + torch.randn(n, 3, generator=generator, dtype=torch.float64)


def conditional(num_classes=4, null_label=True):
    return Conditional(num_classes, null_label)


def wrong_shape():
    g = Gaussian()
    g.__class__ = type("WrongShape", (Gaussian,), {"__call__": lambda self, x, s: x[:, :1]})
    return g


def nan_output():
    g = Gaussian()
    g.__class__ = type("NaNOut", (Gaussian,), {"__call__": lambda self, x, s: x * float("nan")})
    return g


def raises():
    raise RuntimeError("weights file is corrupt")


def missing_sigma_max():
    class M:
        process, sigma_min, shape = "gaussian", 0.002, (2,)

        def __call__(self, x, s):
            return x
    return M()


def inverted_range():
    g = Gaussian()
    g.sigma_min, g.sigma_max = 80.0, 0.002
    return g


def integer_output():
    g = Gaussian()
    g.__class__ = type("IntOut", (Gaussian,), {"__call__": lambda self, x, s: x.long()})
    return g


@unpickles
def from_pickle(path="x.pkl", trust_pickle=False):
    assert trust_pickle
    return Gaussian()


NOT_CALLABLE = 3


def stack_squares(z):
    """A 'decoder' from [B, D] to [B, 2D]: (z, z^2)."""
    return torch.cat([z, z**2], 1)


def nan_decoder(z):
    return z * float("nan")


class LatentGaussian(Gaussian):
    """Latents N(0, I); its reference data are decoded images (what a latent model's data set holds)."""

    def sample_data(self, n, generator=None):
        return stack_squares(torch.randn(n, self.shape[0], generator=generator, dtype=torch.float64))


def latent_gaussian(dim=2):
    return LatentGaussian(dim)
