"""Small glue shared by the asset modules."""


from contextlib import contextmanager

import dagster as dg

from crrecon_pipeline.errors import ConfigError, DataError, TrainingDiverged


@contextmanager
def bad_input_fails_step():
    """Bad input (bad data, a bad run config, a diverged run) fails the step with its one-line message."""
    try:
        yield
    except (DataError, ConfigError, TrainingDiverged) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None  # the same input fails again
