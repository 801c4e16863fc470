"""The errors that mean "bad input, say it in one line": the CLI and the Dagster layer catch exactly these (plus
OSError for paths); anything else is a bug and keeps its traceback. And the ranges of numeric settings (Range),
written once on the core dataclasses' fields (metadata "range"), so the `crrecon` flags generated from them, the
Dagster config and resources built into them, and Python callers all refuse the same values in one line."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


class DataError(ValueError):
    """Bad input data. The message is one line that names the file and the problem."""


class ConfigError(ValueError):
    """A bad run config or option. The message is one line that names the (dotted) key and the problem."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf. The message names the epoch; the last good checkpoint stays in place."""


USER_ERRORS = (DataError, ConfigError, TrainingDiverged, OSError)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Range:
    """A closed interval [lo, hi], with `lo_open` for (lo, hi]: every bound finite, so 1e30 is refused too."""

    lo: float
    hi: float
    lo_open: bool = False

    def problem(self, value) -> str | None:
        """Why `value` is not allowed, or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number {self}"
        if not math.isfinite(value):
            return f"must be a finite number {self}"
        if value < self.lo or value > self.hi or (self.lo_open and value == self.lo):
            return f"must be {self}"
        return None

    def __str__(self) -> str:
        return f"in {'(' if self.lo_open else '['}{_number(self.lo)}, {_number(self.hi)}]"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def ranged(text: str, lo: float, hi: float, lo_open: bool = False, **more) -> dict:
    """Field metadata: the help text and the range (e.g. `field(default=2.0, metadata=ranged("...", 0, 64))`)."""
    return {"help": text, "range": Range(lo, hi, lo_open), **more}


def range_of(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range")


def check_ranges(obj, owner: str) -> None:
    """Every ranged field of the dataclass instance `obj` within its range; one line naming `owner`.field."""
    for f in dataclasses.fields(obj):
        bounds = range_of(f)
        problem = bounds.problem(getattr(obj, f.name)) if bounds else None
        if problem:
            raise ConfigError(f"{owner}.{f.name}={getattr(obj, f.name)!r}: {problem}")
