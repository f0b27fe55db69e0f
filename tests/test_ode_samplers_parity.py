"""Parity of res_multistep, gradient_estimation and ipndm_v with their reference code, and their identities.

The references do not install here (ComfyUI, diff-sampler), so each update rule is transcribed below
as an independent re-implementation from the reference source and compared on the same denoiser,
start and grid (float64): ComfyUI ``comfy/k_diffusion/sampling.py`` at commit 02159d81
(``res_multistep`` with eta = 0, ``sample_gradient_estimation``, ``sample_ipndm_v``; the last is
ComfyUI's port of zju-pi/diff-sampler ``diff-solvers-main/solvers.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers import adams
from sampler_bench.solvers.driver import CountingDenoiser, run_solver

GRIDS = {
    "to_zero": lambda: sb.schedules.karras(12, 0.002, 80.0),
    "to_sigma_min": lambda: sb.schedules.karras(12, 0.05, 80.0, append_zero=False),
}


class Counted:
    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.denoiser(x, torch.full((x.shape[0],), float(sigma), dtype=x.dtype))


def comfy_res_multistep(model, x, sigmas):
    """ComfyUI ``res_multistep(eta=0, cfg_pp=False)``: sigma_down = sigma_next, no noise."""
    phi1 = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2 = lambda t: (phi1(t) - 1.0) / t  # noqa: E731
    t_fn = lambda s: s.log().neg()  # noqa: E731
    old_denoised, old_sigma_down = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down = sigmas[i + 1]
        if sigma_down == 0 or old_denoised is None:
            x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = phi1(-h) - phi2(-h) / c2
            b2 = phi2(-h) / c2
            x = (-h).exp() * x + h * (b1 * denoised + b2 * old_denoised)
        old_denoised, old_sigma_down = denoised, sigma_down
    return x


def comfy_gradient_estimation(model, x, sigmas, ge_gamma=2.0):
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def comfy_ipndm_v(model, x, sigmas, max_order=4):
    buffer = []
    t = sigmas
    for i in range(len(sigmas) - 1):
        t_cur, t_next = t[i], t[i + 1]
        denoised = model(x, t_cur)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (t_next - t_cur) * d_cur
        else:
            h_n, h_n_1 = t_next - t_cur, t_cur - t[i - 1]
            c1, c2 = (2 + h_n / h_n_1) / 2, -(h_n / h_n_1) / 2
            if order == 2:
                x_next = x + (t_next - t_cur) * (c1 * d_cur + c2 * buffer[-1])
            elif order == 3:
                h_n_2 = t[i - 1] - t[i - 2]
                temp = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
                x_next = x + (t_next - t_cur) * ((c1 + temp) * d_cur + (c2 - (1 + h_n_1 / h_n_2) * temp) * buffer[-1]
                                                 + temp * h_n_1 / h_n_2 * buffer[-2])
            else:
                h_n_2, h_n_3 = t[i - 1] - t[i - 2], t[i - 2] - t[i - 3]
                temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
                temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n
                         / (6 * (h_n + h_n_1 + h_n_2))) * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) \
                    / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
                q = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
                coeff1 = c1 + temp1 + temp2
                coeff2 = c2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + h_n_1 / h_n_2 + q) * temp2
                coeff3 = temp1 * h_n_1 / h_n_2 + (h_n_1 / h_n_2 + q * (1 + h_n_2 / h_n_3)) * temp2
                coeff4 = -temp2 * q * h_n_1 / h_n_2
                x_next = x + (t_next - t_cur) * (coeff1 * d_cur + coeff2 * buffer[-1] + coeff3 * buffer[-2]
                                                 + coeff4 * buffer[-3])
        buffer.append(d_cur)
        del buffer[: max(0, len(buffer) - (max_order - 1))]
        x = x_next
    return x


CASES = [
    ("res_multistep", {}, comfy_res_multistep, {}),
    ("gradient_estimation", {}, comfy_gradient_estimation, {}),
    ("gradient_estimation", {"gamma": 1.5}, comfy_gradient_estimation, {"ge_gamma": 1.5}),
    *[("ipndm_v", {"order": k}, comfy_ipndm_v, {"max_order": k}) for k in (1, 2, 3, 4)],
]


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0] + "".join(f"-{k}={v}" for k, v in c[1].items()))
def test_matches_the_transcribed_reference_samples_and_nfe(case, grid, gmm3d):
    name, opts, reference, ref_kwargs = case
    sigmas = GRIDS[grid]()
    x = sigmas[0] * torch.randn(6, 3, generator=torch.Generator().manual_seed(31), dtype=torch.float64)
    ours_model = CountingDenoiser(gmm3d)
    ours = run_solver(name, ours_model, x, sigmas, options=opts)
    theirs_model = Counted(gmm3d)
    theirs = reference(theirs_model, x, sigmas, **ref_kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-11, atol=1e-12)
    assert ours_model.nfe == theirs_model.calls == len(sigmas) - 1


# --- identities ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_res_multistep_is_dpmpp_2m_in_its_taylor_form(grid, gmm3d):
    """RES's phi_2 weights integrate D linear in lambda exactly, as DPM-Solver++(2M) 'taylor' does."""
    sigmas = GRIDS[grid]()
    x = 80.0 * torch.randn(6, 3, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    torch.testing.assert_close(sb.sample("res_multistep", gmm3d, x, sigmas),
                               sb.sample("dpmpp_2m", gmm3d, x, sigmas, variant="taylor"), rtol=1e-12, atol=1e-12)


def test_gradient_estimation_special_cases(gmm3d):
    x = 2.0 * torch.randn(6, 3, generator=torch.Generator().manual_seed(33), dtype=torch.float64)
    karras = sb.schedules.karras(10, 0.002, 2.0)
    torch.testing.assert_close(sb.sample("gradient_estimation", gmm3d, x, karras, gamma=1.0),
                               sb.sample("euler", gmm3d, x, karras), rtol=1e-13, atol=1e-13)
    # gamma = 3/2 on a sigma-uniform grid is two-step Adams–Bashforth.
    uniform = torch.linspace(2.0, 0.05, 13, dtype=torch.float64)
    torch.testing.assert_close(sb.sample("gradient_estimation", gmm3d, x, uniform, gamma=1.5),
                               sb.sample("lms", gmm3d, x, uniform, order=2), rtol=1e-13, atol=1e-13)


def test_ipndm_v_weights_against_exact_variable_step_adams_bashforth():
    """Order 2 is exact variable-step AB; order 3 is AB3 on uniform steps only; order 4 is not AB4
    even on uniform steps, and on steps of varying ratio its weights do not sum to 1."""
    uniform = [-0.1, -0.1, -0.1, -0.1]
    uneven = [-0.1, -0.13, -0.2, -0.22]  # sigma steps h_n, h_{n-1}, ... (ratio varies)

    def exact(steps, k):  # Adams–Bashforth weights from the Lagrange basis on the past sigmas
        nodes = [0.0]
        for h in steps[1:k]:
            nodes.append(nodes[-1] - h)
        return [w / steps[0] for w in adams.lagrange_integrals(nodes, 0.0, steps[0])]

    for steps in (uniform, uneven):
        assert adams.ipndm_v_weights(steps, 2) == pytest.approx(exact(steps, 2), rel=1e-13)
    assert adams.ipndm_v_weights(uniform, 3) == pytest.approx(exact(uniform, 3), rel=1e-13)
    assert adams.ipndm_v_weights(uneven, 3) != pytest.approx(exact(uneven, 3), rel=1e-3)
    assert math.fsum(adams.ipndm_v_weights(uneven, 3)) == pytest.approx(1.0, abs=1e-14)
    assert [24 * w for w in adams.ipndm_v_weights(uniform, 4)] == pytest.approx([57, -65, 43, -11], rel=1e-12)
    assert exact(uniform, 4) == pytest.approx([55 / 24, -59 / 24, 37 / 24, -9 / 24], rel=1e-12)
    assert abs(math.fsum(adams.ipndm_v_weights(uneven, 4)) - 1.0) > 1e-3


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("ipndm_v", {"order": 5}, "option order=5 is not allowed; expected an integer >= 1 and <= 4"),
        ("ipndm_v", {"max_order": 3}, "solver 'ipndm_v' has no option 'max_order'"),
        ("gradient_estimation", {"gamma": 0.0}, "option gamma=0.0 is not allowed; expected a number > 0"),
        ("gradient_estimation", {"ge_gamma": 2.0}, "has no option 'ge_gamma'"),
        ("res_multistep", {"eta": 1.0}, "solver 'res_multistep' has no option 'eta'"),
    ],
)
def test_bad_options_raise_one_readable_value_error(name, options, message, gmm3d):
    with pytest.raises(ValueError, match=message):
        sb.sample(name, gmm3d, torch.ones(1, 3, dtype=torch.float64), sb.schedules.karras(4, 0.002, 80.0), **options)
