"""What the asset graph says about each shard: which prepared version its latest materialization holds, and
whether the blocking checks along its lineage passed. trained_model trains on exactly this, never on "whatever
files are on disk"."""


import dagster as dg
from dagster._core.event_api import PartitionKeyFilter  # partition filter of the check-execution query
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from crrecon_pipeline.data.rawfiles import parse_shard_key
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.train.config import RunConfig

# The blocking checks along a shard's lineage, per asset (check_finite_spectra only warns: the rows are dropped).
BLOCKING_CHECKS = {
    "raw_structures": ["check_binary_structures"],
    "raw_spectra": ["check_sign_convention"],
    "filtered_bayer": ["check_row_counts", "check_no_bad_rows", "check_greens_equal", "check_kept_fraction"],
    "rotated_bayer": ["check_rotation_exact"],
}


def shard_of(partition_key: str) -> int:
    return parse_shard_key(partition_key)


def latest_materialization(instance: dg.DagsterInstance, asset: str, partition: str):
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1).records
    return records[0] if records else None


def latest_version(instance: dg.DagsterInstance, asset: str, partition: str) -> str | None:
    record = latest_materialization(instance, asset, partition)
    if record is None:
        return None
    version = record.asset_materialization.metadata.get("version")
    return version.value if version is not None else None


def _latest_checks(instance: dg.DagsterInstance, assets: list[str], partition: str) -> dict:
    keys = [dg.AssetCheckKey(dg.AssetKey(a), name) for a in assets for name in BLOCKING_CHECKS[a]]
    return instance.event_log_storage.get_latest_asset_check_execution_by_key(keys, partition_filter=PartitionKeyFilter(key=partition))


def _description(record) -> str:
    data = record.event.dagster_event.asset_check_evaluation_data if record.event and record.event.dagster_event else None
    return (getattr(data, "description", None) or "no description").splitlines()[0]


def shard_lineage(instance: dg.DagsterInstance, partition: str, augment_180: bool) -> tuple[str | None, str]:
    """(version, "") when the shard may train, or (None, reason) when it may not."""
    try:
        shard_of(partition)
    except ValueError as exc:
        return None, str(exc)
    target = "rotated_bayer" if augment_180 else "filtered_bayer"
    chain = ["raw_structures", "raw_spectra", "filtered_bayer"] + (["rotated_bayer"] if augment_180 else [])
    latest = _latest_checks(instance, chain, partition)
    for key, record in latest.items():
        if record.status == AssetCheckExecutionRecordStatus.FAILED:
            return None, f"{key.asset_key.to_user_string()} {key.name} failed (run {record.run_id[:8]}): {_description(record)}"
    mat = latest_materialization(instance, target, partition)
    if mat is None:
        return None, f"never prepared: {target} has no materialization"
    version = mat.asset_materialization.metadata.get("version")
    if version is None:
        return None, f"{target} (run {mat.run_id[:8]}) records no prepared version"
    for name in BLOCKING_CHECKS[target]:
        record = latest.get(dg.AssetCheckKey(dg.AssetKey(target), name))
        if record is None or record.run_id != mat.run_id or record.status != AssetCheckExecutionRecordStatus.SUCCEEDED:
            return None, f"{target} {name} did not pass on version {version.value} (run {mat.run_id[:8]})"
    return version.value, ""


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


def resolve_init_from(instance: dg.DagsterInstance, cfg: RunConfig) -> RunConfig:
    """training.init_from = "pretrained_model": a new config naming the checkpoint of that asset's latest
    materialization (`cfg` itself is left as it is); any other value: `cfg`."""
    if cfg.training.init_from != "pretrained_model":
        return cfg
    event = instance.get_latest_materialization_event(dg.AssetKey("pretrained_model"))
    checkpoint = event.asset_materialization.metadata.get("checkpoint") if event is not None else None
    if checkpoint is None:
        raise ConfigError("training.init_from: pretrained_model has no materialization with a checkpoint yet "
                          "(materialize pretrained_model first, or give a checkpoint path, or \"\" for none)")
    return cfg.replaced("training.init_from", checkpoint.value, "training.init_from (pretrained_model)")
