"""Metrics: streaming/sharding invariance, exactness against closed forms, parity with torch-fidelity,
the reference-statistics cache, applicability and readable errors.

Image (Inception) paths are in test_metrics_inception.py.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import sampler_bench.metrics as M
from sampler_bench.metrics import features, refstats
from sampler_bench.metrics.fd import frechet_distance
from sampler_bench.metrics.swd import projections, wasserstein_1d
from sampler_bench.models import AnalyticModel, builtin_model
from sampler_bench.processes.analytic import GaussianMixture, IsotropicGaussian

# small settings so every metric runs in milliseconds on 96 samples
SMALL = {"kid": {"subset_size": 32, "subsets": 5}}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gmm2d():
    return builtin_model("gmm2d")


@pytest.fixture(scope="module")
def gmm16():
    return builtin_model("gmm16")


@pytest.fixture(scope="module")
def imperfect_batch(gmm2d):
    """96 samples that are not exact (scaled by 1.1, shifted), with 'reference endpoints' near them."""
    x = gmm2d.sample_data(96, gen(1)) * 1.1 + 0.05
    ref = x + 0.01 * torch.randn(x.shape, generator=gen(2), dtype=torch.float64)
    return x, ref


def fresh(name, model, **kw):
    return M.make(name, model, reference_samples=200, seed=3, **{**SMALL.get(name, {}), **kw})


def synthetic_trajectory(xb):
    """A curved path per sample, a function of that sample only, ending at it (for trajectory metrics)."""
    from sampler_bench.solvers.trajectory import Trajectory

    sigmas = [80.0, 20.0, 5.0, 1.0, 0.2, 0.0]
    bend = xb.roll(1, dims=1) + 1.0
    states = torch.stack([xb + s * bend + s**0.5 * xb**2 for s in sigmas], 1)
    denoised = torch.stack([xb + 0.1 * s * bend for s in sigmas], 1)
    return Trajectory(sigmas, states, denoised, xb.clone(), 0)


def feed(acc, x, ref, batch, start=None):
    for j, (xb, rb) in enumerate(zip(x.split(batch), ref.split(batch))):
        index = None if start is None or j else start
        if M.info(acc.name).needs_trajectory:
            acc.update(xb, index=index, trajectory=synthetic_trajectory(xb))
            continue
        acc.update(xb, reference=rb if M.info(acc.name).needs_reference_endpoints else None, index=index)
    return acc


# --- streaming and sharding --------------------------------------------------------------------

@pytest.mark.parametrize("name", M.available())
def test_every_metric_gives_the_same_value_streamed_in_small_batches(name, gmm2d, imperfect_batch):
    x, ref = imperfect_batch
    one = feed(fresh(name, gmm2d), x, ref, 96).compute()
    many = feed(fresh(name, gmm2d), x, ref, 7).compute()
    assert set(one) == set(M.info(name).keys)
    for k in one:
        assert many[k] == pytest.approx(one[k], rel=1e-11, abs=1e-13), k


@pytest.mark.parametrize("name", M.available())
def test_every_metric_reduced_over_two_shards_equals_one_run_over_the_union(name, gmm2d, imperfect_batch):
    x, ref = imperfect_batch
    single = feed(fresh(name, gmm2d), x, ref, 32)
    # a shard tells its first sample index: the bootstrap weights are keyed on it
    shards = [feed(fresh(name, gmm2d), x[a:b], ref[a:b], 32, start=a) for a, b in ((0, 41), (41, 96))]
    merged = fresh(name, gmm2d)
    merged.load_state(M.reduce_states([s.state() for s in shards]))
    for k, v in single.state().items():
        assert v.dtype == torch.float64
        assert torch.allclose(merged.state()[k], v, rtol=1e-12, atol=1e-12), k
    expect = single.compute()
    got = merged.compute()
    for k in expect:
        assert got[k] == pytest.approx(expect[k], rel=1e-11, abs=1e-13), k
    assert merged.provenance["n_samples"] == 96


def test_capped_feature_set_keeps_the_first_rows_in_sample_order_across_shards(gmm2d, imperfect_batch):
    x, ref = imperfect_batch
    single = feed(fresh("kid", gmm2d, max_samples=50), x, ref, 16)
    shards = [feed(fresh("kid", gmm2d, max_samples=50), x[a:b], ref[a:b], 16) for a, b in ((0, 30), (30, 96))]
    merged = fresh("kid", gmm2d, max_samples=50)
    merged.load_state(M.reduce_states([s.state() for s in shards]))
    assert torch.equal(single.state()["cat:features"], x[:50])
    assert torch.equal(merged.state()["cat:features"], x[:50])
    assert merged.provenance["n_samples"] == 96 and merged.provenance["n_samples_used"] == 50
    assert merged.compute() == single.compute()


# --- Fréchet distance ----------------------------------------------------------------------------

def test_fd_of_two_non_commuting_2d_gaussians_equals_the_closed_form():
    # for 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), with M = A^1/2 B A^1/2
    a = torch.tensor([[2.0, 0.7], [0.7, 0.5]], dtype=torch.float64)
    b = torch.tensor([[0.3, -0.2], [-0.2, 1.4]], dtype=torch.float64)
    m1, m2 = torch.tensor([0.1, -0.4], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64)
    cross = math.sqrt(float(torch.trace(a @ b)) + 2 * math.sqrt(float(torch.det(a) * torch.det(b))))
    closed = float((m1 - m2) @ (m1 - m2) + torch.trace(a) + torch.trace(b)) - 2 * cross
    assert frechet_distance(m1, a, m2, b) == pytest.approx(closed, rel=1e-13)
    assert frechet_distance(m2, b, m1, a) == pytest.approx(closed, rel=1e-13)  # symmetric


def test_fd_of_commuting_gaussians_is_mean_gap_plus_squared_std_gaps():
    va = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1], dtype=torch.float64)
    vb = torch.tensor([1.5, 0.25, 2.0, 0.3, 4.0], dtype=torch.float64)
    mu = torch.arange(5.0, dtype=torch.float64)
    closed = 4.0 * 5 + float(((va.sqrt() - vb.sqrt()) ** 2).sum())
    assert frechet_distance(mu, torch.diag(va), mu + 2, torch.diag(vb)) == pytest.approx(closed, rel=1e-13)


@pytest.mark.parametrize("rank", [8, 5])
def test_fd_agrees_with_torch_fidelity_on_the_same_statistics(rank):
    from sampler_bench.compat import import_torch_fidelity

    import_torch_fidelity()
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    g = gen(rank)
    f1 = torch.randn(rank + 1, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    f2 = 0.5 + torch.randn(40, 8, generator=g, dtype=torch.float64)
    s1 = {"mu": f1.mean(0).numpy(), "sigma": torch.cov(f1.T).numpy()}  # rank-deficient when rank < 8
    s2 = {"mu": f2.mean(0).numpy(), "sigma": torch.cov(f2.T).numpy()}
    theirs = fid_statistics_to_metric(s1, s2, verbose=False)[KEY_METRIC_FID]
    ours = frechet_distance(*(torch.from_numpy(v) for v in (s1["mu"], s1["sigma"], s2["mu"], s2["sigma"])))
    # zero eigenvalues of a rank-deficient product come out as +-eps*|C| and their square roots as
    # ~sqrt(eps*|C|) ~ 1e-7 in either formula: the trace term is not Lipschitz at a singular covariance
    assert ours == pytest.approx(theirs, rel=1e-9, abs=0 if rank == 8 else 1e-6)


def test_fd_accumulator_is_exact_for_samples_with_known_moments():
    # samples whose empirical mean/covariance are exactly m, S (whitened), against a Gaussian law m0, S0
    g = gen(5)
    d, n = 3, 50
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # sample covariance = I exactly
    l = torch.tensor([[1.0, 0, 0], [0.5, 0.8, 0], [-0.3, 0.2, 0.4]], dtype=torch.float64)
    m, s = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), l @ l.T
    x = m + z @ l.T
    m0, s0 = torch.zeros(3, dtype=torch.float64), torch.diag(torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64))
    model = AnalyticModel("one-gaussian", GaussianMixture([1.0], m0[None], s0[None]))
    acc = M.make("fd", model)
    for b in x.split(9):
        acc.update(b)
    assert "exact" in acc.provenance["reference"]["reference"]
    assert acc.compute()["fd"] == pytest.approx(frechet_distance(m, s, m0, s0), rel=1e-12)


@pytest.mark.slow  # a convergence rate over several sample sizes: ~10 s
def test_fd_of_exact_gmm_samples_against_exact_moments_shrinks_like_one_over_n(gmm2d):
    reps = 60

    def mean_fd(n, seed):
        vals = []
        for r in range(reps):
            acc = M.make("fd", gmm2d)
            acc.update(gmm2d.sample_data(n, gen(seed + r)))
            vals.append(acc.compute()["fd"])
        return sum(vals) / reps

    small, large = mean_fd(250, 100), mean_fd(4000, 1000)
    slope = math.log(large / small) / math.log(16)
    assert large < 5e-3
    assert -1.2 < slope < -0.8, (small, large, slope)


# --- Gaussian-mixture metrics --------------------------------------------------------------------

def test_gmm_nll_of_exact_samples_matches_the_mixture_entropy(gmm2d):
    # well-separated components (10 std apart): H = H(pi) + sum_k pi_k H(N(mu_k, s^2 I_2)) to ~1e-9
    s = 0.15
    entropy = math.log(8) + 1 + math.log(2 * math.pi * s * s)
    x = gmm2d.sample_data(20000, gen(7))
    acc = M.make("gmm_nll", gmm2d)
    for b in x.split(4096):
        acc.update(b)
    nll = -gmm2d.distribution.log_prob(x)
    se = float(nll.std()) / math.sqrt(x.shape[0])
    assert abs(acc.compute()["gmm_nll"] - entropy) < 4 * se


@pytest.mark.slow  # a convergence rate over several sample sizes: ~10 s
def test_gmm_tv_of_exact_samples_vanishes_like_one_over_sqrt_n(gmm16):
    w = gmm16.distribution.weights
    reps = 40

    def mean_tv(n, seed):
        tot = 0.0
        for r in range(reps):
            acc = M.make("gmm_tv", gmm16)
            acc.update(gmm16.sample_data(n, gen(seed + r)))
            tot += acc.compute()["gmm_tv"]
        return tot / reps

    small, large = mean_tv(200, 10), mean_tv(3200, 500)
    # multinomial: E|p_k - pi_k| ~ sqrt(2 pi_k (1 - pi_k) / (pi n))
    predicted = 0.5 * float((2 * w * (1 - w) / (math.pi * 3200)).sqrt().sum())
    assert large == pytest.approx(predicted, rel=0.3)
    slope = math.log(large / small) / math.log(16)
    assert -0.65 < slope < -0.35, (small, large, slope)


def test_gmm_tv_of_samples_from_one_component_is_one_minus_its_weight(gmm16):
    x, k = gmm16.distribution.sample(4000, gen(3), return_components=True)
    acc = M.make("gmm_tv", gmm16)
    acc.update(x[k == 3])
    assert acc.compute()["gmm_tv"] == pytest.approx(1 - 0.1, abs=1e-12)


def test_gmm_tv_soft_assignment_has_no_overlap_floor_and_hard_matches_its_floor():
    from scipy.stats import norm

    # 1-D, weights .7/.3, means -/+0.5, unit std: argmax picks component 1 iff x > log(.7/.3)
    model = AnalyticModel("overlap", GaussianMixture([0.7, 0.3], [[-0.5], [0.5]], [[[1.0]], [[1.0]]]))
    x = model.sample_data(40000, gen(11))
    t = math.log(0.7 / 0.3)
    p1 = 0.7 * norm.sf(t + 0.5) + 0.3 * norm.sf(t - 0.5)
    hard, soft = M.make("gmm_tv", model), M.make("gmm_tv", model, assignment="soft")
    hard.update(x)
    soft.update(x)
    mc = 4 * math.sqrt(0.25 / x.shape[0])
    assert hard.compute()["gmm_tv"] == pytest.approx(abs(0.3 - p1), abs=mc)
    assert abs(0.3 - p1) > 0.1  # the floor is real ...
    assert soft.compute()["gmm_tv"] < mc  # ... and soft assignment does not have it


# --- endpoint error ------------------------------------------------------------------------------

def test_endpoint_error_is_zero_for_identical_inputs(gmm16):
    x = gmm16.sample_data(64, gen(1))
    acc = M.make("endpoint_error", gmm16)
    acc.update(x, reference=x.clone())
    assert acc.compute() == {"endpoint_rmse": 0.0, "endpoint_mean_l2": 0.0}


def test_endpoint_error_of_per_sample_constant_shifts_has_the_known_value(gmm16):
    x = gmm16.sample_data(64, gen(1))
    shift = torch.linspace(-1, 2, 64, dtype=torch.float64)
    acc = M.make("endpoint_error", gmm16)
    for a, b in zip((x + shift[:, None]).split(10), x.split(10)):
        acc.update(a, reference=b)
    # |e_i| = |s_i| sqrt(d): rmse = sqrt(mean s_i^2), mean l2 = sqrt(d) mean |s_i|
    out = acc.compute()
    assert out["endpoint_rmse"] == pytest.approx(float((shift**2).mean().sqrt()), rel=1e-12)
    assert out["endpoint_mean_l2"] == pytest.approx(4.0 * float(shift.abs().mean()), rel=1e-12)


def test_endpoint_error_without_reference_endpoints_says_what_to_pass(gmm16):
    acc = M.make("endpoint_error", gmm16)
    with pytest.raises(ValueError, match="reference="):
        acc.update(gmm16.sample_data(4, gen(0)))
    with pytest.raises(ValueError, match="do not match"):
        acc.update(gmm16.sample_data(4, gen(0)), reference=gmm16.sample_data(3, gen(0)))


# --- sliced Wasserstein --------------------------------------------------------------------------

def test_swd_of_a_set_against_itself_is_zero(gmm16):
    x = gmm16.sample_data(300, gen(4))
    acc = M.make("swd", gmm16, reference_samples=x)
    acc.update(x)
    assert acc.compute()["swd"] == 0.0


def test_swd_of_a_translated_copy_is_the_rms_projected_shift_and_grows_with_it(gmm16):
    # 1-D W2 between a set and its translate by c is |c| exactly, so SW2 = sqrt(mean_l <theta_l, v>^2)
    x = gmm16.sample_data(300, gen(4))
    v = torch.linspace(-1, 1, 16, dtype=torch.float64)
    values = []
    for scale in (0.25, 0.5, 1.0):
        acc = M.make("swd", gmm16, reference_samples=x, seed=9)
        acc.update(x + scale * v)
        theta = projections(16, 128, seed=9)
        assert acc.compute()["swd"] == pytest.approx(float(((scale * v @ theta) ** 2).mean().sqrt()), rel=1e-10)
        values.append(acc.compute()["swd"])
    assert values[0] < values[1] < values[2]
    # E <theta, v>^2 = |v|^2 / d for uniform directions (128 of them: ~12% Monte-Carlo spread)
    assert values[2] == pytest.approx(float(v.norm()) / 4, rel=0.3)


def test_swd_projections_are_reproducible_unit_vectors_fixed_by_the_seed():
    a, b, c = projections(16, 128, 0), projections(16, 128, 0), projections(16, 128, 1)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a.norm(dim=0), torch.ones(128, dtype=torch.float64), atol=1e-14)


def test_wasserstein_1d_of_unequal_sizes_matches_scipy_and_replication():
    from scipy.stats import wasserstein_distance

    g = gen(8)
    a, b = torch.randn(6, 3, generator=g, dtype=torch.float64), 1 + 2 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    w1 = wasserstein_1d(a, b, p=1)
    for j in range(3):
        assert float(w1[j]) == pytest.approx(wasserstein_distance(a[:, j].numpy(), b[:, j].numpy()), rel=1e-12)
    # W2^2: replicate to the common size 12 and pair sorted values
    ra, rb = a.repeat_interleave(2, 0).sort(0).values, b.repeat_interleave(3, 0).sort(0).values
    assert torch.allclose(wasserstein_1d(a, b, p=2), ((ra - rb) ** 2).mean(0), rtol=1e-12)


# --- KID and precision/recall (torch-fidelity) -------------------------------------------------

def test_kid_and_precision_recall_of_identical_and_of_far_apart_sets(gmm16):
    x = gmm16.sample_data(200, gen(6))
    kid_same = M.make("kid", gmm16, reference_samples=x, subset_size=100, subsets=20)
    pr_same = M.make("precision_recall", gmm16, reference_samples=x)
    kid_far = M.make("kid", gmm16, reference_samples=x, subset_size=100, subsets=20)
    pr_far = M.make("precision_recall", gmm16, reference_samples=x)
    for acc in (kid_same, pr_same):
        acc.update(x)
    for acc in (kid_far, pr_far):
        acc.update(x + 20.0)
    same, far = kid_same.compute(), kid_far.compute()
    assert abs(same["kid_mean"]) < 0.02 * far["kid_mean"]
    assert far["kid_mean"] > 5 * far["kid_std"]
    assert pr_same.compute() == {"precision": 1.0, "recall": 1.0}
    assert pr_far.compute() == {"precision": 0.0, "recall": 0.0}
    assert kid_same.provenance["subset_size_used"] == 100


# --- applicability, reference statistics, errors -----------------------------------------------

def test_gmm_metrics_refuse_a_model_without_a_gaussian_mixture_with_a_reason():
    iso = AnalyticModel("iso", IsotropicGaussian([0.0, 0.0], 1.0))
    for name in ("gmm_nll", "gmm_tv"):
        ok, why = M.info(name).applies(iso)
        assert not ok and "GaussianMixture" in why and "IsotropicGaussian" in why
        with pytest.raises(ValueError, match="GaussianMixture"):
            M.make(name, iso)
    assert M.info("fd").applies(iso) == (True, "")
    assert M.make("fd", iso).provenance["reference"]["source"] == "exact"


def test_inception_metrics_refuse_vector_models_without_loading_torch_fidelity(gmm2d):
    ok, why = M.info("fd").applies(gmm2d, "inception-v3-compat")
    assert not ok and "[1 or 3, H, W]" in why
    with pytest.raises(ValueError, match=r"\[1 or 3, H, W\]"):
        M.make("kid", gmm2d, feature_extractor="inception-v3-compat")


class DataOnlyModel:
    """A model with data but no analytic law: reference statistics must be sampled (and cached)."""

    shape = (2,)

    def __init__(self, name, scale=1.0):
        self.name, self.scale, self.calls = name, scale, 0
        self.inner = builtin_model("gmm2d")

    def sample_data(self, n, generator=None):
        self.calls += 1
        return self.scale * self.inner.sample_data(n, generator)

    def fingerprint(self):
        return f"data-only-{self.scale}"


def test_reference_statistics_are_read_from_the_disk_cache_on_the_second_call(tmp_path):
    model = DataOnlyModel("data")
    refstats.clear_memory_cache()
    first = M.make("fd", model, reference_samples=500, cache_dir=tmp_path)
    assert model.calls == 1 and len(list(tmp_path.glob("refstats-*.safetensors"))) == 1
    refstats.clear_memory_cache()  # as in a new process
    second = M.make("fd", model, reference_samples=500, cache_dir=tmp_path)
    assert model.calls == 1  # no recomputation
    assert second.provenance["reference_hash"] == first.provenance["reference_hash"]
    assert torch.equal(second.ref_cov, first.ref_cov)
    # a damaged cache file is detected (content hash) and recomputed
    path = next(tmp_path.glob("refstats-*.safetensors"))
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    refstats.clear_memory_cache()
    third = M.make("fd", model, reference_samples=500, cache_dir=tmp_path)
    assert model.calls == 2 and torch.equal(third.ref_cov, first.ref_cov)


def test_reference_hash_changes_with_the_model_fingerprint_and_the_request(gmm2d, gmm16):
    h = lambda model, **kw: M.make("swd", model, reference_samples=kw.pop("n", 100), **kw).provenance["reference_hash"]
    assert h(DataOnlyModel("a", 1.0)) == h(DataOnlyModel("a", 1.0))
    assert h(DataOnlyModel("a", 1.0)) != h(DataOnlyModel("a", 2.0))
    assert h(DataOnlyModel("a", 1.0)) != h(DataOnlyModel("a", 1.0), n=101)
    assert h(DataOnlyModel("a", 1.0)) != h(DataOnlyModel("a", 1.0), seed=1)
    exact = lambda m: M.make("fd", m).provenance["reference_hash"]
    assert exact(gmm2d) != exact(gmm16)


def test_registered_module_extractor_is_built_lazily_and_keys_the_reference(gmm2d):
    built = []

    def factory(device="cpu"):
        built.append(device)
        lin = torch.nn.Linear(2, 3).to(device)  # float32: the wrapper casts the float64 samples
        torch.nn.init.constant_(lin.weight, 0.5)
        return lin

    features.register_extractor("test-linear", factory, factory=True, description="test", overwrite=True)
    assert built == [] and "test-linear" in features.available()
    acc = M.make("fd", gmm2d, feature_extractor="test-linear", reference_samples=300)
    assert [str(d) for d in built] == ["cpu"] and acc.ref_mean.shape == (3,)
    assert acc.provenance["feature_extractor"] == "test-linear"
    x = gmm2d.sample_data(10, gen(0))
    assert torch.allclose(acc.features(x), features.get("test-linear").fn(x.float()).detach().double())
    raw = M.make("fd", gmm2d, feature_extractor="raw", reference_samples=300)
    assert raw.provenance["reference_hash"] != acc.provenance["reference_hash"]


def test_bad_input_raises_one_readable_value_error(gmm2d):
    with pytest.raises(ValueError, match="did you mean 'fd'"):
        M.make("fdd", gmm2d)
    with pytest.raises(ValueError, match="subset_size"):
        M.make("kid", gmm2d, subsetsize=3)
    with pytest.raises(ValueError, match="expected one of 1, 2"):
        M.make("swd", gmm2d, p=3)
    with pytest.raises(ValueError, match="unknown feature extractor 'rawx'"):
        M.make("fd", gmm2d, feature_extractor="rawx")
    with pytest.raises(ValueError, match="reference_samples"):
        M.make("fd", gmm2d, reference_samples=1)
    with pytest.raises(ValueError, match="has no parameter"):
        features.get("raw", weights_path="x")
    acc = M.make("fd", gmm2d)
    with pytest.raises(ValueError, match="NaN or inf"):
        acc.update(torch.full((3, 2), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected \[batch, 2\]"):
        acc.update(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="no samples"):
        acc.compute()
    with pytest.raises(ValueError, match="state keys"):
        acc.load_state({"count": torch.tensor(1.0)})


def test_importing_metrics_does_not_import_torch_fidelity_or_torchvision():
    code = ("import sys, sampler_bench.metrics as M; M.make('fd', __import__('sampler_bench.models', fromlist=['x'])"
            ".builtin_model('gmm2d')); assert 'torch_fidelity' not in sys.modules and 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
