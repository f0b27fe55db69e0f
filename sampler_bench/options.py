"""Validated keyword options and "did you mean" suggestions, shared by solvers, metrics and specs.

An :class:`Option` declares one keyword's default, type and allowed values; ``validate`` returns the
checked value or raises :class:`OptionError` (a ``ValueError``) that names the owner, the option and
what is allowed. :func:`closest` turns a misspelt name into a suggestion.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Sequence

#: The largest NFE budget a plan accepts. Sampler comparisons live below ~1000 NFE (EDM's 2-D
#: ablations stop at 1023, arXiv 2206.00364 Fig. 2); 100k leaves room for convergence studies while
#: keeping a grid (and DPM-Solver-fast's per-step order list) a few MB. Larger budgets are refused.
MAX_NFE_BUDGET = 100_000


class OptionError(ValueError):
    """A bad solver/metric name, option or budget; the message says what to change."""


def closest(name: str, candidates: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(frozen=True)
class Option:
    """One validated solver option.

    ``kind`` is the accepted Python type (bool, int, float, str, or ``"int_list"`` /
    ``"float_list"`` for sequences); ``choices`` an allowed set; ``low``/``high`` inclusive
    bounds unless ``open_low``/``open_high``; ``nullable`` allows ``None``.
    """

    default: Any
    kind: Any
    doc: str = ""
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    nullable: bool = False

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind in ("int_list", "float_list"):
            what = "a list of " + ("integers" if self.kind == "int_list" else "numbers")
        else:
            what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
                self.kind, str(self.kind)
            )
        bounds = []
        if self.low is not None:
            bounds.append(("> " if self.open_low else ">= ") + f"{self.low:g}")
        if self.high is not None:
            bounds.append(("< " if self.open_high else "<= ") + f"{self.high:g}")
        if bounds:
            what += " " + " and ".join(bounds)
        if self.nullable:
            what += " (or none)"
        return what

    def _check_number(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.low is not None and (v < self.low or (self.open_low and v == self.low)):
            return False
        if self.high is not None and (v > self.high or (self.open_high and v == self.high)):
            return False
        return True

    def validate(self, solver: str, name: str, value: Any) -> Any:
        def bad() -> OptionError:
            return OptionError(
                f"solver {solver!r}: option {name}={value!r} is not allowed; expected {self.allowed()}"
            )

        if value is None:
            if self.nullable:
                return None
            raise bad()
        if self.choices is not None:
            if value not in self.choices or type(value) is not type(self.choices[0]) and not (
                isinstance(value, (int, float)) and isinstance(self.choices[0], (int, float))
                and not isinstance(value, bool)
            ):
                raise bad()
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad()
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not self._check_number(value):
                raise bad()
            return int(value)
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not self._check_number(value):
                raise bad()
            return float(value)
        if self.kind is str:
            if not isinstance(value, str):
                raise bad()
            return value
        if self.kind in ("int_list", "float_list"):
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
                raise bad()
            out = []
            for v in value:
                ok_type = isinstance(v, int) if self.kind == "int_list" else isinstance(v, (int, float))
                if isinstance(v, bool) or not ok_type or not self._check_number(v):
                    raise bad()
                out.append(int(v) if self.kind == "int_list" else float(v))
            return tuple(out)
        raise TypeError(f"unknown option kind {self.kind!r}")


#: The name solvers, specs and tests have always caught; the same class.
SolverOptionError = OptionError
