"""Random numbers driven only by the caller's generator(s), shared by samplers, priors and datasets.

With one ``torch.Generator`` per sample (EDM's ``StackedRandomGenerator`` idea, Karras et al. 2022,
``generate.py``), sample ``i`` is a function of its own seed alone, whatever the batch it is drawn in.
A :class:`~sampler_bench.philox.PhiloxNoise` (counter-based, keyed on seed, sample index and draw index)
gives the same invariance without one generator object per sample; it is accepted wherever a list
of per-sample generators is.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .philox import PhiloxNoise

Generators = torch.Generator | Sequence[torch.Generator] | PhiloxNoise | None

#: The sweep's noise generators: counter-based (the default) or one torch.Generator per sample.
NOISE_GENERATORS = ("philox", "torch")


def check_generator(generator: Generators, batch: int) -> None:
    """Reject a generator list whose length is not the batch size."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if isinstance(generator, PhiloxNoise):
        if len(generator) != batch:
            raise ValueError(f"the PhiloxNoise covers {len(generator)} samples but the batch has {batch}; "
                             "give it one index per sample")
        return
    if not isinstance(generator, Sequence) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError("generator must be a torch.Generator or a list of one torch.Generator per sample")
    if len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch} samples; pass one per sample")


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like ``x``; per-sample generators draw their own rows.

    Noise is drawn on the generator's device in float32 and then cast, so a sample's noise is
    the same whether the state is float32 or float64 (and the same across batch splits).
    """
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else x.device
        z = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
        return z.to(device=x.device, dtype=x.dtype)
    if isinstance(generator, PhiloxNoise):
        return generator.randn(x.shape[1:]).to(device=x.device, dtype=x.dtype)
    rows = [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in generator]
    return torch.stack(rows).to(device=x.device, dtype=x.dtype)


def generators_for(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded with that sample's seed."""
    out = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        out.append(g)
    return out


def noise_generator(kind: str, seed: int, start: int, stop: int, device: str | torch.device = "cpu") -> Generators:
    """The generator that drives the noise of samples ``[start, stop)`` of a sweep seeded ``seed``.

    ``'philox'``: one :class:`PhiloxNoise` keyed on ``(seed, i, draw)``; ``'torch'``: one
    ``torch.Generator`` per sample seeded ``seed + i`` (EDM's and k-diffusion's seeding).
    """
    if kind == "philox":
        return PhiloxNoise(seed, range(start, stop), device=device)
    if kind == "torch":
        return generators_for(range(seed + start, seed + stop), device)
    raise ValueError(f"unknown noise generator {kind!r}; expected one of {', '.join(NOISE_GENERATORS)}")
