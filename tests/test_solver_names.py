"""The registry holds exactly the pinned solver names (tests/solver_names.py)."""

import sampler_bench as sb
from solver_names import EXPECTED_SOLVERS


def test_the_registry_holds_exactly_the_pinned_solver_names():
    registered = set(sb.solvers.available())
    expected = set(EXPECTED_SOLVERS)
    assert not expected - registered, f"pinned but not registered (renamed or lost?): {sorted(expected - registered)}"
    assert not registered - expected, f"registered but not pinned (add them to tests/solver_names.py): {sorted(registered - expected)}"


def test_the_pinned_list_has_no_duplicates():
    assert len(EXPECTED_SOLVERS) == len(set(EXPECTED_SOLVERS))
