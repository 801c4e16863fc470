"""Small glue shared by the asset modules."""


from contextlib import contextmanager

import dagster as dg

from crrecon_pipeline.data.checks import CheckOutcome
from crrecon_pipeline.data.store import ShardVersion
from crrecon_pipeline.errors import ConfigError, DataError, TrainingDiverged
from crrecon_pipeline.numbers import rounded_all


@contextmanager
def bad_input_fails_step():
    """Bad input (bad data, a bad run config, a diverged run) fails the step with its one-line message."""
    try:
        yield
    except (DataError, ConfigError, TrainingDiverged) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None  # the same input fails again


def check_result(asset: str, name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return check_result_from_record(name, outcome.record(asset))


def check_result_from_record(name: str, record: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=record["asset"],
        check_name=name,
        passed=bool(record["passed"]),
        description=record["description"],
        metadata=rounded_all(record["metadata"]),  # ~4 significant figures for people
        severity=dg.AssetCheckSeverity.ERROR if record["blocking"] else dg.AssetCheckSeverity.WARN,
    )


def check_results_from(version: ShardVersion, specs: list[dg.AssetCheckSpec]):
    """The outcomes recorded in a version's manifest, as the results of this step's checks."""
    for spec in specs:
        yield check_result_from_record(spec.name, version.manifest["checks"][spec.name])


def version_metadata(version: ShardVersion) -> dict:
    """Which immutable data a materialization holds: the version, its folder and its manifest."""
    return {"version": version.version, "version_path": dg.MetadataValue.path(str(version.path)),
            "manifest": dg.MetadataValue.path(str(version.path / "manifest.json"))}
def latest_metadata(context, asset: str) -> dict:
    """The latest materialization's metadata of `asset` (plain values), or a Failure naming what is missing."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None:
        raise dg.Failure(description=f"{asset} has no materialization yet")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}
