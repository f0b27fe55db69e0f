"""Bad input to the public API stops with one readable ValueError that says what to change.

Every check also proves the error comes *before* any work: the denoiser used here fails the test if
it is ever called.
"""

from __future__ import annotations

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers import schedules


def never_called(x, sigma):
    raise AssertionError("the denoiser ran although the input was invalid")


X = torch.zeros(2, 3, dtype=torch.float64)
GRID = schedules.karras(6, 0.1, 10.0)


# ------------------------------------------------------------------------------------------------
# Solver names and options.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typo, suggestion", [("eulr", "euler"), ("dpmpp2m", "dpmpp_2m"), ("uni_pc", "unipc"),
                                              ("lsm", "lms")])
def test_unknown_solver_suggests_the_closest_name(typo, suggestion):
    with pytest.raises(ValueError, match=f"unknown solver '{typo}' \\(did you mean '{suggestion}'\\?\\)"):
        sb.sample(typo, never_called, X, GRID)


@pytest.mark.parametrize("name", [None, 3, ""])
def test_solver_name_that_is_not_a_string_is_rejected(name):
    with pytest.raises(ValueError, match="unknown solver"):
        sb.sample(name, never_called, X, GRID)


@pytest.mark.parametrize("name", sb.solvers.available())
def test_unknown_option_names_the_solver_and_lists_its_options(name):
    info = sb.solvers.info(name)
    with pytest.raises(ValueError) as err:
        sb.sample(name, never_called, X, GRID, not_an_option=1)
    msg = str(err.value)
    assert f"solver {name!r} has no option 'not_an_option'" in msg
    assert all(opt in msg for opt in info.options) or not info.options


@pytest.mark.parametrize("name", sb.solvers.available())
def test_every_option_rejects_a_value_of_the_wrong_type(name):
    for option, spec in sb.solvers.info(name).options.items():
        with pytest.raises(ValueError) as err:
            sb.sample(name, never_called, X, GRID, **{option: object()})
        assert f"solver {name!r}: option {option}=" in str(err.value)
        assert f"expected {spec.allowed()}" in str(err.value)


def test_option_near_miss_suggests_the_option():
    with pytest.raises(ValueError, match="solver 'lms' has no option 'ordr' \\(did you mean 'order'\\?\\); "
                                         "its options are: order"):
        sb.sample("lms", never_called, X, GRID, ordr=2)


@pytest.mark.parametrize("name, options, allowed", [
    ("lms", {"order": "2"}, "an integer >= 1 and <= 4"),
    ("lms", {"order": 2.0}, "an integer >= 1 and <= 4"),
    ("lms", {"order": True}, "an integer >= 1 and <= 4"),
    ("lms", {"order": 5}, "an integer >= 1 and <= 4"),
    ("lms", {"order": 0}, "an integer >= 1 and <= 4"),
    ("deis", {"order": 4}, "an integer >= 0 and <= 3"),
    ("deis", {"beta_d": 0.0}, "a number > 0"),
    ("deis", {"beta_min": float("nan")}, "a number >= 0"),
    ("deis_rho", {"order": -1}, "an integer >= 0 and <= 3"),
    ("ipndm", {"order": 7}, "an integer >= 1 and <= 4"),
    ("unipc", {"variant": "bh3"}, "one of 'bh1', 'bh2'"),
    ("unipc", {"variant": "vary_coeff"}, "one of 'bh1', 'bh2'"),
    ("unipc", {"order": 4}, "an integer >= 1 and <= 3"),
    ("unipc", {"use_corrector": 1}, "true or false"),
    ("unipc", {"lower_order_final": "yes"}, "true or false"),
])
def test_bad_option_value_names_solver_option_and_allowed_values(name, options, allowed):
    (option, value), = options.items()
    with pytest.raises(ValueError) as err:
        sb.sample(name, never_called, X, GRID, **options)
    assert str(err.value) == f"solver {name!r}: option {option}={value!r} is not allowed; expected {allowed}"


# ------------------------------------------------------------------------------------------------
# Budgets and warm-up steps.
# ------------------------------------------------------------------------------------------------


def test_budget_too_small_for_the_solver_says_the_minimum():
    with pytest.raises(ValueError, match="solver 'unipc': a budget of 2 NFE is too small; with these options "
                                         "it needs at least 3 NFE \\(3 steps\\)"):
        sb.solvers.plan("unipc", 2)
    assert sb.solvers.plan("unipc", 2, order=2).steps == 2  # a lower order fits


@pytest.mark.parametrize("name", [n for n in sb.solvers.available() if not sb.solvers.info(n).adaptive])
@pytest.mark.parametrize("budget", [0, -4, 2.5, True, "10"])
def test_budget_that_is_not_a_positive_integer_is_rejected(name, budget):
    with pytest.raises(ValueError, match=f"solver {name!r}: the NFE budget must be an integer >= 1"):
        sb.solvers.plan(name, budget)


def test_adaptive_solver_has_no_budget():
    with pytest.raises(ValueError, match="solver 'reference' is adaptive"):
        sb.solvers.plan("reference", 20)


def test_unknown_schedule_in_a_plan_suggests_the_closest():
    with pytest.raises(ValueError, match="unknown schedule 'karas' \\(did you mean 'karras'\\?\\)"):
        sb.solvers.plan("heun", 11, schedule="karas")


def test_grid_with_too_few_steps_for_the_warm_up_is_rejected():
    with pytest.raises(ValueError, match="solver 'unipc' with these options needs at least 3 steps \\(3 NFE\\); "
                                         "the grid has 2"):
        sb.sample("unipc", never_called, X, schedules.karras(2, 0.1, 10.0))


# ------------------------------------------------------------------------------------------------
# Grids, states, generators.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigmas, match", [
    ([1.0, 2.0, 0.0], "strictly decreasing"),
    ([2.0, 2.0, 0.0], "strictly decreasing"),
    ([3.0, float("nan"), 0.0], "NaN or Inf"),
    ([float("inf"), 1.0, 0.0], "NaN or Inf"),
    ([3.0, -0.5], "must be positive"),
    ([3.0, 0.0, 0.0], "must be positive"),
    ([1.0], "at least 2 noise levels"),
    ([], "at least 2 noise levels"),
    ([[1.0, 0.5]], "1-D sequence"),
    ("3, 2, 1", "1-D sequence"),
    (None, "1-D sequence"),
    (["a", "b"], "1-D sequence"),
])
def test_bad_sigmas_are_rejected(sigmas, match):
    with pytest.raises(ValueError, match=match):
        sb.sample("euler", never_called, X, sigmas)


@pytest.mark.parametrize("x, match", [
    (torch.zeros(2, 3, dtype=torch.long), "floating-point"),
    (torch.zeros(0, 3, dtype=torch.float64), "B >= 1"),
    ([[0.0, 1.0]], "tensor of shape"),
])
def test_bad_state_is_rejected(x, match):
    with pytest.raises(ValueError, match=match):
        sb.sample("euler", never_called, x, GRID)


def test_generator_list_of_the_wrong_length_is_rejected():
    with pytest.raises(ValueError, match="got 1 generators for a batch of 2 samples; pass one per sample"):
        sb.sample("euler", never_called, X, GRID, generator=[torch.Generator()])
