"""trained_model: the GPU-tagged training step. Hyper-parameters come from run config, whose schema is the core
config.RunConfig mirrored as dg.Config classes (defaults: the packaged quick preset), so a preset pastes into the
launchpad. The trainer's records stream to the UI: a log line about every 10 % of an epoch, one observation per
epoch (curves, `progress`, `eta_s`). With `device.processes > 1` the ranks run under torchrun through Dagster Pipes
and report the same records and the same final metadata."""

import copy
import json
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml
from pydantic import BaseModel, Field, create_model

from crrecon_pipeline.data.checks import check_beats_baseline
from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.defs.assets.common import bad_input_fails_step, check_result
from crrecon_pipeline.defs.lineage import resolve_init_from, training_versions
from crrecon_pipeline.defs.resources import CrreconPaths, ModelChecks, TrainingDevice
from crrecon_pipeline.report.run_metadata import LiveCurves, final_metadata, observation_metadata, progress_line
from crrecon_pipeline.train.config import RunConfig, load_config, validate
from crrecon_pipeline.train.distributed import torchrun_command
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.trainlog import log_line

LAUNCHPAD_PRESET = "quick"

GPU_TAGS = {
    # dagster-k8s: the step pod asks the cluster for one GPU (see deploy/ and the README).
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
}


def launchpad_class(core: type[BaseModel], defaults: BaseModel, name: str) -> type[dg.Config]:
    """A dg.Config with the fields, types and descriptions of the core section `core` and the values of `defaults`
    as its defaults (plain defaults, not factories: Dagster shows those in the launchpad, model.params included).
    Ranges and the constructor check stay in the core model: trained_model validates with it."""
    fields = {}
    for key, info in core.model_fields.items():
        value = getattr(defaults, key)
        if isinstance(value, BaseModel):
            section = launchpad_class(type(value), value, f"{key.capitalize()}Section")
            fields[key] = (section, Field(default=section(), description=info.description))
        else:
            fields[key] = (info.annotation, Field(default=copy.deepcopy(value), description=info.description))
    return create_model(name, __base__=dg.Config, __doc__=core.__doc__, **fields)


TrainedModelConfig = launchpad_class(RunConfig, load_config(LAUNCHPAD_PRESET), "TrainedModelConfig")
TrainedModelConfig.__doc__ = f"configs/*.yaml in the launchpad; the defaults are the {LAUNCHPAD_PRESET} preset (CPU, minutes)."


def run_config_for_preset(name: str) -> dg.RunConfig:
    """A RunConfig for train_job from a packaged preset (used by the schedule and the demo)."""
    return dg.RunConfig({"trained_model": TrainedModelConfig(**load_config(name).to_dict())})


def dagster_metadata(metadata: dict) -> dict:
    kinds = {"md": dg.MetadataValue.md, "path": dg.MetadataValue.path}
    return {key: kinds[kind](value) if kind in kinds else value for key, (kind, value) in metadata.items()}


def report_record(context: dg.AssetExecutionContext, record: dict, live: LiveCurves | None = None) -> None:
    """A trainer record in the UI: progress as a log line, each epoch as a log line and an observation (with the
    loss-curve figure so far when `live` says one is due)."""
    if record["kind"] == "progress":
        context.log.info(progress_line(record))
    elif record["kind"] == "epoch":
        context.log.info(log_line(record["epoch"], record["epochs"], record["train_loss"], record["val_loss"],
                                  record["best_val"], record["lr"])
                         + f" ({record['samples_per_s']:,.0f} samples/s; {record['progress']})")
        metadata = observation_metadata(record)
        figure = live.update(record) if live is not None else None
        if figure:
            metadata["loss_curves"] = dg.MetadataValue.md(figure)
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=metadata))


def rank_data_args(paths: CrreconPaths, run_dir: Path, training_set: dict) -> list[str]:
    """How the torchrun ranks find the training data: the store and the exact versions the lineage chose."""
    set_path = write_text_atomic(run_dir / "training_set.json", json.dumps(training_set, indent=2) + "\n")
    return ["--prepared", str(paths.prepared_path()), "--training-set", str(set_path)]


def training_data(context: dg.AssetExecutionContext, paths: CrreconPaths, augment_180: bool):
    """The shard versions the lineage says passed their checks, loaded exactly; the others named with a reason."""
    chosen, excluded = training_versions(context.instance, augment_180)
    for partition, reason in excluded.items():
        context.log.warning(f"shard {partition} left out of training: {reason}")
    if not chosen:
        detail = "; ".join(f"{k}: {r}" for k, r in excluded.items()) or "no shard partitions registered"
        raise dg.Failure(description=f"nothing to train on: no shard passed its checks ({detail})", allow_retries=False)
    with bad_input_fails_step():
        prepared = load_prepared(paths.prepared_path(), chosen)
    for shard, version in prepared.versions.items():  # the manifest's own record of the checks must agree
        if not version.checks_passed:
            raise dg.Failure(description=f"{version.path}: the manifest records failed checks; re-prepare shard {shard}",
                             allow_retries=False)
    return prepared, excluded


BASELINE_CHECK = dg.AssetCheckSpec(
    "check_beats_baseline", asset="trained_model",
    description="this run's val MSE against the mean-spectrum baseline: pass at ratio <= ModelChecks.max_mse_ratio "
                "(0.5), warn below 1, fail at 1 or above")


@dg.asset(
    deps=["rotated_bayer"],
    check_specs=[BASELINE_CHECK],
    group_name="training",
    kinds={"pytorch", "gpu"},
    pool="gpu",
    op_tags=GPU_TAGS,
    retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
    description="Train the surrogate on the shard versions whose checks passed (rotated_bayer, or filtered_bayer "
                "without augment_180); checkpoints, log and plots in CRRECON_HOME/runs/<run>.",
)
def trained_model(context: dg.AssetExecutionContext, config: TrainedModelConfig, paths: CrreconPaths,
                  device: TrainingDevice, model_checks: ModelChecks):
    with bad_input_fails_step():
        cfg = resolve_init_from(context.instance, validate(config.model_dump(), "run config"))
    prepared, excluded = training_data(context, paths, cfg.data.augment_180)
    lineage = {"training_set": dg.MetadataValue.json(prepared.training_set()),
               "excluded_shards": dg.MetadataValue.json(excluded)}
    # A retry or a re-execution of a failed run keeps the root run's folder and resumes from its last checkpoint.
    run_dir = paths.runs_path() / (context.run.root_run_id or context.run.run_id)
    if device.processes > 1:
        run_dir.mkdir(parents=True, exist_ok=True)
        result = train_under_pipes(context, cfg, run_dir, rank_data_args(paths, run_dir, prepared.training_set()), device)
        metadata = {key: getattr(value, "value", value) for key, value in (result.metadata or {}).items()}
        yield dg.MaterializeResult(metadata={**result.metadata, **lineage})
    else:
        resume = "auto" if (run_dir / "last.pt").exists() else None
        if resume:
            context.log.info(f"resuming from {run_dir / 'last.pt'}")
        live = LiveCurves.for_run(run_dir)
        with bad_input_fails_step():
            metrics = train(cfg, prepared, run_dir, device=device.device, resume=resume,
                            on_record=lambda record: report_record(context, record, live), log=context.log.info)
        metadata = metrics
        yield dg.MaterializeResult(metadata={**dagster_metadata(final_metadata(metrics, cfg)), **lineage})
    yield check_result("trained_model", "check_beats_baseline", check_beats_baseline(metadata, model_checks.max_mse_ratio))


class RecordRelay(dg.PipesTempFileMessageReader):
    """Pipes custom messages carry the trainer's records: hand each to `on_record` as it arrives (live), instead
    of collecting them until the process ends."""

    def __init__(self, on_record):
        super().__init__()
        self.on_record = on_record

    @contextmanager
    def read_messages(self, handler):
        with super().read_messages(_Relay(handler, self.on_record)) as params:
            yield params


class _Relay:
    def __init__(self, handler, on_record):
        self._handler, self._on_record = handler, on_record

    def handle_message(self, message) -> None:
        if message["method"] == "report_custom_message":
            self._on_record(message["params"]["payload"])
        else:
            self._handler.handle_message(message)

    def __getattr__(self, name):
        return getattr(self._handler, name)


def train_under_pipes(context: dg.AssetExecutionContext, cfg: RunConfig, run_dir: Path, data_args: list[str],
                      device: TrainingDevice) -> dg.MaterializeResult:
    """Data-parallel training in `device.processes` torchrun ranks; rank 0 reports through Dagster Pipes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_text_atomic(run_dir / "run_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    errors: list[str] = []
    live = LiveCurves.for_run(run_dir)

    def on_record(record: dict) -> None:
        if record.get("kind") == "error":
            errors.append(record["message"])
        else:
            report_record(context, record, live)

    command = torchrun_command(device.processes, "crrecon_pipeline.defs.pipes_worker",
                               ["--config", str(config_path), *data_args, "--out", str(run_dir), "--device", device.device])
    context.log.info(" ".join(command))
    try:
        invocation = dg.PipesSubprocessClient(message_reader=RecordRelay(on_record)).run(context=context, command=command)
    except Exception:  # DagsterPipesExecutionError (not exported): the ranks exited with an error
        if errors:  # bad input reported by rank 0: its one line, not the launcher's traceback; retrying won't help
            raise dg.Failure(description=errors[-1], allow_retries=False) from None
        raise
    return invocation.get_materialize_result()
