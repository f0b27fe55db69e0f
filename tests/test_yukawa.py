"""The Yukawa process of GenPhys (Liu et al., arXiv 2304.02637) and its sampler yukawa_smc.

What is proved here (docs/processes.md, "Yukawa"):

* the kernel draws have the kernel's law: W ~ IG(z/m, z^2) and every coordinate of x - y is 1-D NIG
  (KS tests against scipy's own laws, in both the PFGM-like and the diffusion-like regime);
* the two exact oracles agree: Bessel-function weights for a point set and the quadrature over W for a
  mixture (a point set is a mixture of zero-covariance components), and the mixture's denoiser and rate
  agree with a Monte-Carlo estimate that shares no code with the quadrature;
* E[kappa] = m, the rate target h is unbiased for kappa, and m -> 0 recovers PFGM (PFGM++ with D = 1);
* yukawa_smc: exact-denoiser runs end on data points, the birth/death weights recover the data's weights
  where the plain ODE does not, NFE counted = NFE promised, resampling recorded (also by a sweep),
  and the standard ODE solvers refuse Yukawa models; bad input gives one readable error.
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st
import torch

import sampler_bench as sb
from sampler_bench.bench import runner as R
from sampler_bench.bench.spec import parse_spec
from sampler_bench.models.builtin import builtin_model
from sampler_bench.models.networks import build_yukawa_network
from sampler_bench.processes.analytic import GaussianMixture
from sampler_bench.processes.catalog import process_from_config
from sampler_bench.processes.pfgmpp import PFGMPPPointSet, pfgmpp_noise
from sampler_bench.processes.yukawa import YukawaAnalyticModel, YukawaMixture, YukawaPointSet, YukawaProcess
from sampler_bench.processes.yukawa.bessel import log_bessel_k
from sampler_bench.solvers.driver import CountingDenoiser, run_solver
from sampler_bench.solvers.schedules import karras
from sampler_bench.solvers.yukawa.smc import systematic_indices

POINTS = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the kernel ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,z", [(1.0, 0.01), (1.0, 5.0), (2.0, 3000.0), (0.3, 0.2)])
def test_kernel_draws_have_the_normal_inverse_gaussian_law(m, z):
    """W ~ IG(mean z/m, shape z^2) (scipy: invgauss(mu/lambda, scale=lambda)); one coordinate of x - y is
    NIG(alpha = m, beta = 0, delta = z) (scipy: norminvgauss(a = m z, b = 0, scale = z)). m z = 6000 is where
    the textbook root mean + mean a - mean sqrt(a^2 + 2a) cancels catastrophically."""
    p = YukawaProcess(m=m)
    W = p.mixing(z, 4000, _gen(0)).numpy()
    assert st.kstest(W, st.invgauss((z / m) / z**2, scale=z**2).cdf).pvalue > 1e-3
    coord = p.noise((4000, 3), z, _gen(1)).numpy()[:, 1]
    # scipy's NIG cdf integrates numerically point by point: compare with its own draws instead (2-sample KS)
    law = st.norminvgauss(a=m * z, b=0.0, scale=z)
    assert st.ks_2samp(coord, law.rvs(size=4000, random_state=np.random.default_rng(0))).pvalue > 1e-3


def test_kernel_draws_do_not_depend_on_the_batch_with_per_sample_generators():
    p = YukawaProcess(m=0.5)
    z = torch.tensor([0.1, 2.0, 30.0], dtype=torch.float64)
    batch = p.noise((3, 4), z, [_gen(s) for s in (7, 8, 9)])
    rows = [p.noise((1, 4), z[i:i + 1], [_gen(s)]) for i, s in enumerate((7, 8, 9))]
    assert torch.equal(batch, torch.cat(rows))


def test_log_bessel_k_matches_scipy_for_integer_and_half_integer_orders():
    x = np.array([1e-3, 0.1, 1.0, 7.0, 300.0])
    for twice_nu in (1, 2, 3, 8, 65, 66):
        log_k, ratio = log_bessel_k(twice_nu, torch.as_tensor(x))
        ref = np.log(sp.kve(twice_nu / 2, x)) - x
        np.testing.assert_allclose(log_k.numpy(), ref, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(ratio.numpy(), sp.kve(twice_nu / 2 - 1, x) / sp.kve(twice_nu / 2, x), rtol=1e-13)


def test_starting_weights_are_the_exact_ratio_of_the_nig_and_poisson_kernels():
    p = YukawaProcess(m=0.7, proposal="poisson")
    x = torch.linspace(-30, 30, 9, dtype=torch.float64)[:, None]
    ref = st.norminvgauss(a=0.7 * 2.0, b=0.0, scale=2.0).logpdf(x[:, 0].numpy()) - st.cauchy(scale=2.0).logpdf(x[:, 0].numpy())
    np.testing.assert_allclose(p.log_prior_ratio(x, 2.0).numpy(), ref, atol=1e-12)
    assert torch.equal(YukawaProcess(m=0.7, proposal="nig").log_prior_ratio(x, 2.0), torch.zeros(9, dtype=torch.float64))


# --- exact denoisers and rates ------------------------------------------------------------------------

@pytest.mark.parametrize("z", [1e-3, 0.1, 1.0, 10.0, 1000.0])
def test_point_set_bessel_oracle_equals_the_quadrature_over_w(z):
    x = 3.0 * torch.randn(7, 2, generator=_gen(2), dtype=torch.float64)
    bessel = YukawaPointSet(POINTS, 1.3, WEIGHTS)
    quadrature = YukawaMixture(GaussianMixture(WEIGHTS, POINTS, torch.zeros(3, 2, 2, dtype=torch.float64)), 1.3)
    D1, k1 = bessel.denoise_with_rate(x, z)
    D2, k2 = quadrature.denoise_with_rate(x, z)
    torch.testing.assert_close(D1, D2, rtol=0, atol=1e-11)
    torch.testing.assert_close(k1, k2, rtol=1e-10, atol=0)


@pytest.mark.parametrize("z", [0.05, 1.0, 30.0])
def test_mixture_denoiser_and_rate_agree_with_monte_carlo(z):
    """E[y | x] and kappa(x) = E[h | x] by self-normalised Monte Carlo over y ~ data with the NIG kernel as
    weight (y drawn, not integrated: shares nothing with the quadrature)."""
    g = _gen(3)
    gmm = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0, 0.5, 0.0], [1.0, -0.5, 1.0]]),
                          torch.stack([0.2 * torch.eye(3), torch.diag(torch.tensor([0.5, 0.1, 0.3]))]).double())
    m = 0.8
    oracle = YukawaMixture(gmm, m)
    x = torch.tensor([[0.3, 0.1, 0.4], [-1.5, 1.0, -0.2]], dtype=torch.float64)
    D, kappa = oracle.denoise_with_rate(x, z)
    y = gmm.sample(400_000, generator=g)
    p = YukawaProcess(m=m)
    N = 3
    for i in range(x.shape[0]):
        r = torch.sqrt(((x[i] - y) ** 2).sum(1) + z * z)
        log_k, ratio = log_bessel_k(N + 1, m * r)
        w = torch.softmax(-0.5 * (N + 1) * torch.log(r) + log_k, 0)
        ess = 1.0 / (w**2).sum()
        mc_D = (w[:, None] * y).sum(0)
        se = torch.sqrt((w[:, None] * (y - mc_D) ** 2).sum(0) / ess)
        assert ((mc_D - D[i]).abs() < 5 * se + 1e-4).all(), (mc_D, D[i], se)
        h = m * p.rate_target(x[i].expand(y.shape[0], N), y, z)
        mc_k = (w * h).sum()
        se_k = torch.sqrt((w * (h - mc_k) ** 2).sum() / ess)
        assert abs(mc_k - kappa[i]) < 5 * se_k + 1e-6 * m, (mc_k, kappa[i], se_k)


def test_rate_has_mean_m_and_its_training_target_is_unbiased():
    """E over the marginal of kappa(x, z) is m (the mass decays as e^{-m z}), and so is the mean of h."""
    m = 1.3
    p, oracle = YukawaProcess(m=m), YukawaPointSet(POINTS, m, WEIGHTS)
    g = _gen(4)
    for z in (0.05, 1.0, 20.0):
        y = oracle.sample(20000, g)
        x = y + p.noise(y.shape, z, g)
        kappa = oracle.denoise_with_rate(x, z)[1]
        h = m * p.rate_target(x, y, z)
        for values in (kappa, h):
            assert abs(values.mean().item() - m) < 5 * values.std().item() / math.sqrt(len(values)) + 1e-9
    # one data point: kappa(x) is h itself
    single = YukawaPointSet(POINTS[:1], m)
    x = POINTS[:1] + p.noise((5, 2), 0.7, g)
    torch.testing.assert_close(single.denoise_with_rate(x, 0.7)[1], m * p.rate_target(x, POINTS[:1].expand(5, 2), 0.7))


def test_zero_mass_limit_is_pfgm():
    """m -> 0: the kernel is PFGM's (PFGM++ with D = 1, r = z), the denoiser PFGM's and the rate 0."""
    x = 2.0 * torch.randn(6, 2, generator=_gen(5), dtype=torch.float64)
    yukawa, pfgm = YukawaPointSet(POINTS, 1e-9, WEIGHTS), PFGMPPPointSet(POINTS, 1, WEIGHTS)
    for z in (0.01, 1.0, 30.0):
        D, kappa = yukawa.denoise_with_rate(x, z)
        torch.testing.assert_close(D, pfgm(x, z), rtol=0, atol=1e-9)
        assert kappa.abs().max() < 1e-12
    radius = lambda v: v.norm(dim=1).numpy()  # noqa: E731
    near_zero = YukawaProcess(m=1e-8).noise((3000, 2), 0.5, _gen(6))
    assert st.ks_2samp(radius(near_zero), radius(pfgmpp_noise((3000, 2), 0.5, 1.0, _gen(7)))).pvalue > 1e-3


# --- yukawa_smc ---------------------------------------------------------------------------------------

def _point_model(m: float, z_max: float, proposal: str = "poisson") -> YukawaAnalyticModel:
    return YukawaAnalyticModel("points", YukawaPointSet(POINTS, m, WEIGHTS), YukawaProcess(m, 1e-3, z_max, proposal=proposal))


def test_exact_denoiser_runs_end_on_data_points():
    """The exact flow ends on the points; discretised, every particle lands within its step error of one
    (measured 1e-5 here). PFGM-like kernels at small z are heavy-tailed, so a particle that has not converged
    sits between points: the last denoising step alone does not snap it (12 Euler steps leave some ~0.9 away)."""
    model = _point_model(0.5, 20.0)
    x = model.prior(64, _gen(8))
    for order in (1, 2):
        out = sb.sample("yukawa_smc", model, x, karras(100, 1e-3, 20.0), generator=_gen(9), order=order)
        assert torch.cdist(out, POINTS).min(1).values.max() < 1e-3


def test_birth_death_weights_recover_the_data_weights_where_the_plain_ode_does_not():
    """m z_max = 2.5. From the Yukawa prior (the NIG kernel at z_max) the plain flow moves mass towards the
    heaviest point (measured TV ~ 0.08 from the data's weights at n = 4000); with the birth/death weights the
    particles land on the points in proportion to the data's weights; in 2-D the Poisson proposal keeps
    the weights better balanced (measured TV 0.005 vs 0.04-0.05 from the NIG prior)."""
    n = 3000
    grid = karras(25, 1e-3, 50.0)
    tv = {}
    for proposal, weighted in (("nig", False), ("nig", True), ("poisson", True)):
        model = _point_model(0.05, 50.0, proposal)
        out = sb.sample("yukawa_smc", model, model.prior(n, _gen(1)), grid, generator=_gen(11), order=2, weighted=weighted)
        freq = torch.bincount(torch.cdist(out, POINTS).argmin(1), minlength=3).double() / n
        tv[proposal, weighted] = 0.5 * (freq - WEIGHTS).abs().sum().item()
    assert tv["nig", False] > 0.06 and tv["nig", True] < 0.05 and tv["poisson", True] < 0.03, tv


def test_small_mass_flow_is_heun_on_the_pfgm_ode():
    """Without weights the transport is EDM's Heun in z on PFGM's denoiser as m -> 0 (the same update rule)."""
    model = _point_model(1e-9, 20.0)
    x = model.prior(16, _gen(12))
    grid = karras(10, 1e-3, 20.0)
    ours = sb.sample("yukawa_smc", model, x, grid, order=2, weighted=False)
    heun = sb.sample("heun", PFGMPPPointSet(POINTS, 1, WEIGHTS), x, grid)
    torch.testing.assert_close(ours, heun, rtol=0, atol=1e-7)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("ends_at_zero", [True, False])
def test_counted_nfe_equals_the_plan_and_resampling_is_recorded(order, ends_at_zero):
    model = _point_model(1.0, 50.0)
    plan = sb.solvers.plan("yukawa_smc", 15, sigma_min=1e-3, sigma_max=50.0, ends_at_zero=ends_at_zero, order=order)
    counter = CountingDenoiser(model)
    run_solver("yukawa_smc", counter, model.prior(32, _gen(13)), plan.sigmas, generator=_gen(14), options=plan.options)
    assert counter.nfe == plan.nfe == (15 if order == 1 or not ends_at_zero else 15) - (order == 2 and not ends_at_zero)
    notes = counter.notes["resampling"]
    assert notes["events"] == len(notes["steps"]) >= 1 and 0 < notes["min_ess_fraction"] < 0.5
    assert all(0 < e["z"] < 50.0 and e["ess_fraction"] < 0.5 for e in notes["steps"])


def test_systematic_resampling_gives_each_particle_floor_or_ceil_of_n_w_copies():
    w = torch.tensor([[0.05, 0.4, 0.3, 0.25, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    for u in (0.0, 0.01, 0.3, 0.97):
        counts = torch.bincount(systematic_indices(torch.log(w), torch.tensor([u], dtype=torch.float64))[0], minlength=8)
        expected = 8 * w[0]
        if u == 0.0:  # points on the cumulative weights' knots: the particle to the right takes them
            assert counts.tolist() == [1, 3, 2, 2, 0, 0, 0, 0]
            continue
        assert ((counts >= expected.floor()) & (counts <= expected.ceil())).all() and counts.sum() == 8


def test_populations_resample_separately_and_must_divide_the_batch():
    model = _point_model(1.0, 50.0)
    x = model.prior(12, _gen(15))
    grid = karras(6, 1e-3, 50.0)
    counter = CountingDenoiser(model)
    run_solver("yukawa_smc", counter, x, grid, generator=_gen(16), options={"population": 4})
    assert counter.notes["resampling"]["populations"] == 3
    with pytest.raises(ValueError, match="does not split into populations of 5"):
        sb.sample("yukawa_smc", model, x, grid, population=5)


def test_standard_solvers_refuse_yukawa_models_and_yukawa_smc_refuses_others():
    model = builtin_model("gmm2d_yukawa")
    x = model.prior(4, _gen(17))
    for name in ("euler", "heun", "dpmpp_2m", "euler_maruyama"):
        with pytest.raises(ValueError, match=f"solver '{name}' does not apply to 'yukawa' processes.*yukawa_smc"):
            sb.sample(name, model, x, karras(4, model.sigma_min, model.sigma_max))
    with pytest.raises(ValueError, match="solver 'yukawa_smc' does not apply to 'gaussian' processes"):
        sb.sample("yukawa_smc", builtin_model("gmm2d"), x, karras(4, 0.002, 80.0))
    with pytest.raises(ValueError, match="samples the Yukawa process only: pass a Yukawa model"):
        sb.sample("yukawa_smc", lambda x, s: x, x, karras(4, 0.002, 40.0))
    with pytest.raises(ValueError, match="above the model's z_max"):
        sb.sample("yukawa_smc", model, x, karras(4, 0.002, 80.0))


@pytest.mark.parametrize("params,match", [
    ({"m": 0}, "screening mass m > 0"),
    ({"m": -1.0}, "screening mass m > 0"),
    ({"m": float("nan")}, "screening mass m > 0"),
    ({"m": "1"}, "screening mass m > 0"),
    ({"m": 1.0, "z_min": 2.0, "z_max": 1.0}, "sigma_min \\(2.0\\) must be below"),
    ({"m": 1.0, "proposal": "gauss"}, "proposal must be one of poisson, nig"),
    ({"m": 1.0, "P_std": 0}, "P_std must be positive"),
])
def test_bad_process_parameters_give_one_readable_value_error(params, match):
    with pytest.raises(ValueError, match=match):
        process_from_config({"name": "yukawa", **params})


def test_config_round_trips():
    p = YukawaProcess(m=0.05, z_min=0.002, z_max=80.0, proposal="nig")
    assert process_from_config(p.config()) == p
    assert abs(float(p.precond_sigma(p.z_of_sigma(torch.tensor([0.01, 1.0, 50.0])))[2]) - 50.0) < 1e-9


# --- network and training ------------------------------------------------------------------------------

def test_network_rate_head_starts_at_m_and_the_training_loss_trains_both_heads():
    p = YukawaProcess(m=0.5, z_min=0.002, z_max=40.0)
    net = build_yukawa_network({"type": "mlp", "hidden": 32, "depth": 1}, {"type": "yukawa", "rate_hidden": 16},
                               p, (2,))
    x = torch.randn(5, 2)
    D, rate = net(x, torch.full((5,), 3.0), with_rate=True)
    assert D.shape == x.shape and torch.allclose(rate, torch.full((5,), 0.5))
    loss = p.training_loss(net, POINTS.float()[torch.tensor([0, 1, 2, 0])], 0.5, _gen(18))
    loss.backward()
    assert net.rate.out.weight.grad.abs().sum() > 0 and net.precond.net.out.weight.grad.abs().sum() > 0


# --- a sweep --------------------------------------------------------------------------------------------

SWEEP = """
name = "yukawa_tiny"
nfe = [8]
n_samples = 32
batch_size = 16
[[model]]
builtin = "gmm2d_yukawa"
[[sampler]]
name = "yukawa_smc"
[[sampler]]
name = "yukawa_smc"
options = { order = 2, ess = 0.999 }
[[sampler]]
name = "yukawa_smc"
options = { order = 2, weighted = false }
[[sampler]]
name = "heun"
[[metric]]
name = "gmm_tv"
params = { assignment = "soft" }
"""


def test_a_sweep_counts_nfe_records_resampling_and_skips_the_plain_ode_solvers(tmp_path):
    from sampler_bench.report import write_report

    summary = R.run_sweep(parse_spec(SWEEP), tmp_path / "out")
    assert (summary.ok, summary.skipped, summary.failed) == (3, 1, 0), summary.problems
    con = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    con.row_factory = sqlite3.Row
    cells = {(r["solver"], r["options_label"]): r for r in con.execute("select * from cells")}
    euler, heun2 = cells[("yukawa_smc", "")], cells[("yukawa_smc", "ess 0.999, order 2")]
    assert euler["nfe_counted"] == 8 and "resampled" in euler["reason"]
    # Heun in z: 2 NFE per step and an Euler step onto z = 0, so 8 NFE buys 4 steps = 7 NFE, said so
    assert heun2["nfe_counted"] == 7 and "costs 2 NFE per step" in heun2["reason"]
    heun = cells[("heun", "")]
    assert "'yukawa' process" in heun["reason"] and "birth/death" in heun["reason"]
    records = {}
    for key, cell in (("euler", euler), ("heun2", heun2)):
        (row,) = con.execute("select provenance from metrics where cell_id = ?", (cell["cell_id"],))
        records[key] = json.loads(row["provenance"])["resampling"]
        assert len(records[key]["batches"]) == 2
        assert records[key]["events"] == sum(b["events"] for b in records[key]["batches"])
    assert records["heun2"]["events"] >= 2  # ESS below 0.999 after nearly every step

    # the report shows what each weighted cell did, and why heun is absent
    md = write_report(tmp_path / "out", tmp_path / "report")["markdown"].read_text()
    section = md.split("### gmm2d_yukawa: resampling")[1].split("###")[0]
    lines = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| yukawa_smc")}
    assert set(lines) == {"yukawa_smc", "yukawa_smc (ess 0.999, order 2)"}  # the unweighted run never resamples
    for key, row in (("euler", "yukawa_smc"), ("heun2", "yukawa_smc (ess 0.999, order 2)")):
        rec = records[key]
        assert f"{rec['events']} in 2 pop., ESS ≥ {rec['min_ess_fraction']:.2f}" in lines[row]
    heun2_line = lines["yukawa_smc (ess 0.999, order 2)"]
    assert "(7 NFE)" in heun2_line and "z = " in heun2_line
    skipped = md.split("Samplers without a finished cell:")[1].split("###")[0]
    assert "- heun: skipped:" in skipped and "birth/death term" in skipped


# --- specs ----------------------------------------------------------------------------------------------

def test_committed_train_spec_parses_and_bad_yukawa_precond_is_refused():
    from pathlib import Path

    from sampler_bench.train import spec as train_spec

    root = Path(__file__).resolve().parents[1]
    spec = train_spec.load_spec(root / "benchmarks" / "train_digits_yukawa.toml")
    assert spec.process["name"] == "yukawa" and spec.precond["type"] == "yukawa"
    raw = {"name": "t", "data": {"name": "digits"}, "process": {"name": "yukawa", "m": 0.05},
           "network": {"type": "mlp"}, "train": {"steps": 1}}
    for precond, match in (({"type": "edm"}, "a Yukawa model takes \\[precond\\].type = 'yukawa'"),
                           ({"type": "yukawa", "skip": True}, "unknown key \\[precond\\].skip"),
                           ({"type": "yukawa", "rate_depth": 0}, "rate_depth must be a positive integer")):
        with pytest.raises(ValueError, match=match):
            train_spec.parse_spec({**raw, "precond": precond})
    with pytest.raises(ValueError, match="screening mass m > 0"):
        train_spec.parse_spec({**raw, "process": {"name": "yukawa", "m": -0.1}})


def test_committed_checkpoint_records_its_spec_and_has_a_rate_head():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = json.loads((root / "checkpoints" / "digits-yukawa.json").read_text())
    spec = tomllib.loads((root / "benchmarks" / "train_digits_yukawa.toml").read_text())
    assert spec["train"] == {k: cfg["training"]["spec"]["train"][k] for k in spec["train"]}
    assert spec["network"] == cfg["network"] and cfg["process"]["m"] == spec["process"]["m"]
    model = sb.load_model(root / "checkpoints" / "digits-yukawa")
    assert model.process == "yukawa" and model.shape == (1, 8, 8) and "yukawa_smc" in sb.solvers.samplers_for(model.process)
    x = model.prior(3, generator=_gen(19))
    D, kappa = model.denoise_with_rate(x, torch.full((3,), 1.0, dtype=torch.float64))
    assert D.shape == x.shape and kappa.shape == (3,) and torch.isfinite(kappa).all()
