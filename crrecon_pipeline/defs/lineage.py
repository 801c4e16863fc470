"""What the asset graph says about each shard: which prepared version its latest materialization holds, and
whether the blocking checks along its lineage passed. trained_model trains on exactly this, never on "whatever
files are on disk".

Read through Dagster's public API only: the latest materialization of each asset of the chain for the shard
(DagsterInstance.fetch_materializations) and the check evaluations of that materialization's run
(DagsterInstance.all_logs of type ASSET_CHECK_EVALUATION). The data checks run in the step that materializes the
asset they judge, so those evaluations are the latest ones of the shard. Which checks block comes from the
registry (data.checks.DATA_CHECKS), where each check is defined."""

import dagster as dg

from crrecon_pipeline.data.checks import DATA_CHECKS
from crrecon_pipeline.data.rawfiles import parse_shard_key
from crrecon_pipeline.defs.checks import blocking_checks_by_asset
from crrecon_pipeline.defs.handoff import latest_materialization, latest_prepared_version
from crrecon_pipeline.defs.partitions import shards

# The blocking checks along a shard's lineage, per asset (check_finite_spectra only warns: the rows are dropped).
BLOCKING_CHECKS = blocking_checks_by_asset(DATA_CHECKS)


def shard_of(partition_key: str) -> int:
    return parse_shard_key(partition_key)


def run_check_evaluations(instance: dg.DagsterInstance, run_id: str, partition: str) -> dict:
    """{AssetCheckKey: AssetCheckEvaluation} of one run for one shard (the last one where a check ran twice)."""
    found = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.asset_check_evaluation_data
        if evaluation.partition in (None, partition):
            found[evaluation.asset_check_key] = evaluation
    return found


def _failed_along(instance: dg.DagsterInstance, chain: list[str], partition: str, evaluations) -> str | None:
    """The first blocking check of the chain that failed on its asset's latest materialization, as a reason."""
    for asset in chain:
        mat = latest_materialization(instance, asset, partition)
        if mat is None:
            continue
        for name in BLOCKING_CHECKS[asset]:
            evaluation = evaluations(mat.run_id).get(dg.AssetCheckKey(dg.AssetKey(asset), name))
            if evaluation is not None and not evaluation.passed:
                first_line = (evaluation.description or "no description").splitlines()[0]
                return f"{asset} {name} failed (run {mat.run_id[:8]}): {first_line}"
    return None


def shard_lineage(instance: dg.DagsterInstance, partition: str, augment_180: bool) -> tuple[str | None, str]:
    """(version, "") when the shard may train, or (None, reason) when it may not."""
    try:
        shard_of(partition)
    except ValueError as exc:
        return None, str(exc)
    target = "rotated_bayer" if augment_180 else "filtered_bayer"
    chain = ["raw_structures", "raw_spectra", "filtered_bayer"] + (["rotated_bayer"] if augment_180 else [])
    by_run: dict[str, dict] = {}

    def evaluations(run_id: str) -> dict:
        if run_id not in by_run:
            by_run[run_id] = run_check_evaluations(instance, run_id, partition)
        return by_run[run_id]

    failed = _failed_along(instance, chain, partition, evaluations)
    if failed:
        return None, failed
    prepared = latest_prepared_version(instance, target, partition)
    if prepared is None:
        return None, f"never prepared: {target} has no materialization"
    if prepared.version is None:
        return None, f"{target} (run {prepared.run_id[:8]}) records no prepared version"
    for name in BLOCKING_CHECKS[target]:
        evaluation = evaluations(prepared.run_id).get(dg.AssetCheckKey(dg.AssetKey(target), name))
        if evaluation is None or not evaluation.passed:
            return None, f"{target} {name} did not pass on version {prepared.version} (run {prepared.run_id[:8]})"
    return prepared.version, ""


def training_versions(instance: dg.DagsterInstance, augment_180: bool) -> tuple[dict[int, str], dict[str, str]]:
    """({shard: version} to train on, {partition: reason} left out) over every registered shard partition."""
    chosen, excluded = {}, {}
    for partition in sorted(instance.get_dynamic_partitions(shards.name), key=lambda k: (len(k), k)):
        version, reason = shard_lineage(instance, partition, augment_180)
        if version is None:
            excluded[partition] = reason
        else:
            chosen[shard_of(partition)] = version
    return chosen, excluded
