"""Every asset check of the code location, built from the plain registries where each check is defined once
(data.checks.DATA_CHECKS for the shards, train.metrics.MODEL_CHECKS, design.verify.DESIGN_CHECKS): the
AssetCheckSpecs (the data checks partitioned by shard, like the assets they judge) and the conversion of a
CheckResult into an AssetCheckResult. The core names what a check judges by stage; ASSET_KEYS is the one place
that says which asset each stage is."""

import dagster as dg

from crrecon_pipeline.data.checks import (
    DATA_CHECKS,
    CheckDef,
    CheckResult,
    Registry,
    Stage,
    blocking_checks,
    recorded_checks,
)
from crrecon_pipeline.data.store import ShardVersion
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.design.verify import DESIGN_CHECKS
from crrecon_pipeline.numbers import rounded_all
from crrecon_pipeline.train.metrics import MODEL_CHECKS

ASSET_KEYS: dict[Stage, str] = {
    Stage.RAW_STRUCTURES: "raw_structures",
    Stage.RAW_SPECTRA: "raw_spectra",
    Stage.FILTERED: "filtered_bayer",
    Stage.ROTATED: "rotated_bayer",
    Stage.MODEL: "trained_model",
    Stage.DESIGNS: "designed_structures",
}


def check_spec(check: CheckDef, partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(check.name, asset=ASSET_KEYS[check.stage], description=check.description,
                             blocking=check.blocking, partitions_def=partitions_def)


def shard_check_specs(*stages: Stage) -> list[dg.AssetCheckSpec]:
    """The data checks of these stages, one result per shard partition."""
    return [check_spec(check, shards) for stage in stages for check in DATA_CHECKS[stage]]


RAW_CHECKS = shard_check_specs(Stage.RAW_STRUCTURES, Stage.RAW_SPECTRA)
FILTER_CHECKS = shard_check_specs(Stage.FILTERED)
ROTATION_CHECKS = shard_check_specs(Stage.ROTATED)
BASELINE_CHECKS = [check_spec(check) for check in MODEL_CHECKS[Stage.MODEL]]
DESIGN_VERIFIED_CHECKS = [check_spec(check) for check in DESIGN_CHECKS[Stage.DESIGNS]]


def blocking_checks_by_asset(registry: Registry) -> dict[str, list[str]]:
    """{asset key: names of its blocking checks}."""
    return {ASSET_KEYS[stage]: names for stage, names in blocking_checks(registry).items()}


def check_result(name: str, result: CheckResult) -> dg.AssetCheckResult:
    """A check's result (judged in this step or recorded in a manifest) as this step's check result."""
    return dg.AssetCheckResult(
        asset_key=ASSET_KEYS[result.stage],
        check_name=name,
        passed=result.passed,
        description=result.description,
        metadata=rounded_all(result.metadata),  # ~4 significant figures for people
        severity=dg.AssetCheckSeverity.ERROR if result.blocking else dg.AssetCheckSeverity.WARN,
    )


def judged(registry: Registry, stage: Stage, subject, limits):
    """Every check of `stage` in `registry` judged on `subject`, as check results (the model and design checks)."""
    for check in registry[stage]:
        yield check_result(check.name, check.evaluate(subject, limits))


def check_results_from(version: ShardVersion, specs: list[dg.AssetCheckSpec]):
    """The results recorded in a version's manifest, as the results of this step's checks."""
    checks = recorded_checks(version.manifest)
    for spec in specs:
        yield check_result(spec.name, checks[spec.name])
