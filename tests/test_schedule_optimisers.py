"""Optimised schedules (issue #16): the interface, the honest protocol (disjoint optimisation seeds, counted
cost, a cache keyed by every input), and each optimiser's mechanism on a case with a known answer."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sqlite3

import numpy as np
import pytest
import torch
from scipy import integrate

from sampler_bench.bench.runner import run_sweep
from sampler_bench.bench.schedule_cache import ScheduleCache, ScheduleRequest, schedule_key
from sampler_bench.bench.spec import MAX_SEED, SpecError, parse_spec
from sampler_bench.report.build import write_report
from sampler_bench.models import builtin
from sampler_bench.models.base import AnalyticModel
from sampler_bench.processes.analytic import IsotropicGaussian
from sampler_bench.solvers import optimised as O
from sampler_bench.solvers import schedules
from sampler_bench.solvers.driver import CountingDenoiser, run_solver
from sampler_bench.solvers.optimised import descent, dmn, gits
from sampler_bench.solvers.optimised.base import MAX_OPTIMISATION_SEED, MAX_WARMUP


def gaussian_model(std=0.5, dim=4) -> AnalyticModel:
    return AnalyticModel("single_gaussian", IsotropicGaussian(torch.linspace(-1, 1, dim), std))


class Calls:
    """Counts calls on a model independently of the optimiser's own counter."""

    def __init__(self, model):
        self.model, self.calls, self.rows = model, 0, 0
        self.prior, self.sigma_min, self.sigma_max, self.process = model.prior, model.sigma_min, model.sigma_max, "gaussian"

    def __call__(self, x, sigma):
        self.calls += 1
        self.rows += x.shape[0]
        return self.model(x, sigma)


# ---------------------------------------------------------------------------------------------
# The honest protocol
# ---------------------------------------------------------------------------------------------


def test_optimisation_seeds_lie_above_every_evaluation_seed():
    lowest = O.optimisation_seeds(0, 1)[0]
    highest = O.optimisation_seeds(MAX_OPTIMISATION_SEED, MAX_WARMUP)[-1]
    assert lowest > MAX_SEED  # every evaluation seed (seed + i, replicates too) is <= MAX_SEED
    assert highest < 2**64  # still a valid torch seed
    for bad in (-1, MAX_OPTIMISATION_SEED + 1, 1.5, True):
        with pytest.raises(O.OptimiserError, match="optimisation seed"):
            O.optimisation_seeds(bad, 4)


class SeedSpy(AnalyticModel):
    """gmm2d's mixture with a prior that records the seeds of the generators it is given."""

    drawn: list = []

    def prior(self, n, generator=None, dtype=torch.float64):
        SeedSpy.drawn.append([g.initial_seed() for g in generator])
        return super().prior(n, generator, dtype)


def test_a_sweep_never_optimises_on_its_evaluation_seeds(tmp_path, monkeypatch):
    """Every prior draw made while an optimiser runs uses seeds no evaluated sample (of any replicate) uses,
    and the cell stores the levels and the cost it was given. Fails if warm-up states came from the
    sweep's seeds (e.g. states.sample_seeds(spec.seed, ...))."""
    monkeypatch.setitem(builtin.BUILTIN, "seedspy", lambda: SeedSpy("seedspy", builtin._gmm2d().distribution))
    during = []
    original = ScheduleCache.get

    def spying_get(self, *args, **kwargs):
        before = len(SeedSpy.drawn)
        out = original(self, *args, **kwargs)
        during.extend(s for draw in SeedSpy.drawn[before:] for s in draw)
        return out

    monkeypatch.setattr(ScheduleCache, "get", spying_get)
    SeedSpy.drawn = []
    spec = parse_spec("""
name = "leak"
nfe = [4]
n_samples = 8
replicates = 2
batch_size = 8
[[model]]
builtin = "seedspy"
[[sampler]]
name = "dpmpp_2m"
[[schedule]]
name = "gits"
params = { fine_steps = 8, n_warmup = 16 }
[[schedule]]
name = "karras"
[[metric]]
name = "gmm_nll"
""")
    run_sweep(spec, tmp_path)
    evaluation = set(range(0, 2 * 8))
    assert len(during) == 16 and not evaluation & set(during)
    outside = {s for draw in SeedSpy.drawn for s in draw} - set(during)
    assert outside <= evaluation  # the sweep's own draws are its evaluation seeds
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        rows = conn.execute("SELECT provenance FROM metrics").fetchall()
    assert rows
    cached = json.loads(next((tmp_path / "cache" / "schedules").glob("*.json")).read_text())
    stored = [json.loads(p).get("optimised_schedule") for (p,) in rows]
    assert sum(o is None for o in stored) == len(stored) // 2  # the karras cells
    for opt in filter(None, stored):
        assert opt["method"] == "gits" and opt["sigmas"] == cached["sigmas"]
        assert opt["cost"] == {**cached["cost"]} and opt["cost"]["nfe"] == 8 and opt["cost"]["samples"] == 16
    # the report prints the comparison, the verdict, the optimiser's cost and the chosen levels
    report = write_report(tmp_path, tmp_path / "report")
    text = report["markdown"].read_text()
    section = text[text.index("### seedspy: fixed vs optimised schedules"):]
    assert "#### seedspy · dpmpp_2m" in section and "dpmpp_2m [gits" in section and "dpmpp_2m [karras" in section
    assert "- NFE 4: best optimised gits" in section and "vs best fixed karras" in section
    assert "| gits, fine_steps=8 n_warmup=16 | 8 × 16 (" in section  # one line per configuration
    assert any(f.name == "seedspy-dpmpp-2m-levels.png" for f in report["figures"])


def _request(**changes) -> ScheduleRequest:
    base = ScheduleRequest("gits", {"n_warmup": 16, "seed": 0}, "abc", "dpmpp_2m", {"variant": "dpmsolver"}, 5, 5,
                           0.002, 80.0, True, "cpu", "float64")
    return dataclasses.replace(base, **changes)


def test_the_cache_key_changes_with_every_input():
    changes = {
        "method": "dmn", "params": {"n_warmup": 16, "seed": 1}, "model_hash": "abd", "solver": "unipc",
        "options": {"variant": "other"}, "nfe_budget": 6, "steps": 6, "sigma_min": 0.003, "sigma_max": 81.0,
        "ends_at_zero": False, "device_type": "cuda", "precision": "float32",
    }
    assert set(changes) == {f.name for f in dataclasses.fields(ScheduleRequest)}  # no input left untested
    keys = {schedule_key(_request())} | {schedule_key(_request(**{k: v})) for k, v in changes.items()}
    assert len(keys) == len(changes) + 1
    assert schedule_key(_request(params={"seed": 0, "n_warmup": 16})) == schedule_key(_request())  # order-free


def test_a_new_optimiser_version_changes_the_cache_key_and_the_cell_id(monkeypatch):
    from sampler_bench.bench import cells as cells_module
    from sampler_bench.bench.prepare import prepare_models

    spec = parse_spec(SPEC.format(nfe=4, model="gmm16", sampler="dpmpp_2m", schedule="gits", extra=""))
    models = prepare_models(spec, None)
    before = (schedule_key(_request()), cells_module.expand_cells(spec, models)[0].cell_id)
    monkeypatch.setitem(O.OPTIMISERS, "gits", dataclasses.replace(O.OPTIMISERS["gits"], version=2))
    after = (schedule_key(_request()), cells_module.expand_cells(spec, models)[0].cell_id)
    assert before[0] != after[0] and before[1] != after[1]


def test_a_cached_schedule_reads_back_bit_for_bit_with_the_cost_counted_when_found(tmp_path):
    model = Calls(gaussian_model())
    request = _request(params={"fine_steps": 10, "n_warmup": 8}, steps=4, nfe_budget=4)
    found = ScheduleCache(tmp_path).get(request, model)
    # the teacher (ipndm) on 10 fine steps ending at sigma_min: 10 calls of 8 samples, counted independently
    assert (found.cost["nfe"], found.cost["sample_evaluations"], found.cost["samples"]) == (10, 80, 8)
    assert (model.calls, model.rows) == (10, 80) and found.cost["wall_s"] > 0
    assert found.cost["seeds"] == [O.OPTIMISATION_SEED_BASE, O.OPTIMISATION_SEED_BASE + 7]
    again = ScheduleCache(tmp_path).get(request, model)
    assert again.from_cache and model.calls == 10  # nothing recomputed
    assert torch.equal(again.sigmas, found.sigmas) and again.cost == found.cost


# ---------------------------------------------------------------------------------------------
# dmn: the solver's weights and the minimum of the paper's bound
# ---------------------------------------------------------------------------------------------


def test_dmn_order_1_weights_are_the_coefficients_dpm_solver_1_applies():
    """y = x / sigma advances by sum_n w_n D_n; with x_0 = 0 and a denoiser that is zero except at one
    level, the sampler's y at sigma_min is exactly that level's weight times its value."""
    grid = schedules.karras(5, 0.01, 20.0, append_zero=False)
    lambdas = -torch.log(grid)
    for n in range(5):
        def spike(x, sigma, n=n):
            return torch.full_like(x, 1.0) * (float(sigma[0]) == float(grid[n]))
        out = run_solver("dpm_solver_1", CountingDenoiser(spike), torch.zeros(1, 1, dtype=torch.float64), grid)
        assert float(out) / float(grid[-1]) == pytest.approx(float(dmn.weights(lambdas, n, 1)[0]), rel=1e-12)


@pytest.mark.parametrize("q", [2, 3])
def test_dmn_weights_integrate_the_lagrange_basis(q):
    lambdas = torch.tensor([-3.0, -1.2, 0.3, 1.1, 2.9], dtype=torch.float64)
    i = 3
    nodes = [float(lambdas[i - j]) for j in range(q)]
    for j, w in enumerate(dmn.weights(lambdas, i, q)):
        def basis(lam, j=j):
            return math.exp(lam) * np.prod([(lam - nk) / (nodes[j] - nk) for k, nk in enumerate(nodes) if k != j])
        expected = integrate.quad(basis, float(lambdas[i]), float(lambdas[i + 1]), epsabs=0, epsrel=1e-13)[0]
        assert float(w) == pytest.approx(expected, rel=1e-11)


def test_dmn_reaches_the_brute_force_minimum_of_its_bound_without_evaluating_the_model():
    class Untouchable(AnalyticModel):
        def __call__(self, x, sigma):
            raise AssertionError("dmn must not evaluate the model")

    model = Untouchable("u", IsotropicGaussian([0.0], 1.0))
    problem = O.Problem(model, "dpmpp_2m", {}, 4, 0.002, 80.0)  # 4 positive levels: 2 free
    grid, cost = O.run(O.get("dmn"), problem, {})
    assert (cost.nfe, cost.samples) == (0, 0)
    orders = dmn.step_orders(3, 2, False)
    lam = -torch.log(grid[:4])
    found = float(dmn.objective(lam, orders))
    a, b = float(lam[0]), float(lam[-1])

    def brute(us, vs):
        return min((float(dmn.objective(torch.tensor([a, u, v, b], dtype=torch.float64), orders)), u, v)
                   for u in us for v in vs if a < u < v < b)

    coarse = np.linspace(a, b, 17)
    best, u, v = brute(coarse, coarse)  # then a finer look around the coarse optimum
    step = coarse[1] - coarse[0]
    best, u, v = brute(np.linspace(u - step, u + step, 11), np.linspace(v - step, v + step, 11))
    assert found <= best * (1 + 1e-9)  # no point of the grid search does better
    assert float(lam[1]) == pytest.approx(u, abs=step / 2) and float(lam[2]) == pytest.approx(v, abs=step / 2)


# ---------------------------------------------------------------------------------------------
# gits: dynamic programming and the teacher's costs
# ---------------------------------------------------------------------------------------------


def _path_cost(cost, path, coeff):
    return sum(coeff**t * cost[path[t], path[t + 1]] for t in range(len(path) - 1))


@pytest.mark.parametrize("coeff", [1.0, 1.15, 0.8])
def test_gits_dynamic_programming_finds_the_brute_force_optimum(coeff):
    rng = np.random.default_rng(3)
    m = 11
    cost = np.triu(rng.random((m, m)) * 10, 1)
    cost[np.tril_indices(m)] = np.inf
    for steps in (1, 3, 5):
        path = gits.dynamic_programming(cost, steps, coeff)
        assert path[0] == 0 and path[-1] == m - 1 and len(path) == steps + 1
        best = min(_path_cost(cost, (0, *mid, m - 1), coeff) for mid in itertools.combinations(range(1, m - 1), steps - 1))
        assert _path_cost(cost, path, coeff) == pytest.approx(best, rel=1e-12)


def test_gits_on_a_single_gaussian_picks_the_brute_force_optimum_of_the_exact_costs():
    """The teacher's cost matrix matches the closed-form one (exact PF-ODE trajectories), and the chosen
    steps are the brute-force optimum of the exact costs."""
    model = gaussian_model()
    dist = model.distribution
    problem = O.Problem(model, "dpmpp_2m", {}, 4, 0.002, 80.0)
    fine_steps = 12
    params = {"fine_steps": fine_steps, "n_warmup": 64, "coeff": 1.0, "teacher_substeps": 20}
    grid, cost = O.run(O.get("gits"), problem, params)
    fine = gits.fine_grid(problem, fine_steps)
    x0 = problem.warmup_states(0, 64)
    exact = torch.stack([dist.ode_solution(x0, float(fine[0]), float(s)) for s in fine])
    denoised = torch.stack([dist(exact[i], torch.full((64,), float(fine[i]), dtype=torch.float64)) for i in range(fine_steps)])
    exact_cost = gits.cost_matrix(fine, exact, denoised)
    states, outputs = gits.teacher_trajectory(problem, fine, "ipndm", 64, 0, substeps=20)
    finite = np.isfinite(exact_cost)
    assert np.allclose(gits.cost_matrix(fine, states, outputs)[finite], exact_cost[finite], rtol=1e-3, atol=1e-6)
    chosen = [int(torch.argmin((fine - s).abs())) for s in grid[:4]]
    best = min(_path_cost(exact_cost, (0, *mid, fine_steps), 1.0) for mid in itertools.combinations(range(1, fine_steps), 2))
    assert _path_cost(exact_cost, chosen, 1.0) == pytest.approx(best, rel=1e-9)
    assert cost.nfe == fine_steps * 20 and cost.samples == 64


# ---------------------------------------------------------------------------------------------
# endpoint_descent: never worse than its starting schedules on the warm-up samples
# ---------------------------------------------------------------------------------------------


def test_endpoint_descent_is_never_worse_than_the_fixed_schedules_it_starts_from():
    model = gaussian_model()
    problem = O.Problem(model, "dpmpp_2m", {}, 4, 0.002, 80.0)
    grid, cost = O.run(O.get("endpoint_descent"), problem, {"n_warmup": 32, "sweeps": 2, "teacher_steps": 50})
    x = problem.warmup_states(0, 32)
    exact = model.distribution.ode_solution(x, 80.0, 0.0)

    def err(g):
        out = run_solver("dpmpp_2m", model, x, g)
        return float(torch.linalg.vector_norm(out - exact, dim=1).mean())

    fixed = [schedules.build(n, 4, 0.002, 80.0, **params) for n, params in descent.STARTS]
    assert len(fixed) == 12 and {n for n, _ in descent.STARTS} == set(descent.FIXED)
    assert err(grid) <= min(err(g) for g in fixed) * 1.001
    # counted: 50 teacher calls, then 4 calls per evaluation of E: 11 distinct starts (polyexponential with
    # rho = 1 is log_snr_uniform), then from each of the 2 best: 2 sweeps x 2 interior levels x 4 moves
    assert cost.nfe == 50 + 4 * (11 + 2 * 2 * 2 * 4)
    one, one_cost = O.run(O.get("endpoint_descent"), O.Problem(model, "dpmpp_2m", {}, 4, 0.002, 80.0),
                          {"n_warmup": 32, "sweeps": 2, "teacher_steps": 50, "searches": 1})
    assert one_cost.nfe == 50 + 4 * (11 + 2 * 2 * 4)
    assert err(grid) <= err(one) * 1.001  # the second search only adds candidates to the first one's end


# ---------------------------------------------------------------------------------------------
# Bad input: one clear message
# ---------------------------------------------------------------------------------------------


SPEC = """
name = "bad"
nfe = [{nfe}]
n_samples = 8
batch_size = 8
[[model]]
builtin = "{model}"
[[sampler]]
name = "{sampler}"
[[schedule]]
name = "{schedule}"
{extra}
"""


def test_an_optimiser_on_a_model_it_cannot_serve_is_one_spec_error(tmp_path):
    spec = parse_spec(SPEC.format(nfe=4, model="gmm2d_cld", sampler="gddim", schedule="gits", extra=""))
    with pytest.raises(SpecError, match=r"model 'gmm2d_cld': optimised schedule 'gits' .* use a fixed schedule"):
        run_sweep(spec, tmp_path)


@pytest.mark.parametrize("extra, message", [
    ("params = { n_warmpu = 3 }", r"schedule 'gits' has no parameter 'n_warmpu'; its parameters: coeff, fine_steps"),
    ("params = { n_warmup = 0 }", r"parameter n_warmup = 0 must be an integer in \[1, "),
    ("params = { seed = -1 }", r"parameter seed = -1 must be an integer in \[0, "),
])
def test_bad_optimiser_parameters_are_spec_errors(extra, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(SPEC.format(nfe=4, model="gmm16", sampler="dpmpp_2m", schedule="gits", extra=extra))


def test_ld3_skips_the_cells_of_a_sampler_it_cannot_differentiate_and_runs_the_others(tmp_path):
    spec = parse_spec(SPEC.format(nfe=4, model="gmm16", sampler="unipc", schedule="ld3",
                                  extra="params = { n_warmup = 4, iterations = 2, teacher_steps = 10 }")
                      + '[[sampler]]\nname = "dpmpp_2m"\n[[metric]]\nname = "endpoint_error"\n')
    summary = run_sweep(spec, tmp_path)
    assert (summary.ok, summary.skipped, summary.failed) == (1, 1, 0)
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        rows = dict(conn.execute("SELECT solver, status || ': ' || COALESCE(reason, '') FROM cells").fetchall())
    assert rows["unipc"].startswith("skipped: optimised schedule 'ld3': ld3 needs a differentiable transcription "
                                    "of the sampler; it has one for dpmpp_2m, ipndm, not 'unipc'")
    assert rows["dpmpp_2m"].startswith("ok")
    assert [p.name for p in (tmp_path / "cache" / "schedules").glob("*.json")].__len__() == 1  # unipc: no work


def test_a_budget_below_the_solvers_minimum_skips_the_cell_with_the_reason(tmp_path):
    spec = parse_spec(SPEC.format(nfe=1, model="gmm16", sampler="heun", schedule="dmn", extra="ends_at_zero = false"))
    summary = run_sweep(spec, tmp_path)
    assert summary.skipped == 1
    assert "a budget of 1 NFE is too small" in summary.problems[0] or any(
        "too small" in p for p in summary.problems)


# ---------------------------------------------------------------------------------------------
# ays_opt: the KL upper bound and its minimiser on a single Gaussian
# ---------------------------------------------------------------------------------------------


def _gaussian_klub(low: float, high: float, std: float, dim: int) -> float:
    """Closed form of the integrand for data N(m, std^2 I): with c(t) = std^2/(std^2 + t^2),
    E||D(x_t, t) - D(x_s, s)||^2 = dim [(c_t - c_s)^2 (std^2 + t^2) + c_s^2 (s^2 - t^2)]."""
    c_s = std**2 / (std**2 + high**2)

    def integrand(t):
        c_t = std**2 / (std**2 + t**2)
        return t**-3 * dim * ((c_t - c_s) ** 2 * (std**2 + t**2) + c_s**2 * (high**2 - t**2))

    return integrate.quad(integrand, low, high, epsrel=1e-10, limit=200)[0]


def test_ays_klub_estimate_matches_the_closed_form_on_a_single_gaussian():
    from sampler_bench.solvers.optimised.ays import KLUB

    model = gaussian_model(std=0.5, dim=16)
    problem = O.Problem(model, "dpmpp_2m", {}, 3, 0.002, 80.0)
    problem.counted = O.base.CountingModel(model)
    klub = KLUB(problem, n_data=256, n_t=16, seed=0)
    for low, high in ((0.002, 0.05), (0.05, 1.0), (1.0, 80.0)):
        assert klub(low, high) == pytest.approx(_gaussian_klub(low, high, 0.5, 16), rel=0.1)
    assert problem.counted.nfe == 6  # two calls per interval


def test_ays_opt_places_the_free_level_at_the_minimum_of_the_exact_bound():
    from scipy.optimize import minimize_scalar

    std, dim, lo, hi = 0.5, 16, 0.002, 80.0
    model = gaussian_model(std=std, dim=dim)
    problem = O.Problem(model, "dpmpp_2m", {}, 3, lo, hi)  # three positive levels: one free
    grid, cost = O.run(O.get("ays_opt"), problem, {"n_data": 256, "n_t": 16, "candidates": 40, "iterations": 1})
    exact = minimize_scalar(lambda u: _gaussian_klub(lo, math.exp(u), std, dim) + _gaussian_klub(math.exp(u), hi, std, dim),
                            bounds=(math.log(lo), math.log(hi)), method="bounded")
    spacing = (math.log(hi) - math.log(lo)) / 41
    assert abs(math.log(float(grid[1])) - exact.x) <= 1.5 * spacing
    assert cost.samples == 256 and cost.nfe == 2 * 2 * 41  # two intervals per candidate (and the start)


def test_ays_opt_on_a_model_without_data_is_one_spec_error(tmp_path, monkeypatch):
    class NoData(AnalyticModel):
        def sample_data(self, n, generator=None):
            return None

    monkeypatch.setitem(builtin.BUILTIN, "nodata", lambda: NoData("nodata", IsotropicGaussian([0.0, 0.0], 1.0)))
    spec = parse_spec(SPEC.format(nfe=4, model="nodata", sampler="dpmpp_2m", schedule="ays_opt", extra=""))
    with pytest.raises(SpecError, match=r"model 'nodata': optimised schedule 'ays_opt' needs data samples x0"):
        run_sweep(spec, tmp_path)


def test_the_digits_classifier_refuses_samples_that_are_not_8x8_digits():
    import sampler_bench.metrics as M

    ok, why = M.info("fd").applies(builtin.builtin_model("gmm16"), "digits-classifier")
    assert not ok and "8x8 digits (64 values per sample)" in why


# ---------------------------------------------------------------------------------------------
# ld3: gradients through the sampler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver, options", [("dpmpp_2m", {}), ("ipndm", {"order": 4}), ("ipndm", {"order": 2})])
@pytest.mark.parametrize("ends_at_zero", [True, False])
def test_ld3_students_equal_the_registry_solvers(solver, options, ends_at_zero):
    from sampler_bench.solvers.optimised import ld3

    model = builtin.builtin_model("gmm16")
    x = 80.0 * torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grid = schedules.karras(7, 0.002, 80.0, append_zero=ends_at_zero)
    expected = run_solver(solver, CountingDenoiser(model), x, grid, options=options)
    got = ld3.STUDENTS[solver](CountingDenoiser(model), x, grid, options)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_ld3_gradient_through_the_sampler_matches_finite_differences_and_the_fit_improves():
    from sampler_bench.solvers.optimised import ld3

    model = gaussian_model(std=0.5, dim=4)
    x = 80.0 * torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    target = model.distribution.ode_solution(x, 80.0, 0.0)

    def loss(xi):
        grid = torch.cat([ld3.levels_of(xi, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
        out = ld3.dpmpp_2m(CountingDenoiser(model), x, grid, {})
        return torch.linalg.vector_norm(out - target, dim=1).mean()

    xi = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(xi), xi)
    for k in range(4):
        e = torch.zeros(4, dtype=torch.float64)
        e[k] = 1e-6
        fd = (loss(xi.detach() + e) - loss(xi.detach() - e)) / 2e-6
        assert float(grad[k]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)
    problem = O.Problem(model, "dpmpp_2m", {}, 5, 0.002, 80.0)
    grid, cost = O.run(O.get("ld3"), problem, {"n_warmup": 16, "iterations": 20, "teacher_steps": 40})
    assert cost.nfe == 40 + 20 * 5 and cost.samples == 16  # teacher, then one student run per iteration
    warm = problem.warmup_states(0, 16)
    exact = model.distribution.ode_solution(warm, 80.0, 0.0)

    def err(g):
        return float(torch.linalg.vector_norm(run_solver("dpmpp_2m", CountingDenoiser(model), warm, g) - exact, dim=1).mean())

    assert err(grid) < err(schedules.log_snr_uniform(5, 0.002, 80.0))  # it starts there and keeps the best iterate


def test_ld3_refuses_a_denoiser_without_gradients_and_a_sampler_it_cannot_differentiate():
    class NoGrad(AnalyticModel):
        def __call__(self, x, sigma):
            with torch.no_grad():
                return super().__call__(x, sigma)

    why = O.get("ld3").applies(NoGrad("ng", IsotropicGaussian([0.0, 0.0], 1.0)))
    assert why is not None and "needs gradients through the denoiser" in why
    problem = O.Problem(gaussian_model(), "unipc", {}, 5, 0.002, 80.0)
    with pytest.raises(O.OptimiserError, match="ld3 needs a differentiable transcription of the sampler; it has one "
                                                "for dpmpp_2m, ipndm, not 'unipc'"):
        O.run(O.get("ld3"), problem, {"n_warmup": 4, "iterations": 1, "teacher_steps": 10})


def test_the_cost_table_has_one_line_per_optimised_configuration():
    """Two parameter sets of one optimiser cost differently: each gets its own line (they collided before)."""
    import pandas as pd

    from sampler_bench.report.schedules import cost_table

    cells = pd.DataFrame({
        "cell_id": ["a", "b", "c"], "nfe_budget": [5, 5, 5], "schedule": ["endpoint_descent"] * 2 + ["karras"],
        "row": ["ipndm [endpoint_descent, n_warmup=32]", "ipndm [endpoint_descent, n_warmup=1024]",
                "ipndm [karras, default schedule params]"]})
    cost = {"nfe": 10, "sample_evaluations": 0, "wall_s": 1.0, "seeds": []}
    table = cost_table(cells, {"a": {"cost": {**cost, "samples": 32}}, "b": {"cost": {**cost, "samples": 1024}}})
    lines = {row[0].text: row[1].text for row in table.rows}
    assert lines == {"endpoint_descent, n_warmup=32": "10 × 32 (1 s)", "endpoint_descent, n_warmup=1024": "10 × 1024 (1 s)"}


def test_the_schedules_section_says_which_optimised_cells_were_skipped_and_why():
    import pandas as pd

    from sampler_bench.report.schedules import skipped_lines

    reason = "optimised schedule 'ld3': ld3 needs a differentiable transcription of the sampler"
    cells = pd.DataFrame({
        "cell_id": list("abcd"), "nfe_budget": [6, 5, 5, 5], "schedule": ["ld3", "ld3", "karras", "gits"],
        "status": ["skipped", "skipped", "skipped", "ok"], "reason": [reason, reason, "budget too small", ""],
        "row": ["unipc [ld3, n_warmup=4]", "unipc [ld3, n_warmup=4]", "unipc [karras, default schedule params]",
                "unipc [gits, default schedule params]"]})
    assert skipped_lines(cells, {"ld3", "gits"}) == [f"ld3, n_warmup=4: skipped at NFE 5, 6: {reason}"]
