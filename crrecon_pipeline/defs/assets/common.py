"""Small glue shared by the asset modules."""


from contextlib import contextmanager

import dagster as dg

from ...npyio import DataError
from ...quality import CheckOutcome


@contextmanager
def bad_input_fails_step():
    """Bad input (DataError) fails the step with its one-line message, not a traceback."""
    try:
        yield
    except DataError as exc:
        raise dg.Failure(description=str(exc)) from None


def check_result(asset: str, name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=bool(outcome.passed),
        description=outcome.description,
        metadata=outcome.metadata,
        severity=dg.AssetCheckSeverity.WARN if outcome.warn_only else dg.AssetCheckSeverity.ERROR,
    )


def latest_metadata(context, asset: str) -> dict:
    """The latest materialization's metadata of `asset` (plain values), or a Failure naming what is missing."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None:
        raise dg.Failure(description=f"{asset} has no materialization yet")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}
