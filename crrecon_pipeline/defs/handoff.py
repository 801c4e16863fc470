"""What one asset hands the next through the Dagster instance (a shard's prepared version, a trained checkpoint),
read back as typed records from the latest materialization's metadata; and the launchpad's checkpoint selectors
(an asset, a run id) resolved to the paths the core takes. Other facts are read from the instance elsewhere: the
check evaluations and the versions that may train (defs/lineage.py), the design loop's rounds
(defs/assets/design_loop.py), the registered and prepared partitions (defs/sensors.py).

The metadata keys are a contract (stored materializations, the UI and tools read them): filtered_bayer and
rotated_bayer write `version` (version_metadata below); trained_model and pretrained_model write `checkpoint` and
`run_dir` (report.run_metadata.final_metadata), trained_model also `training_set` ({shard: {version, rows}})."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from crrecon_pipeline.data.store import ShardVersion
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.train.config import RunConfig


@dataclass(frozen=True)
class PreparedVersionRecord:
    """A shard's latest materialization of filtered_bayer or rotated_bayer: which immutable version it holds."""

    asset: str
    partition: str
    version: str | None  # None: that materialization records no prepared version
    run_id: str


@dataclass(frozen=True)
class TrainedModelRecord:
    """The latest materialization of trained_model or pretrained_model."""

    asset: str
    checkpoint: Path
    run_dir: Path | None  # None where the materialization does not say (e.g. one reported from outside a run)
    training_set: dict  # {shard: {version, rows}} it trained on; {} when not recorded
    run_id: str

    def versions(self) -> dict[int, str] | None:
        """{shard: version} the model trained on, or None (not recorded: each shard's LATEST)."""
        return {int(k): v["version"] for k, v in self.training_set.items()} or None


def latest_materialization(instance: dg.DagsterInstance, asset: str, partition: str | None = None):
    """The latest materialization record of `asset` (of its `partition`), or None."""
    key = dg.AssetKey(asset)
    if partition is not None:
        key = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
    records = instance.fetch_materializations(key, limit=1).records
    return records[0] if records else None


def _values(record) -> dict:
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def latest_prepared_version(instance: dg.DagsterInstance, asset: str, partition: str) -> PreparedVersionRecord | None:
    """None when the shard has no materialization of `asset`."""
    record = latest_materialization(instance, asset, partition)
    if record is None:
        return None
    return PreparedVersionRecord(asset, partition, _values(record).get("version"), record.run_id)


def latest_model(instance: dg.DagsterInstance, asset: str) -> TrainedModelRecord | None:
    """None when `asset` has no materialization that names a checkpoint."""
    record = latest_materialization(instance, asset)
    values = _values(record) if record is not None else {}
    if values.get("checkpoint") is None:
        return None
    run_dir = values.get("run_dir")
    return TrainedModelRecord(asset, Path(values["checkpoint"]), Path(run_dir) if run_dir else None,
                              dict(values.get("training_set") or {}), record.run_id)


def latest_trained_model(instance: dg.DagsterInstance) -> TrainedModelRecord | None:
    return latest_model(instance, "trained_model")


def latest_pretrained_model(instance: dg.DagsterInstance) -> TrainedModelRecord | None:
    return latest_model(instance, "pretrained_model")


def required_trained_model(instance: dg.DagsterInstance) -> TrainedModelRecord:
    """The latest trained model, or a step failure saying there is none (the assets that start from it)."""
    model = latest_trained_model(instance)
    if model is None:
        raise dg.Failure(description="trained_model has no materialization yet", allow_retries=False)
    return model


def init_checkpoint(instance: dg.DagsterInstance, given: str) -> str:
    """training.init_from in the launchpad: "pretrained_model" names that asset's latest checkpoint; a path or ""
    stays as it is."""
    if given != "pretrained_model":
        return given
    pretrained = latest_pretrained_model(instance)
    if pretrained is None:
        raise ConfigError("training.init_from: pretrained_model has no materialization with a checkpoint yet "
                          "(materialize pretrained_model first, or give a checkpoint path, or \"\" for none)")
    return str(pretrained.checkpoint)


def resume_checkpoint(instance: dg.DagsterInstance, given: str, runs: Path) -> str:
    """training.resume_from in the launchpad: a run id or "latest" (trained_model's latest materialization) names
    that run's last.pt, so this run continues it; a path or "" stays as it is."""
    if not given or given.endswith(".pt"):
        return given
    if given == "latest":
        model = latest_trained_model(instance)
        if model is None or model.run_dir is None:
            raise ConfigError("training.resume_from: 'latest' but trained_model has no materialization naming its "
                              "run folder yet")
        run_dir = model.run_dir
    else:
        run_dir = runs / given
    checkpoint = run_dir / "last.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"training.resume_from: {given!r}: no checkpoint {checkpoint} (a run id of trained_model, "
                          f"or 'latest')")
    return str(checkpoint)


# the launchpad's words for the two checkpoint keys (the core's RunConfig takes paths only)
CHECKPOINT_SELECTORS = {
    "training.init_from:description": "checkpoint whose weights start this run (fresh optimizer, epoch 1): a path, "
                                      "or 'pretrained_model' (that asset's latest checkpoint); empty: random "
                                      "initialization",
    "training.resume_from:description": "continue an earlier run (with changed loss.params, freeze or "
                                        "early_stopping): its last.pt, a trained_model run id, or 'latest'; empty: a "
                                        "new run",
}


def run_config(instance: dg.DagsterInstance, launchpad: dict, runs: Path) -> RunConfig:
    """The launchpad's plain values with the checkpoint selectors resolved to paths, validated once: the
    RunConfig that travels from here on."""
    training = dict(launchpad.get("training") or {})
    training["init_from"] = init_checkpoint(instance, training.get("init_from", ""))
    training["resume_from"] = resume_checkpoint(instance, training.get("resume_from", ""), runs)
    return RunConfig.from_dict({**launchpad, "training": training}, "run config")


def version_metadata(version: ShardVersion) -> dict:
    """What filtered_bayer and rotated_bayer write: the immutable version they hold, its folder and its manifest."""
    return {"version": version.version, "version_path": dg.MetadataValue.path(str(version.path)),
            "manifest": dg.MetadataValue.path(str(version.path / "manifest.json"))}
