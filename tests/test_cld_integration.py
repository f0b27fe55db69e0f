"""CLD end to end: the analytic built-in, the CLD reference integrator, sweeps, training and checkpoints.

Critically-damped Langevin diffusion (Dockhorn et al., arXiv 2112.07068) sampled with gDDIM and its
baselines (Zhang et al., arXiv 2206.05564). The process and the samplers are tested on their own in
tests/test_cld.py and tests/test_gddim.py; here: that the rest of sampler-bench treats a CLD model
correctly (state u = (x, v), data u[:, 0], time grids in t, the right reference, eps networks).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
import torch

import sampler_bench as sb
from sampler_bench.bench import prepare as P
from sampler_bench.bench import runner as R
from sampler_bench.bench.states import sample_seeds
from sampler_bench.bench.reference_cache import ReferenceCache, reference_solver
from sampler_bench.bench.spec import load_spec, parse_spec
from sampler_bench.models.builtin import builtin_model
from sampler_bench.models.networks import CLDEpsNetwork, build_cld_network
from sampler_bench.processes.analytic import GaussianMixture
from sampler_bench.processes.cld import CLD, CLDAnalyticModel, apply2, inv2
from sampler_bench.solvers.noise import generators_for
from sampler_bench.train import spec as train_spec
from sampler_bench.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
CLD_SAMPLERS = ["gddim", "gddim_sde", "cld_euler_maruyama", "cld_euler", "cld_heun"]


def rows(store: Path, sql: str, *args) -> list[sqlite3.Row]:
    con = sqlite3.connect(store)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# --- the analytic built-in and the reference integrator --------------------------------------------

def test_gmm2d_cld_is_the_gmm2d_mixture_under_cld_with_gddims_defaults():
    m, base = builtin_model("gmm2d_cld"), builtin_model("gmm2d")
    assert (m.process, m.shape, m.cld, m.sigma_min, m.sigma_max) == ("cld", (2,), CLD(), 1e-3, 1.0)
    # the data law is the gmm2d mixture itself (so gmm_* metrics and exact moments apply to u[:, 0])
    assert isinstance(m.distribution, GaussianMixture)
    for key in ("weights", "means", "covs"):
        assert torch.equal(getattr(m.distribution, key), getattr(base.distribution, key))
    u = m.prior(3, generators_for([1, 2, 3]))
    assert u.shape == (3, 2, 2) and torch.equal(m.data_from_state(u), u[:, 0])
    assert m.fingerprint() == builtin_model("gmm2d_cld").fingerprint() != base.fingerprint()


def test_cld_reference_is_exact_for_a_single_data_point_and_ends_with_gddims_denoising_step():
    """For a point mass y the PF-ODE transport is u(t1) - m(t1) = R_t1 R_t0^{-1} (u(t0) - m(t0)) (gDDIM
    Prop. 4); onto t = 0 the reference then takes the same denoising step as every CLD sampler."""
    cld = CLD()
    y = torch.tensor([0.7, -0.3], dtype=torch.float64)
    model = CLDAnalyticModel.from_points("point", y[None], cld)
    u0 = model.prior(3, generators_for([4, 5, 6]))

    def exact(u, t0, t1):
        a0, a1 = cld.psi(t0, 0.0)[:, 0], cld.psi(t1, 0.0)[:, 0]
        m0, m1 = torch.stack([a0[0] * y, a0[1] * y]), torch.stack([a1[0] * y, a1[1] * y])
        return m1 + apply2(cld.R(t1) @ inv2(cld.R(t0)), u - m0)

    counter = sb.solvers.CountingDenoiser(model)
    out = sb.solvers.run_solver("cld_reference", counter, u0, [1.0, 1e-3])
    assert (out - exact(u0, 1.0, 1e-3)).abs().max() < 1e-8 and counter.nfe > 20  # adaptive: many evaluations
    to_zero = sb.sample("cld_reference", model, u0, [1.0, 1e-3, 0.0])
    at_eps = exact(u0, 1.0, 1e-3)
    denoised = sb.sample("cld_euler", model, at_eps, [1e-3, 0.0])  # the one-NFE denoising step of every CLD sampler
    assert (to_zero - denoised).abs().max() < 1e-7
    with pytest.raises(ValueError, match="adaptive"):
        sb.solvers.plan("cld_reference", 10)


def test_the_reference_integrator_is_chosen_by_the_models_process():
    assert reference_solver("gaussian") == reference_solver("pfgmpp") == "reference"
    assert reference_solver("cld") == "cld_reference"
    with pytest.raises(ValueError, match="no adaptive reference integrator.*'ising'"):
        reference_solver("ising")
    args = ("h", 0, 1e-3, 1.0, True, "cpu", {})
    # existing cache keys of the sigma-ODE reference are unchanged; the CLD reference has its own
    assert ReferenceCache.key(*args) == ReferenceCache.key(*args, solver="reference")
    assert ReferenceCache.key(*args) != ReferenceCache.key(*args, solver="cld_reference")
    assert P.reference_options(builtin_model("gmm2d_cld"), parse_spec(SWEEP))["rtol"] == 1e-10  # exact eps


# --- a sweep on the exact CLD model --------------------------------------------------------------

SWEEP = """
name = "cld-exact"
nfe = [10, 40]
n_samples = 24
batch_size = 12
[[model]]
builtin = "gmm2d_cld"
[[sampler]]
name = "gddim"
options = { order = 1 }
[[sampler]]
name = "gddim"
options = { order = 3 }
[[sampler]]
name = "gddim_sde"
[[sampler]]
name = "cld_euler_maruyama"
[[sampler]]
name = "cld_euler"
[[sampler]]
name = "cld_heun"
[[sampler]]
name = "heun"
[[metric]]
name = "endpoint_error"
[[metric]]
name = "gmm_tv"
params = { assignment = "soft" }
"""


@pytest.fixture(scope="module")
def exact_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("cld_sweep")
    summary = R.run_sweep(parse_spec(SWEEP), out)
    return out / "results.sqlite", summary


def test_cld_sweep_counts_the_planned_nfe_on_gddims_time_grid_and_skips_sigma_samplers(exact_sweep):
    store, summary = exact_sweep
    assert summary.failed == 0 and summary.ok == 12 and summary.skipped == 2
    for r in rows(store, "select * from cells where solver != 'heun'"):
        assert r["status"] == "ok", r["reason"]
        assert r["nfe_counted"] == r["nfe_planned"] == r["nfe_budget"] - (r["solver"] == "cld_heun")
        # no [[schedule]]: karras in t with gDDIM's rho = 2 (uniform in sqrt t) from T = 1 to t_eps = 1e-3
        assert json.loads(r["schedule_params"]) == {"rho": 2.0}
        assert (r["sigma_min"], r["sigma_max"]) == (1e-3, 1.0)
    for r in rows(store, "select * from cells where solver = 'heun'"):
        assert r["status"] == "skipped" and "'cld' process" in r["reason"]


def test_cld_endpoint_error_is_the_data_error_against_cld_reference_from_the_same_seeds(exact_sweep):
    store, _ = exact_sweep
    model = builtin_model("gmm2d_cld")
    u0 = model.prior(24, generators_for(sample_seeds(0, 0, 24)))
    ref = sb.sample("cld_reference", model, u0, [1.0, 1e-3, 0.0])
    plan = sb.solvers.plan("gddim", 40, schedule="karras", sigma_min=1e-3, sigma_max=1.0, schedule_params={"rho": 2.0})
    out = sb.sample("gddim", model, u0, plan.sigmas, order=3)
    expected = math.sqrt(((out[:, 0] - ref[:, 0]) ** 2).sum(1).mean().item() / 2)
    (stored,) = rows(store, "select m.value from cells c join metrics m using(cell_id) where c.solver = 'gddim' and "
                     "c.nfe_budget = 40 and c.options like '%\"order\": 3%' and m.key = 'endpoint_rmse'")
    assert stored["value"] == pytest.approx(expected, rel=1e-6)
    # stochastic samplers get distribution metrics on u[:, 0] only
    keys = {r["key"] for r in rows(store, "select m.key from cells c join metrics m using(cell_id) "
                                          "where c.solver in ('gddim_sde', 'cld_euler_maruyama')")}
    assert keys == {"gmm_tv"}


def test_gddim_is_far_more_accurate_than_euler_and_heun_at_equal_nfe_on_the_exact_model(exact_sweep):
    """gDDIM's claim (Table 3): the exponential integrator with R_t beats generic solvers in t at equal NFE."""
    store, _ = exact_sweep
    err = {(r["solver"], json.loads(r["options"]).get("order"), r["nfe_budget"]): r["value"] for r in rows(
        store, "select c.solver, c.options, c.nfe_budget, m.value from cells c join metrics m using(cell_id) "
               "where m.key = 'endpoint_rmse'")}
    for nfe in (10, 40):
        assert err[("gddim", 3, nfe)] < 0.25 * min(err[("cld_euler", None, nfe)], err[("cld_heun", None, nfe)])
    assert err[("gddim", 3, 40)] < 0.2 * err[("gddim", 3, 10)]
    assert err[("gddim", 3, 40)] < err[("gddim", 1, 40)]


def test_kept_samples_of_a_cld_cell_are_data_not_states(exact_sweep):
    from sampler_bench.bench.store import ResultsStore

    store, _ = exact_sweep
    (r,) = rows(store, "select cell_id from cells where solver = 'gddim_sde' and nfe_budget = 40")
    with ResultsStore(store, create=False) as s:
        assert tuple(s.samples(r["cell_id"]).shape) == (24, 2)  # u[:, 0] of each sample, for the report's pictures


# --- eps networks, training and checkpoints --------------------------------------------------------

def test_untrained_cld_network_is_the_exact_eps_of_gaussian_data():
    """The skip term of CLDEpsNetwork is R_t^T C_t^{-1} u, the exact eps of N(0, sigma_data^2 I) data
    (the CLD analogue of EDM's c_skip); the zero-initialised output layer adds nothing before training."""
    cld, sd = CLD(), 0.6
    net = build_cld_network({"type": "mlp", "hidden": 8, "depth": 1, "emb_channels": 8, "fourier_channels": 4},
                            {"type": "cld", "sigma_data": sd}, cld, (3,))
    gauss = CLDAnalyticModel.from_mixture("g", GaussianMixture.isotropic(torch.ones(1), torch.zeros(1, 3), sd), cld)
    t = torch.tensor([1.0, 0.3, 0.02, 1e-3, 1e-5], dtype=torch.float64)
    u = cld.prior(5, (3,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(net(u, t), gauss(u, t), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"states \[B, 2, 3\]"):
        net(u[:, 0], t)


TINY = {
    "name": "tiny-cld",
    "data": {"name": "ring", "n_train": 256, "n_test": 64},
    "process": {"name": "cld", "beta_0": 3.0},
    "network": {"type": "mlp", "hidden": 16, "depth": 1, "emb_channels": 16, "fourier_channels": 8},
    "train": {"steps": 6, "batch": 32, "checkpoint_every": 2, "log_every": 1, "warmup_steps": 2, "lr": 1e-2,
              "ema_halflife_samples": 64, "threads": 1, "device": "cpu"},
}


def tiny_spec(**process):
    raw = json.loads(json.dumps(TINY))
    raw["process"].update(process)
    return train_spec.parse_spec(raw)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cld_train")
    result = train(tiny_spec(), out, progress=False)
    return result.checkpoint


def test_cld_checkpoint_loads_as_a_cld_model_with_its_process(tiny_checkpoint):
    model = sb.load_model(tiny_checkpoint)
    cfg = json.loads(tiny_checkpoint.with_suffix(".json").read_text())
    assert cfg["process"]["name"] == "cld" and cfg["kind"] == "cld" and cfg["precond"]["type"] == "cld"
    assert model.process == "cld" and model.cld == CLD(beta_0=3.0) and model.shape == (2,)
    assert (model.sigma_min, model.sigma_max) == (1e-3, 1.0)
    assert isinstance(model.denoiser, CLDEpsNetwork)
    u = model.prior(4, generators_for([0, 1, 2, 3]))
    assert u.shape == (4, 2, 2)
    out = sb.sample("gddim", model, u, sb.solvers.plan("gddim", 8, schedule="karras", sigma_min=model.sigma_min,
                                                          sigma_max=model.sigma_max, schedule_params={"rho": 2.0}).sigmas)
    assert torch.equal(model.data_from_state(out), out[:, 0]) and torch.isfinite(out).all()


def test_a_killed_cld_run_resumes_bit_for_bit(tmp_path):
    from safetensors.torch import load_file

    train(tiny_spec(), tmp_path / "straight", progress=False)
    train(tiny_spec(), tmp_path / "resumed", progress=False, stop_after=3)
    train(tiny_spec(), tmp_path / "resumed", progress=False)
    a, b = (load_file(str(tmp_path / d / "train_state.safetensors")) for d in ("straight", "resumed"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_cld_checkpoint_sweeps_with_cld_samplers_against_cld_reference(tiny_checkpoint, tmp_path):
    spec = parse_spec(f"""
nfe = [6]
n_samples = 8
[[model]]
checkpoint = "{tiny_checkpoint.with_suffix('')}"
[[sampler]]
name = "gddim"
[[sampler]]
name = "cld_euler_maruyama"
[[sampler]]
name = "euler"
[[metric]]
name = "endpoint_error"
[[metric]]
name = "fd"
params = {{ reference_samples = 64 }}
""")
    summary = R.run_sweep(spec, tmp_path)
    assert (summary.ok, summary.skipped, summary.failed) == (2, 1, 0), summary.problems
    (r,) = rows(tmp_path / "results.sqlite", "select m.provenance from cells c join metrics m using(cell_id) "
                                             "where c.solver = 'gddim' and m.key = 'endpoint_rmse'")
    ref = json.loads(r["provenance"])["reference_endpoints"]
    assert ref["solver"] == "cld_reference" and ref["options"] == P.NETWORK_REFERENCE


@pytest.mark.parametrize("edit,message", [
    ({"precond": {"type": "edm"}}, "a CLD model takes \\[precond\\].type = 'cld'"),
    ({"precond": {"type": "cld", "mixed": True}}, "unknown key \\[precond\\].mixed"),
    ({"precond": {"type": "cld", "skip": 1}}, "skip must be true or false"),
    ({"process": {"name": "edm"}, "precond": {"type": "cld"}}, "'cld' is for \\[process\\] name = 'cld'"),
    ({"process": {"name": "cld", "beta_0": -1.0}}, "beta_0 must be a positive number"),
])
def test_bad_cld_train_spec_raises_one_readable_value_error(edit, message):
    raw = {**json.loads(json.dumps(TINY)), **edit}
    with pytest.raises(ValueError, match=message):
        train_spec.parse_spec(raw)


# --- the committed specs -----------------------------------------------------------------------------

def test_committed_cld_specs_train_cld_and_sweep_gddim_against_its_baselines():
    for name, data in (("train_digits_cld", "digits"), ("train_ring_cld", "ring")):
        spec = train_spec.load_spec(ROOT / "benchmarks" / f"{name}.toml")
        assert spec.process["name"] == "cld" and spec.data["name"] == data
    sweep = load_spec(ROOT / "benchmarks" / "digits_cld.toml")
    samplers = {(s.name, s.options.get("order")) for s in sweep.samplers}
    assert samplers == {("gddim", 1), ("gddim", 2), ("gddim", 3), ("gddim_sde", None),
                        ("cld_euler_maruyama", None), ("cld_euler", None), ("cld_heun", None)}
    assert len(sweep.nfe) >= 3 and [s.params for s in sweep.schedules] == [{"rho": 2.0}]
