"""Each solver declares its order once, and multistep solvers keep their past values in one History."""

import pytest
import torch

import sampler_bench as sb
from sampler_bench.solvers.history import History
from sampler_bench.solvers.registry import register


@pytest.mark.parametrize("name", sb.solvers.available())
def test_the_declared_order_is_the_order_function_at_the_default_options(name):
    info = sb.solvers.info(name)
    assert isinstance(info.order, int) and info.order == info.order_for(info.validate({}))


def test_an_order_given_twice_must_agree_and_a_function_order_sets_the_default():
    opt = sb.solvers.Option(3, int, "order", low=1, high=4)
    with pytest.raises(RuntimeError, match="declare the order once"):
        register("test_twice", order=2, order_of=lambda o: o["order"], paper="-", description="-",
                 options={"order": opt})
    assert "test_twice" not in sb.solvers.available()


def test_history_keeps_the_newest_values_first_with_their_levels():
    h = History()
    for k, sigma in enumerate((8.0, 4.0, 2.0, 1.0)):
        values = h.push(sigma, torch.tensor(float(k)), keep=3)
    assert [float(v) for v in values] == [3.0, 2.0, 1.0] and len(h) == 3
    assert (h.sigma(0), h.sigma(2)) == (1.0, 4.0) and float(h[1]) == 2.0
    h.push(0.5, torch.tensor(9.0), keep=1)
    assert h.sigmas == [0.5] and len(h) == 1
