"""yukawa_smc: sequential Monte Carlo on the Yukawa flow (GenPhys, Liu et al., arXiv 2304.02637, eq. 2 with R != 0).

Every sample is a particle with a log-weight l. Going down the z grid each step moves the particle with the
denoiser-form velocity dx/dz = (x - D(x, z))/z (Euler, or Heun: EDM's Algorithm 1 in z) and adds the
birth/death term integrated along it, l += int_{z_next}^{z} (kappa(x(z'), z') - m) dz' (rectangle with
Euler, trapezoid with Heun), so that particles crossing regions where the death rate is high (kappa > m:
mass that the forward process removes fastest) gain weight (derivation: docs/processes.md, "Yukawa",
the weighted flow). When the effective sample size of a population, (sum w)^2 / sum w^2, falls below
``ess`` times its size, the population is resampled systematically (Kitagawa 1996) and its weights reset;
after the last step it is resampled once more, so the output is an equally weighted sample.
One model call returns both D and kappa (``model.denoise_with_rate``) and counts one NFE.

The population is the batch, or consecutive groups of ``population`` samples: resampling couples the samples of
a population, so unlike the ODE samplers a sample depends on its population's seeds, not on its own only.
Each resampling draws one normal per sample from the generator(s) (the offset of a population is Phi of its
first sample's draw). What happened is recorded in ``notes["resampling"]`` of the counting wrapper
(the sweep stores it with the cell): the steps where a population was resampled and the smallest ESS fraction.
"""

from __future__ import annotations

import math

import torch

from ...processes.kind import YUKAWA_WEIGHTED_FLOW
from ...processes.yukawa import YukawaProcess
from ...rng import randn_like
from ..registry import Option, SolverOptionError, register

_PAPER = ("Liu, Luo, Xu, Jaakkola, Tegmark, 'GenPhys: From Physical Processes to Generative Models' "
          "(arXiv 2304.02637), the Yukawa flow with its death term; systematic resampling: Kitagawa (1996)")


def _yukawa_process(ctx) -> YukawaProcess:
    for obj in (ctx.model, getattr(ctx.model, "denoiser", None)):
        proc = getattr(obj, "process_def", None)
        if isinstance(proc, YukawaProcess):
            return proc
    inner = getattr(ctx.model, "denoiser", ctx.model)
    raise SolverOptionError(
        f"solver {ctx.name!r} samples the Yukawa process only: pass a Yukawa model, i.e. an object whose `process_def` "
        "is a sampler_bench.processes.yukawa.YukawaProcess and that has denoise_with_rate(x, z) -> (D, kappa) (e.g. "
        f"sampler_bench.processes.yukawa.YukawaAnalyticModel or a Yukawa checkpoint); got {type(inner).__name__}")


def _init(ctx, x: torch.Tensor) -> None:
    proc = _yukawa_process(ctx)
    if ctx.sigmas[0] > proc.z_max * (1 + 1e-9):
        raise SolverOptionError(f"solver {ctx.name!r}: the grid starts at z = {ctx.sigmas[0]:g}, above the model's "
                                f"z_max = {proc.z_max:g} where its prior is drawn; start at model.sigma_max")
    B = x.shape[0]
    size = ctx.options["population"] or B
    if B % size:
        raise SolverOptionError(f"solver {ctx.name!r}: a batch of {B} samples does not split into populations of "
                                f"{size}; use a batch size that is a multiple of `population`, or population = 0 (the batch)")
    # the starting states come from the process's proposal (model.prior): weight them to its prior
    log_w = proc.log_prior_ratio(x, ctx.sigmas[0]).to(x.device) if ctx.options["weighted"] else \
        torch.zeros(B, dtype=torch.float64, device=x.device)
    ctx.state.update(m=proc.m, size=size, log_w=log_w, events=[], min_ess=1.0)


def log_ess_fraction(log_w: torch.Tensor) -> torch.Tensor:
    """log of ESS / n = (sum w)^2 / (n sum w^2) per population (rows of ``log_w`` [P, n])."""
    n = log_w.shape[1]
    return 2 * torch.logsumexp(log_w, 1) - torch.logsumexp(2 * log_w, 1) - math.log(n)


def systematic_indices(log_w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Systematic resampling: for each population (row of ``log_w`` [P, n]) the n ancestors of the
    points (u_p + j)/n, j = 0..n-1, on its normalised cumulative weights; ``u`` [P] in [0, 1)."""
    P, n = log_w.shape
    cdf = torch.cumsum(torch.softmax(log_w, 1), 1)
    cdf[:, -1] = 1.0  # round-off must not leave a point above the last ancestor
    points = (u[:, None] + torch.arange(n, dtype=torch.float64, device=log_w.device)[None]) / n
    return torch.searchsorted(cdf.contiguous(), points.contiguous(), right=True).clamp_max(n - 1)


def _resample(ctx, x: torch.Tensor, i: int, force: bool) -> torch.Tensor:
    size, log_w = ctx.state["size"], ctx.state["log_w"]
    lw = log_w.reshape(-1, size)
    frac = log_ess_fraction(lw).exp()
    ctx.state["min_ess"] = min(ctx.state["min_ess"], float(frac.min()))
    pick = torch.ones_like(frac, dtype=torch.bool) if force else frac < ctx.options["ess"]
    if not bool(pick.any()):
        return x
    draws = randn_like(torch.empty((x.shape[0], 1), dtype=torch.float64), ctx.generator)[:, 0]
    u = torch.special.ndtr(draws.reshape(-1, size)[:, 0]).clamp(0.0, 1.0 - 1e-16)
    idx = systematic_indices(lw, u)
    idx = torch.where(pick[:, None], idx, torch.arange(size, device=idx.device)[None])
    flat = (idx + size * torch.arange(lw.shape[0], device=idx.device)[:, None]).reshape(-1)
    lw = torch.where(pick[:, None], torch.zeros_like(lw), lw)
    ctx.state["log_w"] = lw.reshape(-1)
    if not force:
        ctx.state["events"].append({"step": i + 1, "z": ctx.sigmas[i + 1], "populations": int(pick.sum()),
                                    "ess_fraction": round(float(frac[pick].min()), 6)})
    return x[flat.to(x.device)]


def _record(ctx) -> None:
    ctx.model.notes["resampling"] = {
        "events": len(ctx.state["events"]), "steps": ctx.state["events"], "min_ess_fraction": round(ctx.state["min_ess"], 6),
        "populations": ctx.state["log_w"].numel() // ctx.state["size"], "population_size": ctx.state["size"],
        "threshold": ctx.options["ess"], "weighted": ctx.options["weighted"],
    }


@register(
    "yukawa_smc",
    order=lambda opts: opts["order"],
    stochastic=True,
    paper=_PAPER,
    description="Sequential Monte Carlo on the Yukawa flow in z: Euler (order 1) or Heun (order 2) transport "
    "dx/dz = (x - D)/z with the birth/death log-weights int (kappa - m) dz, systematic resampling when the ESS "
    "fraction drops below `ess`, and a final resampling. One NFE returns D and kappa. Yukawa models only; "
    "weighted = false is the plain ODE (the wrong law unless m z_max is small), for comparison.",
    options={
        "order": Option(1, int, "transport: 1 = Euler (1 NFE per step), 2 = Heun (2 NFE per step, Euler onto z = 0)",
                        choices=(1, 2)),
        "ess": Option(0.5, float, "resample a population when its ESS / size falls below this", low=0.0, high=1.0),
        "population": Option(0, int, "samples per SMC population (0: the whole batch); the batch must be a multiple",
                             low=0),
        "weighted": Option(True, bool, "integrate the birth/death weights (false: the plain ODE, no weights, no resampling)"),
    },
    nfe=lambda steps, ends_at_zero, opts: steps if opts["order"] == 1 else 2 * steps - (1 if ends_at_zero else 0),
    needs=(YUKAWA_WEIGHTED_FLOW,),
    init=_init,
)
def yukawa_smc(ctx, x, i):
    """One SMC step down the z grid: transport by dx/dz = (x - D)/z (Euler, or Heun as EDM's Alg. 1, Karras
    et al., arXiv 2206.00364), log-weights += the birth/death integral of (kappa - m) along it, and systematic
    resampling (Kitagawa (1996)) when the ESS fraction drops below ``ess``. The weighted flow is GenPhys's
    (Liu et al., arXiv 2304.02637) density-flow form with its source term R != 0 (eq. 2 is the R = 0 case);
    derivation in docs/processes.md, "Yukawa"."""
    z, z_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    m, weighted = ctx.state["m"], ctx.options["weighted"]
    D, kappa = ctx.model.with_rate(x, z)
    if z_next == 0.0:  # the denoising step; the rate's integral over (0, z] by its value at z
        x_next, rate = D, kappa.to(torch.float64)
    else:
        d = (x - D) / z
        x_next = x + (z_next - z) * d
        rate = kappa.to(torch.float64)
        if ctx.options["order"] == 2:  # Heun's correction, and the trapezoid for the weights
            D2, kappa2 = ctx.model.with_rate(x_next, z_next)
            x_next = x + (z_next - z) * 0.5 * (d + (x_next - D2) / z_next)
            rate = 0.5 * (rate + kappa2.to(torch.float64))
    last = i == ctx.steps - 1
    if not weighted:  # the plain ODE: nothing to resample, nothing to record
        return x_next
    ctx.state["log_w"] = ctx.state["log_w"] + (z - z_next) * (rate.to(ctx.state["log_w"].device) - m)
    x_next = _resample(ctx, x_next, i, force=False) if not last else x_next
    if last:
        x_next = _resample(ctx, x_next, i, force=True)
        _record(ctx)
    return x_next
