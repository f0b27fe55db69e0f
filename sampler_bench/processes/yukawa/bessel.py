"""log K_nu(x) of the modified Bessel function of the second kind, for the orders the Yukawa kernel needs.

The N-dimensional Yukawa kernel is p(x | y, z) ~ z r^{-(N+1)/2} K_{(N+1)/2}(m r) and its birth/death rate
uses K_{(N-1)/2}(m r) / K_{(N+1)/2}(m r) (docs/processes.md, "Yukawa"). These orders are integers or half
integers (nu = k/2), and PyTorch has no K_nu for them; scipy's overflows for the orders of image data.

Upward recurrence (Abramowitz & Stegun 9.6.26: K_{nu+1}(x) = K_{nu-1}(x) + (2 nu / x) K_nu(x)), written
for the ratio q_nu = K_{nu+1}/K_nu = 1/q_{nu-1} + 2 nu / x, is stable upwards (K grows with nu) and needs
only positive terms, so log K_nu = log K_{nu0} + sum log q is exact to round-off for any order in float64.
Starting values: K_{1/2}(x) = sqrt(pi/(2x)) e^{-x} (closed form) or K_0, K_1 (torch.special, scaled).
"""

from __future__ import annotations

import math

import torch


def log_bessel_k(twice_nu: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log K_nu(x), K_{nu-1}(x) / K_nu(x)) for nu = twice_nu / 2 >= 1/2 and x > 0, in float64.

    ``twice_nu`` is an integer >= 1 (half-integer orders for odd values); the ratio at nu = 1/2 is
    K_{-1/2}/K_{1/2} = 1.
    """
    if isinstance(twice_nu, bool) or not isinstance(twice_nu, int) or twice_nu < 1:
        raise ValueError(f"log_bessel_k needs the order as an integer 2 nu >= 1, got {twice_nu!r}")
    x = torch.as_tensor(x, dtype=torch.float64)
    if twice_nu % 2:  # half-integer: K_{1/2} in closed form, and K_{-1/2} = K_{1/2}
        log_k = 0.5 * math.log(math.pi / 2) - 0.5 * torch.log(x) - x
        ratio = torch.ones_like(x)  # K_{nu-1}/K_nu at nu = 1/2
        nu = 0.5
    else:  # integer: K_0, K_1 from the exponentially scaled forms (no underflow at large x)
        k0 = torch.special.scaled_modified_bessel_k0(x)
        k1 = torch.special.scaled_modified_bessel_k1(x)
        log_k = torch.log(k1) - x
        ratio = k0 / k1
        nu = 1.0
    while nu < twice_nu / 2 - 1e-9:
        # q_nu = K_{nu+1}/K_nu = K_{nu-1}/K_nu + 2 nu / x
        q = ratio + 2.0 * nu / x
        log_k = log_k + torch.log(q)
        ratio = 1.0 / q
        nu += 1.0
    return log_k, ratio
