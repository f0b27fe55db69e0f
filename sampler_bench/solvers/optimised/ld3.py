"""``ld3``: a few parameters of the time steps learned against a teacher with gradients through the
sampler (Tong et al., "Learning to Discretize Denoising Diffusion ODEs", arXiv 2405.15506, §3).

Mechanism, in our notation (docs/schedule_optimisers.md): the positive levels are a function of one free
parameter per step, log sigma_{i+1} = log sigma_max - (log sigma_max - log sigma_min) * cumsum(softmax(xi))_i
(increments positive, ends pinned), started at the log-SNR-uniform grid (xi = 0). A teacher (``ipndm`` on
``teacher_steps`` EDM steps) gives the endpoint of each of ``n_warmup`` warm-up samples; the student is the
sampler itself on the levels, written with torch operations on the level tensor so that the loss
mean_b || student(x_b; sigma(xi)) - teacher(x_b) ||_2 has a gradient in xi, and Adam takes ``iterations``
steps on the whole warm-up batch. The paper's distance for images is LPIPS and its objective lets the
student start within a small ball around the teacher's start (a slack that eases the fit); here the
distance is L2 and the start is the teacher's (no slack): the result is the plain teacher-matching variant.

The registry's solvers compute their coefficients from Python floats of the grid, so no gradient reaches
the levels; :data:`STUDENTS` transcribes the update rules of the solvers ld3 supports (a test checks each
against the registry's solver to round-off).
"""

from __future__ import annotations

import torch

from .. import schedules
from ..driver import run_solver
from .base import OptimiserError, Problem, positive_int, positive_number

#: iPNDM's uniform-step Adams-Bashforth weights, newest first (solvers/adams.py IPNDM_WEIGHTS).
_AB = {1: (1.0,), 2: (1.5, -0.5), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def dpmpp_2m(model, x: torch.Tensor, sigmas: torch.Tensor, options: dict) -> torch.Tensor:
    """DPM-Solver++(2M), k-diffusion's form ('dpmsolver' variant), differentiable in ``sigmas``."""
    why = supports("dpmpp_2m", options)
    if why is not None:
        raise OptimiserError(why)
    old, lam_prev = None, None
    for i in range(sigmas.numel() - 1):
        s, t = sigmas[i], sigmas[i + 1]
        denoised = model(x, s.expand(x.shape[0]))
        if t.item() == 0.0:
            x = denoised  # the final denoise
            break
        lam_s, lam_t = -torch.log(s), -torch.log(t)
        h = lam_t - lam_s
        if old is None:
            x = (t / s) * x - torch.expm1(-h) * denoised
        else:
            r = (lam_s - lam_prev) / h
            x = (t / s) * x - torch.expm1(-h) * ((1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old)
        old, lam_prev = denoised, lam_s
    return x


def ipndm(model, x: torch.Tensor, sigmas: torch.Tensor, options: dict) -> torch.Tensor:
    """iPNDM: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j w_j eps_{i-j}, differentiable in ``sigmas``."""
    order = int(options.get("order", 4))
    eps: list[torch.Tensor] = []
    for i in range(sigmas.numel() - 1):
        s, t = sigmas[i], sigmas[i + 1]
        eps = [(x - model(x, s.expand(x.shape[0]))) / s] + eps[: order - 1]
        weights = _AB[min(i + 1, order)]
        x = x + (t - s) * sum(w * e for w, e in zip(weights, eps))
    return x


def differentiable(model) -> str | None:
    """None when the denoiser passes gradients to its noise level (one probe evaluation), else why not."""
    shape = tuple(getattr(model, "shape", ()) or ())
    if not shape:
        return "optimised schedule 'ld3' needs the model's data shape (model.shape) to probe its gradients"
    sigma = torch.ones(1, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        try:
            out = model(torch.zeros((1, *shape), dtype=torch.float64), sigma)
        except Exception as e:  # noqa: BLE001 -- any failure of the probe means: no gradients from this model
            return f"optimised schedule 'ld3' could not probe the denoiser for gradients ({type(e).__name__}: {e})"
    if not getattr(out, "requires_grad", False):
        return ("optimised schedule 'ld3' needs gradients through the denoiser, and this model evaluates it "
                "without them (a denoiser under torch.no_grad, or [execution] options, which are inference only): "
                "use gits, ays_opt, dmn or endpoint_descent")
    return None


#: Solvers ld3 can differentiate through: name -> f(model, x, sigmas, options).
STUDENTS = {"dpmpp_2m": dpmpp_2m, "ipndm": ipndm}


def supports(solver: str, options: dict) -> str | None:
    """None when :data:`STUDENTS` transcribes ``solver`` with these options, else why not (one sentence)."""
    if solver not in STUDENTS:
        return (f"ld3 needs a differentiable transcription of the sampler; it has one for "
                f"{', '.join(sorted(STUDENTS))}, not {solver!r}")
    if solver == "dpmpp_2m" and (options.get("variant", "dpmsolver") != "dpmsolver"
                                 or options.get("lower_order_final", False)):
        return "ld3 supports dpmpp_2m with its default options only (variant='dpmsolver', lower_order_final=false)"
    return None


def levels_of(xi: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Positive levels from sigma_max to sigma_min with log-increments softmax(xi) * log(sigma_max/sigma_min)."""
    lo, hi = torch.log(xi.new_tensor(sigma_min)), torch.log(xi.new_tensor(sigma_max))
    steps = torch.softmax(xi, 0) * (hi - lo)
    return torch.exp(torch.cat([hi.reshape(1), hi - torch.cumsum(steps, 0)]))


def optimise(problem: Problem, n_warmup: int = 64, seed: int = 0, iterations: int = 100, lr: float = 0.05,
             teacher: str = "ipndm", teacher_steps: int = 200) -> torch.Tensor:
    why = supports(problem.solver, problem.options)
    if why is not None:
        raise OptimiserError(why)
    student = STUDENTS[problem.solver]
    x = problem.warmup_states(seed, n_warmup)
    fine = schedules.karras(teacher_steps, problem.sigma_min, problem.sigma_max, append_zero=problem.ends_at_zero)
    with torch.no_grad():
        target = run_solver(teacher, problem.counted, x, fine, options={})
    xi = torch.zeros(problem.n_levels - 1, dtype=torch.float64, requires_grad=True)
    # Adam (Kingma & Ba 2015, Algorithm 1) written out: torch.optim's first step imports torch._dynamo (seconds)
    m, v, beta1, beta2 = torch.zeros_like(xi), torch.zeros_like(xi), 0.9, 0.999
    zero = torch.zeros(1, dtype=torch.float64)
    best, best_xi = float("inf"), xi.detach().clone()
    for k in range(1, iterations + 1):
        with torch.enable_grad():
            levels = levels_of(xi, problem.sigma_min, problem.sigma_max)
            grid = torch.cat([levels, zero]) if problem.ends_at_zero else levels
            out = student(problem.counted, x, grid.to(x.dtype), problem.options)
            loss = torch.linalg.vector_norm((out - target).reshape(x.shape[0], -1), dim=1).mean()
            if not loss.requires_grad:
                raise OptimiserError("ld3: the loss has no gradient in the levels (the denoiser drops gradients)")
            (grad,) = torch.autograd.grad(loss, xi)
        if loss.item() < best:  # keep the best iterate: Adam's last step need not be the best
            best, best_xi = loss.item(), xi.detach().clone()
        with torch.no_grad():
            m.mul_(beta1).add_((1 - beta1) * grad)
            v.mul_(beta2).add_((1 - beta2) * grad * grad)
            xi -= lr * (m / (1 - beta1**k)) / (torch.sqrt(v / (1 - beta2**k)) + 1e-8)
    return levels_of(best_xi, problem.sigma_min, problem.sigma_max)


DEFAULTS = {"n_warmup": 64, "seed": 0, "iterations": 100, "lr": 0.05, "teacher": "ipndm", "teacher_steps": 200}
CHECKS = {
    "n_warmup": positive_int(1, 1 << 20),
    "seed": positive_int(0, 1 << 62),
    "iterations": positive_int(1, 100_000),
    "lr": positive_number(0.0, 10.0),
    "teacher": ((lambda v: isinstance(v, str)), "a solver name"),
    "teacher_steps": positive_int(2, 100_000),
}
