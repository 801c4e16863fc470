"""The errors that mean "bad input, say it in one line": the CLI and the Dagster layer catch exactly these (plus
OSError for paths); anything else is a bug and keeps its traceback. (The ranges of the settings are Field
constraints on the settings classes: settings.py.)"""

from __future__ import annotations


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
