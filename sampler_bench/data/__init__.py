"""Datasets (all usable offline) and the digits feature extractor.

``load_dataset({"name": ..., **params})`` builds one by name:

=================  ============================================================  ==========================
name               what                                                          parameters
=================  ============================================================  ==========================
ring, moons,       2-D toys (:mod:`.toys`); ``ring`` is an exact Gaussian mixture  n_train, n_test, seed,
swissroll,                                                                        noise
checkerboard
gmm                N-D Gaussian mixture with full covariances (:mod:`.mixtures`)  dim, components, seed, ...
digits             sklearn's 8x8 digits, fixed split (:mod:`.digits`)            flatten
lfw                scikit-image's LFW faces, 24x24 (:mod:`.images`)              test_size
folder             a folder of images (:mod:`.images`)                           path, resolution, channels
cifar10            CIFAR-10 python batches (:mod:`.cifar10`)                     root, download
=================  ============================================================  ==========================
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .base import Dataset
from .cifar10 import cifar10
from .digits import digits
from .images import folder, lfw
from .mixtures import gaussian_mixture
from .toys import TOYS, toy


def _toy(name: str) -> Callable[..., Dataset]:
    def build(n_train: int = 20000, n_test: int = 5000, seed: int = 0, noise: float = 0.05) -> Dataset:
        return toy(name, n_train=n_train, n_test=n_test, seed=seed, noise=noise)

    return build


DATASETS: dict[str, Callable[..., Dataset]] = {
    **{name: _toy(name) for name in TOYS},
    "gmm": gaussian_mixture,
    "digits": digits,
    "lfw": lfw,
    "folder": folder,
    "cifar10": cifar10,
}


def available() -> list[str]:
    return sorted(DATASETS)


def load_dataset(config: dict[str, Any] | str) -> Dataset:
    """A dataset from ``{"name": ..., **params}`` (or just its name); ValueError naming what to change."""
    from ..options import closest

    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a dataset config needs a 'name' (one of {', '.join(available())}), got {config!r}")
    name = config["name"]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}{closest(str(name), available())}; available: {', '.join(available())}")
    builder = DATASETS[name]
    params = {k: v for k, v in config.items() if k != "name"}
    allowed = [p for p in inspect.signature(builder).parameters]
    for key in params:
        if key not in allowed:
            raise ValueError(f"dataset {name!r} has no parameter {key!r}{closest(key, allowed)}; "
                             f"its parameters are: {', '.join(allowed) or 'none'}")
    return builder(**params)


__all__ = ["Dataset", "DATASETS", "available", "load_dataset", "digits", "lfw", "folder", "cifar10", "gaussian_mixture", "toy"]
