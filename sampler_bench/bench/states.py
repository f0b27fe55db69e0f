"""The samples of a cell: per-sample seeds, starting states, and the data read out of a final state.

Sample ``i`` of a cell draws its initial noise *and* every noise of a stochastic sampler from its own
``torch.Generator`` seeded with ``seed + i`` (EDM's per-sample generators, Karras et al. 2022,
arXiv 2206.00364), so sample ``i`` is a function of ``(seed, i)`` only, whatever the batch size or
the number of processes.
"""

from __future__ import annotations

import torch

from ..rng import generators_for


def sample_seeds(seed: int, start: int, stop: int) -> list[int]:
    """Seeds of samples ``[start, stop)``: sample i uses ``seed + i`` (documented in benchmarks/example_sweep.toml).

    Every cell of a sweep uses the same seeds, so samplers are compared on the same initial noise."""
    return [seed + i for i in range(start, stop)]


def initial_states(model, seed: int, start: int, stop: int, sigma_max: float, device: str,
                   generators: list | None = None) -> torch.Tensor:
    """Float64 starting states of samples ``[start, stop)`` at ``sigma_max`` from their own generators."""
    gens = generators if generators is not None else generators_for(sample_seeds(seed, start, stop), device)
    x = model.prior(stop - start, generator=gens).to(device=device, dtype=torch.float64)
    if sigma_max != model.sigma_max:  # Gaussian prior N(0, sigma^2 I): rescaling is exact
        x = x * (sigma_max / model.sigma_max)
    return x


def class_labels(model, seed: int, start: int, stop: int, sigma_max: float, device: str,
                 generators: list | None = None) -> torch.Tensor | None:
    """Class labels of samples ``[start, stop)`` of a class-conditional model (None otherwise): drawn from
    each sample's generator *after* its starting state (EDM's generate.py order), so a sample's label
    depends on ``(seed, i)`` only. Without ``generators`` the starting states are drawn first, to the
    same effect (the reference endpoints ask for the labels alone)."""
    from ..models.guidance import draw_class_labels

    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if not num_classes:
        return None
    if generators is None:
        generators = generators_for(sample_seeds(seed, start, stop), device)
        initial_states(model, seed, start, stop, sigma_max, device, generators=generators)
    return draw_class_labels(generators, num_classes, device)


def data_of(model, states: torch.Tensor) -> torch.Tensor:
    """The generated data in a sampler's output: ``model.data_from_state(u)`` for processes whose
    state is larger than the data (CLD: u = (x, v) -> x = u[:, 0]), the output itself otherwise.
    Metrics, reference endpoints and kept samples all see the data."""
    from_state = getattr(model, "data_from_state", None)
    return states if from_state is None else from_state(states)
