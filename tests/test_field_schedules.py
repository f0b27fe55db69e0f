"""The schedules of issue #15: kl_optimal, laplace, linear_quadratic, simple, sgm_uniform, beta (ComfyUI's
definitions), diffusers' leading / linspace / trailing spacings, and Align Your Steps.

Proved here: every schedule is strictly decreasing with the documented endpoints and lengths for several
step counts, validates its parameters, and reproduces its reference: diffusers' schedulers (installed)
for the spacings, and independent re-implementations of ComfyUI's ``comfy/samplers.py`` /
``comfy/k_diffusion/sampling.py`` / ``comfy_extras/nodes_align_your_steps.py`` (read 2025; ComfyUI does not
install here) written below in ComfyUI's float32 arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

import sampler_bench as sb
from sampler_bench.solvers import field_schedules as fs

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
CONTINUOUS = ["kl_optimal", "laplace", "linear_quadratic"]
TABLE = ["simple", "sgm_uniform", "beta", "leading", "linspace", "trailing", "ays"]
LO, HI = 0.002, 800.0  # a range containing every table used here


@pytest.mark.parametrize("name", CONTINUOUS + TABLE)
@pytest.mark.parametrize("append_zero", [True, False], ids=["to_zero", "to_sigma_min"])
def test_schedule_is_strictly_decreasing_with_its_endpoints_and_length(name, append_zero):
    table = fs.vp_training_sigmas()
    for n in (1, 2, 5, 10, 37):
        if name == "linear_quadratic" and n + (0 if append_zero else 1) == 1 and not append_zero:
            continue
        s = sb.schedules.build(name, n, LO, HI, append_zero=append_zero)
        assert s.dtype == torch.float64 and s.numel() == n + 1, (name, n)
        assert (s[1:] < s[:-1]).all() and (s[:-1] > 0).all()
        assert (s[-1] == 0) == append_zero
        top = {"ays": 14.6146412293, "linear_quadratic": HI, "kl_optimal": HI}.get(name)
        if name in ("simple", "sgm_uniform", "beta", "trailing") or (name == "linspace" and s.numel() > 2):
            top = table[-1].item()  # (diffusers' 'linspace' with one level picks timestep 0)
        if top is not None:
            assert math.isclose(s[0].item(), top, rel_tol=1e-12), (name, n, s[0].item())
        if name == "kl_optimal" and not append_zero:
            assert math.isclose(s[-1].item(), LO, rel_tol=1e-12)


def test_laplace_and_sgm_uniform_reach_their_ends():
    s = sb.schedules.build("laplace", 8, 0.01, 50.0, append_zero=False, mu=0.0, beta=2.0)
    assert s[0] == 50.0 and s[-1] == 0.01  # clamped at both ends
    s = sb.schedules.build("sgm_uniform", 4, LO, HI)
    assert math.isclose(s[0].item(), fs.vp_training_sigmas()[-1].item(), rel_tol=1e-12)


@pytest.mark.parametrize("name, params, message", [
    ("laplace", {"beta": 0.0}, "beta must be a finite number > 0"),
    ("laplace", {"mu": float("nan")}, "mu must be a finite number"),
    ("linear_quadratic", {"threshold_noise": 1.5}, "threshold_noise must be a finite number > 0 and <= 1"),
    ("linear_quadratic", {"linear_steps": 8}, r"linear_steps \(8\) must be smaller"),
    ("beta", {"alpha": -1.0}, "alpha must be a finite number > 0"),
    ("simple", {"beta_schedule": "cosine"}, "beta_schedule must be one of"),
    ("leading", {"num_train_timesteps": 1}, "num_train_timesteps must be an integer >= 2"),
    ("linspace", {"steps_offset": 1}, "unexpected keyword argument 'steps_offset'"),
    ("leading", {"steps_offset": -1}, "steps_offset must be an integer >= 0"),
    ("trailing", {"beta_end": 2.0}, "beta_end must be a finite number > 0 and <= 1"),
    ("ays", {"model": "sd3"}, "model must be one of 'sd15', 'sdxl', 'svd'"),
    ("kl_optimal", {"rho": 7.0}, "unexpected keyword argument 'rho'"),
])
def test_bad_schedule_parameters_raise_one_readable_error(name, params, message):
    with pytest.raises(ValueError, match=message):
        sb.schedules.build(name, 8, LO, HI, **params)


def test_table_schedules_refuse_a_range_that_does_not_hold_the_training_levels():
    with pytest.raises(ValueError, match=r"schedule 'trailing': the training levels span \[0.01.*, 157.*\], outside"):
        sb.schedules.build("trailing", 8, 0.002, 80.0, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    with pytest.raises(ValueError, match=r"schedule 'ays' \(svd\): its levels span \[0.002, 700\]"):
        sb.schedules.build("ays", 8, 0.002, 80.0, model="svd")
    with pytest.raises(ValueError, match=r"schedule 'simple': the training levels span \[0.029.*, 14.6.*\], outside"):
        sb.schedules.build("simple", 8, 0.05, 80.0)
    with pytest.raises(ValueError, match="repeats a training timestep"):
        sb.schedules.build("beta", 400, LO, HI)
    with pytest.raises(ValueError, match="below sigma_min"):
        sb.schedules.build("linear_quadratic", 40, 100.0, HI)


def test_every_schedule_is_listed_by_the_cli():
    from click.testing import CliRunner

    from sampler_bench.cli import main

    out = CliRunner().invoke(main, ["list", "schedules"]).output
    for name in CONTINUOUS + TABLE:
        assert name in out, name


# ------------------------------------------------------------------------------------------------
# diffusers' spacings: the same timesteps as its schedulers, the same sigmas.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("betas", [{"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}, SD,
                                   {"beta_schedule": "squaredcos_cap_v2"}], ids=["linear", "sd", "cosine"])
def test_spacings_match_diffusers_schedulers(spacing, betas):
    schedulers = pytest.importorskip("diffusers.schedulers")
    for cls in (schedulers.DDPMScheduler, schedulers.DDIMScheduler):
        for n in (1, 7, 10, 50, 999):
            offset = 1 if spacing == "leading" and n == 50 else 0
            sched = cls(timestep_spacing=spacing, steps_offset=offset, **betas)
            sched.set_timesteps(n)
            ts = fs.diffusers_timesteps(spacing, n, 1000, offset)
            assert ts == sched.timesteps.tolist(), (cls.__name__, n)
            extra = {"steps_offset": offset} if spacing == "leading" else {}
            ours = sb.schedules.build(spacing, n, 1e-3, 1e5, **extra, **betas)
            # diffusers accumulates alpha_bar in float32: compare alpha_bar = 1/(1 + sigma^2), absolutely
            alpha_bar = sched.alphas_cumprod.double()[sched.timesteps]
            torch.testing.assert_close(1 / (1 + ours[:-1] ** 2), alpha_bar, rtol=0, atol=2e-6)


# ------------------------------------------------------------------------------------------------
# ComfyUI's definitions, re-implemented here in its float32 arithmetic.
# ------------------------------------------------------------------------------------------------


class _ComfyDiscrete:
    """ComfyUI ``ModelSamplingDiscrete``: a float32 table of sigmas (ascending), timestep <-> sigma."""

    def __init__(self, sigmas64: torch.Tensor):
        self.sigmas = sigmas64.float()
        self.log_sigmas = self.sigmas.log()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float(), min=0, max=len(self.sigmas) - 1)
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()


def _comfy_simple(s, steps):
    ss = len(s.sigmas) / steps
    return torch.FloatTensor([float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def _comfy_sgm_uniform(s, steps):
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    timesteps = torch.linspace(start, end, steps + 1)[:-1]
    return torch.FloatTensor([float(s.sigma(t)) for t in timesteps] + [0.0])


def _comfy_beta(s, steps, alpha=0.6, beta=0.6):
    total = len(s.sigmas) - 1
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * total)
    sigs, last = [], -1
    for t in ts:
        if t != last:
            sigs.append(float(s.sigmas[int(t)]))
        last = t
    return torch.FloatTensor(sigs + [0.0])


def _comfy_kl_optimal(n, sigma_min, sigma_max):
    adj = torch.arange(n, dtype=torch.float).div_(n - 1)
    sigmas = adj.new_zeros(n + 1)
    sigmas[:-1] = (adj * math.atan(sigma_min) + (1 - adj) * math.atan(sigma_max)).tan_()
    return sigmas


def _comfy_laplace(n, sigma_min, sigma_max, mu=0.0, beta=0.5):
    x = torch.linspace(0, 1, n)
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.cat([torch.clamp(torch.exp(lmb), min=sigma_min, max=sigma_max), torch.zeros(1)])


def _comfy_linear_quadratic(sigma_max, steps, threshold_noise=0.025, linear_steps=None):
    if steps == 1:
        sched = [1.0, 0.0]
    else:
        if linear_steps is None:
            linear_steps = steps // 2
        lin = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        diff = linear_steps - threshold_noise * steps
        q_steps = steps - linear_steps
        q_coef = diff / (linear_steps * q_steps**2)
        l_coef = threshold_noise / linear_steps - 2 * diff / (q_steps**2)
        const = q_coef * (linear_steps**2)
        quad = [q_coef * (i**2) + l_coef * i + const for i in range(linear_steps, steps)]
        sched = [1.0 - x for x in lin + quad + [1.0]]
    return torch.FloatTensor(sched) * torch.tensor(sigma_max, dtype=torch.float32)


def _comfy_ays(model_type, steps):
    levels = {"sd15": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
                       0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
              "svd": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]}[model_type][:]
    if steps + 1 != len(levels):
        xs = np.linspace(0, 1, len(levels))
        ys = np.log(levels[::-1])
        levels = np.exp(np.interp(np.linspace(0, 1, steps + 1), xs, ys))[::-1].copy()
    levels[-1] = 0
    return torch.FloatTensor(levels)


@pytest.mark.parametrize("n", [1, 3, 8, 25, 100])
def test_comfyui_schedules_match_the_reference_definitions(n):
    table = fs.vp_training_sigmas(**SD)
    comfy = _ComfyDiscrete(table)
    cases = [
        (sb.schedules.build("simple", n, LO, HI, **SD), _comfy_simple(comfy, n)),
        (sb.schedules.build("sgm_uniform", n, LO, HI, **SD), _comfy_sgm_uniform(comfy, n)),
        (sb.schedules.build("kl_optimal", n, 0.03, 14.6) if n > 1 else None, _comfy_kl_optimal(n, 0.03, 14.6)),
        (sb.schedules.build("laplace", n, LO, 80.0, mu=0.3), _comfy_laplace(n, LO, 80.0, 0.3)),
        (sb.schedules.build("linear_quadratic", n, LO, 14.6), _comfy_linear_quadratic(14.6, n)),
        (sb.schedules.build("ays", n, LO, HI), _comfy_ays("sd15", n)),
        (sb.schedules.build("ays", n, LO, HI, model="svd"), _comfy_ays("svd", n)),
    ]
    if n <= 25:  # ComfyUI drops repeated Beta timesteps; below that count there are none
        cases.append((sb.schedules.build("beta", n, LO, HI, **SD), _comfy_beta(comfy, n)))
    for ours, theirs in cases:
        if ours is None:  # ComfyUI's kl_optimal divides by n - 1 = 0 at one step (NaN); ours returns sigma_max
            assert sb.schedules.build("kl_optimal", 1, 0.03, 14.6).tolist() == [14.6, 0.0]
            continue
        torch.testing.assert_close(ours, theirs.double(), rtol=3e-6, atol=1e-7)


def test_ays_reproduces_the_published_ten_step_tables():
    """n = 10 is the table itself. The SD 1.5 / SDXL tables are Stable Diffusion's training levels
    (scaled_linear 0.00085..0.012) at the published AYS timesteps (diffusers ``AysSchedules``) and t = 0;
    the SVD table equals diffusers' published sigmas (its last level replaced by 0 there)."""
    from diffusers.schedulers.scheduling_utils import AysSchedules

    sd = fs.vp_training_sigmas(**SD)
    for model, key in (("sd15", "StableDiffusionTimesteps"), ("sdxl", "StableDiffusionXLTimesteps")):
        ours = sb.schedules.build("ays", 10, LO, HI, model=model, append_zero=False)
        assert ours.tolist() == fs.AYS_TABLES[model]
        torch.testing.assert_close(ours, sd[AysSchedules[key] + [0]], rtol=1e-8, atol=0)  # 10 decimals
    svd = sb.schedules.build("ays", 10, LO, HI, model="svd")
    assert svd.tolist() == AysSchedules["StableDiffusionVideoSigmas"]


def test_ays_interpolation_is_linear_in_log_sigma_between_table_levels():
    """Sabour et al.: to 2 * 10 steps, the even levels are the table and the odd ones geometric means."""
    s = sb.schedules.build("ays", 20, LO, HI, append_zero=False)
    table = torch.tensor(fs.AYS_TABLES["sd15"], dtype=torch.float64)
    torch.testing.assert_close(s[::2], table, rtol=1e-13, atol=0)
    torch.testing.assert_close(s[1::2], (table[:-1] * table[1:]).sqrt(), rtol=1e-13, atol=0)


def test_beta_schedule_puts_timesteps_at_beta_quantiles():
    """Lee et al. eq. (3): the i-th timestep is the (1 - i/n)-quantile of Beta(alpha, beta) times T - 1."""
    table = fs.vp_training_sigmas()
    s = sb.schedules.build("beta", 12, LO, HI, alpha=0.5, beta=0.7, append_zero=False)
    idx = [int(torch.argmin((table - v).abs())) for v in s.tolist()]
    q = scipy.stats.beta.ppf(1 - np.arange(13) / 13, 0.5, 0.7) * 999
    assert idx == np.rint(q).astype(int).tolist()


# ------------------------------------------------------------------------------------------------
# Sweeps: a grid that does not start where the starting states are drawn is a skipped cell, not a
# wrong number; the built-in 'schedules' spec plans every cell.
# ------------------------------------------------------------------------------------------------


def test_a_cell_whose_grid_does_not_start_at_sigma_max_is_skipped_with_the_value_to_use():
    from types import SimpleNamespace

    from sampler_bench.bench.cells import _plan
    from sampler_bench.bench.spec import SamplerSpec, ScheduleSpec

    pm = SimpleNamespace(process="gaussian", label="m")
    meta = sb.solvers.info("euler")
    plan, _, why = _plan(meta, pm, SamplerSpec("euler", {}), ScheduleSpec("simple", {}), 0.002, 80.0, 6)
    assert plan is None and "starts at sigma = 14.614641229333639, not at sigma_max = 80.0" in why
    plan, _, why = _plan(meta, pm, SamplerSpec("euler", {}), ScheduleSpec("simple", {}), 0.002, 14.614641229333639, 6)
    assert plan is not None and why == ""


def test_the_builtin_schedules_spec_plans_every_cell():
    from sampler_bench.bench.spec import load_spec
    from sampler_bench.models.builtin import builtin_model

    spec = load_spec("schedules")
    model = builtin_model("gmm2d")
    listed = {s.name for s in spec.schedules}
    assert listed == set(sb.schedules.BUILDERS) - {"leading", "polyexponential", "vp_time_uniform", "vp_time_quadratic",
                                                   "edm_vp", "edm_ve", "edm_iddpm"}
    for sch in spec.schedules:
        smax = sch.sigma_max if sch.sigma_max is not None else float(model.sigma_max)
        for smp in spec.samplers:
            for budget in spec.nfe:
                plan = sb.solvers.plan(smp.name, budget, schedule=sch.name, sigma_min=float(model.sigma_min), sigma_max=smax,
                                       schedule_params=sch.params)
                assert plan.nfe == budget and math.isclose(plan.sigmas[0].item(), smax, rel_tol=1e-12), (sch.name, smp.name)
