"""How a cell's sampler configuration is named in tables, decided when the cell is computed.

The report reads these from the store (``options_label``, ``requested_order``) instead of asking
today's registry, so a report of an old store shows what the sweep that produced it declared.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..solvers.registry import SolverInfo


def _plain(value: Any) -> Any:
    """Tuples as lists, so a registry default compares equal to its JSON round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def format_option(name: str, value: Any) -> str:
    """One option as a table shows it: ``order 2``, ``bh2``, ``no lower_order_final``."""
    if isinstance(value, bool):
        return name if value else f"no {name}"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return f"{name} " + ",".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in value)
    if isinstance(value, (int, float)):
        return f"{name} {value:g}"
    return f"{name} {value}"


def options_text(options: Mapping[str, Any]) -> str:
    """Every option, in name order (what a table shows when the sweep did not record its label)."""
    return ", ".join(format_option(name, options[name]) for name in sorted(options))


def plan_added_options(meta: SolverInfo, options: Mapping[str, Any], budget: int, ends_at_zero: bool) -> set[str]:
    """Names of the options the NFE budget plan chose (e.g. DPM-Solver-fast's per-step ``orders``).

    They change from budget to budget, so they must not split a sampler into one row per budget.
    """
    if meta.steps_for_nfe is None:
        return set()
    try:
        _, updates = meta.steps_for_nfe(int(budget), bool(ends_at_zero), meta.validate(dict(options)))
    except ValueError:  # a budget the solver cannot meet: the cell is skipped, nothing was added
        return set()
    return set(updates)


def options_label(meta: SolverInfo, options: Mapping[str, Any], budget: int = 0, ends_at_zero: bool = True) -> str:
    """Short text for the requested options that differ from the solver's defaults, e.g.
    ``'order 2, bh2'``; options the budget plan added are left out."""
    skip = plan_added_options(meta, options, budget, ends_at_zero)
    parts = []
    for name in sorted(options):
        value = options[name]
        if name in skip or (name in meta.options and _plain(value) == _plain(meta.options[name].default)):
            continue
        parts.append(format_option(name, value))
    return ", ".join(parts)


def requested_order(meta: SolverInfo, options: Mapping[str, Any]) -> int:
    """Declared order of the configuration a spec asked for (before the budget plan's additions)."""
    return int(meta.order_for(meta.validate(dict(options))))
