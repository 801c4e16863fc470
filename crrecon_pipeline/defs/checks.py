"""Every asset check of the code location, built from the plain registries where each check is defined once
(data.checks.DATA_CHECKS for the shards, train.metrics.MODEL_CHECKS, design.verify.DESIGN_CHECKS): the
AssetCheckSpecs (the data checks partitioned by shard, like the assets they judge) and the conversion of an
outcome's record into an AssetCheckResult."""

import dagster as dg

from crrecon_pipeline.data.checks import DATA_CHECKS, CheckDef, CheckOutcome, recorded_checks
from crrecon_pipeline.data.store import ShardVersion
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.design.verify import DESIGN_CHECKS
from crrecon_pipeline.numbers import rounded_all
from crrecon_pipeline.train.metrics import MODEL_CHECKS


def check_spec(check: CheckDef, partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(check.name, asset=check.asset, description=check.description, blocking=check.blocking,
                             partitions_def=partitions_def)


def shard_check_specs(*assets: str) -> list[dg.AssetCheckSpec]:
    """The data checks of these assets, one result per shard partition."""
    return [check_spec(check, shards) for asset in assets for check in DATA_CHECKS[asset]]


RAW_CHECKS = shard_check_specs("raw_structures", "raw_spectra")
FILTER_CHECKS = shard_check_specs("filtered_bayer")
ROTATION_CHECKS = shard_check_specs("rotated_bayer")
BASELINE_CHECKS = [check_spec(check) for check in MODEL_CHECKS["trained_model"]]
DESIGN_VERIFIED_CHECKS = [check_spec(check) for check in DESIGN_CHECKS["designed_structures"]]


def check_result_from_record(name: str, record: dict) -> dg.AssetCheckResult:
    """A manifest record ({asset, passed, blocking, description, metadata}) as this step's check result."""
    return dg.AssetCheckResult(
        asset_key=record["asset"],
        check_name=name,
        passed=bool(record["passed"]),
        description=record["description"],
        metadata=rounded_all(record["metadata"]),  # ~4 significant figures for people
        severity=dg.AssetCheckSeverity.ERROR if record["blocking"] else dg.AssetCheckSeverity.WARN,
    )


def check_result(check: CheckDef, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return check_result_from_record(check.name, check.record(outcome))


def judged(registry: dict[str, tuple[CheckDef, ...]], asset: str, subject, limits):
    """Every check of `asset` in `registry` judged on `subject`, as check results (the model and design checks)."""
    for check in registry[asset]:
        yield check_result(check, check.judge(subject, limits))


def check_results_from(version: ShardVersion, specs: list[dg.AssetCheckSpec]):
    """The outcomes recorded in a version's manifest, as the results of this step's checks."""
    checks = recorded_checks(version.manifest)
    for spec in specs:
        yield check_result_from_record(spec.name, checks[spec.name])
