"""Small glue shared by the asset modules."""


from contextlib import contextmanager

import dagster as dg

from ...errors import ConfigError, DataError, TrainingDiverged
from ...quality import CheckOutcome


@contextmanager
def bad_input_fails_step():
    """Bad input (bad data, a bad run config, a diverged run) fails the step with its one-line message."""
    try:
        yield
    except (DataError, ConfigError, TrainingDiverged) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None  # the same input fails again


def check_result(asset: str, name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=bool(outcome.passed),
        description=outcome.description,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR,
    )
