"""Training launched from an asset, shared by trained_model and pretrained_model: in the step's own process, or
with `device.processes > 1` data-parallel in torchrun ranks through Dagster Pipes (rank 0 reports). Either way the
trainer's records reach the UI the same way (a log line about every 10 % of an epoch, one observation per epoch
with that epoch's dashboard figure, the curves, `progress`, `eta` and `eta_s`) and the materialization gets the
same metadata keys (report.run_metadata.final_metadata)."""

import json
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.data.prepared import Prepared
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.resources import TrainingDevice
from crrecon_pipeline.report.run_metadata import (
    SAMPLE_FIGURES,
    LiveCurves,
    cancellation,
    final_metadata,
    observation_metadata,
    progress_line,
)
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.distributed import torchrun_command
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.records import EpochRecord, FinalRecord, ProgressRecord, Record, RunMetrics, parse_record
from crrecon_pipeline.train.trainlog import epoch_summary

GPU_TAGS = {
    # dagster-k8s: the step pod asks the cluster for one GPU with CPU and memory beside it (data loading and the
    # checkpoint copies run on the CPU), tolerates GPU nodes' taint, and gets a RAM-backed /dev/shm (the container
    # default is 64 MiB: too small for DataLoader workers and NCCL's buffers). docs/scaling.md.
    "dagster-k8s/config": {
        "container_config": {
            "resources": {"requests": {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"},
                          "limits": {"nvidia.com/gpu": "1", "memory": "32Gi"}},
            "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
        },
        "pod_spec_config": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": "8Gi"}}],
        },
    },
}


def train_model(context: dg.AssetExecutionContext, cfg: RunConfig, prepared: Prepared, store: Path, run_dir: Path,
                device: TrainingDevice) -> tuple[dict, RunMetrics]:
    """(materialization metadata, the final metrics) of a training run on `prepared` (exact
    versions of the prepared store at `store`) into `run_dir`; a run_dir holding last.pt is resumed (a retry or a
    re-execution of a failed run keeps the root run's folder)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with cancellation_is_not_a_failure(context, run_dir):
        return _train_model(context, cfg, prepared, store, run_dir, device)


@contextmanager
def cancellation_is_not_a_failure(context: dg.AssetExecutionContext, run_dir: Path):
    """Terminate in the UI interrupts the step (the trainer stops at a batch boundary with a resumable last.pt): say
    where the run stopped (an observation that replaces the stale progress, with the launchpad config that resumes it
    in a new run), and end the step without the retry policy's retry and without a traceback (the run reads
    canceled); re-executing the run resumes from its last checkpoint (the run folder is the root run's)."""
    try:
        yield
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        stopped = cancellation(run_dir)
        context.log.warning(stopped["cancelled"])
        resume = stopped.pop("resume_config")  # the launchpad config that continues it in a new run
        metadata = {k: v for k, v in stopped.items() if v is not None}
        if "last_checkpoint" in metadata:
            metadata["last_checkpoint"] = dg.MetadataValue.path(metadata["last_checkpoint"])
        if resume:
            launchpad = {"ops": {context.asset_key.path[-1]: {"config": resume}}}
            metadata["resume_launchpad_yaml"] = dg.MetadataValue.md(f"```yaml\n{yaml.safe_dump(launchpad)}```")
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=metadata))
        # a Failure without retries, not the interrupt: Dagster 1.13 turns an interrupt in a step with a retry policy
        # into a retry request; the run still reads CANCELED (the executor was stopping, no step raised)
        raise dg.Failure(description=stopped["cancelled"], allow_retries=False) from None


def _train_model(context: dg.AssetExecutionContext, cfg: RunConfig, prepared: Prepared, store: Path, run_dir: Path,
                 device: TrainingDevice) -> tuple[dict, RunMetrics]:
    if device.processes > 1:
        data_args = rank_data_args(store, run_dir, prepared.training_set())
        metrics = train_under_pipes(context, cfg, run_dir, data_args, device)
        return dagster_metadata(final_metadata(metrics, cfg)), metrics
    resume = "auto"  # the root run's folder: its last.pt when a retry finds one, else a fresh start there
    if (run_dir / "last.pt").exists():
        context.log.info(f"resuming from {run_dir / 'last.pt'}")
    live = LiveCurves.for_run(run_dir)
    with bad_input_fails_step():
        metrics = train(cfg, prepared, run_dir, device=device.device, resume=resume,
                        on_record=lambda record: report_record(context, record, live), log=context.log.info)
    return dagster_metadata(final_metadata(metrics, cfg)), metrics


def dagster_metadata(metadata: dict) -> dict:
    kinds = {"md": dg.MetadataValue.md, "path": dg.MetadataValue.path}
    return {key: kinds[kind](value) if kind in kinds else value for key, (kind, value) in metadata.items()}


def report_record(context: dg.AssetExecutionContext, record: Record, live: LiveCurves | None = None) -> None:
    """A trainer record in the UI: progress as a log line, each epoch as a log line and an observation (with the
    loss-curve figure so far when `live` says one is due)."""
    if isinstance(record, ProgressRecord):
        context.log.info(progress_line(record))
    elif isinstance(record, EpochRecord):
        context.log.info(epoch_summary(record))
        metadata = observation_metadata(record)
        for key in SAMPLE_FIGURES:  # the dashboard (every epoch) and the sample views (on the epochs drawn)
            if key in metadata:
                metadata[key] = dg.MetadataValue.md(metadata[key])
        figure = live.update(record) if live is not None else None
        if figure:
            metadata["loss_curves"] = dg.MetadataValue.md(figure)
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=metadata))


def rank_data_args(store: Path, run_dir: Path, training_set: dict) -> list[str]:
    """How the torchrun ranks find the training data: the store and the exact versions chosen for this run."""
    set_path = write_text_atomic(run_dir / "training_set.json", json.dumps(training_set, indent=2) + "\n")
    return ["--prepared", str(store), "--training-set", str(set_path)]


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
                      device: TrainingDevice) -> RunMetrics:
    """Data-parallel training in `device.processes` torchrun ranks; rank 0 streams its records through Dagster
    Pipes, and the final record's metrics come back: the metadata is built here, as for a single process (figures
    are read from the shared run folder, not sent as one huge Pipes message)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_text_atomic(run_dir / "run_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    errors: list[str] = []
    finals: list[FinalRecord] = []
    live = LiveCurves.for_run(run_dir)

    def on_message(payload: dict) -> None:
        """A rank-0 message: its one-line error, or a trainer record in its plain form (parsed back here)."""
        if payload.get("kind") == "error":
            errors.append(payload["message"])
            return
        record = parse_record(payload, "a torchrun rank's record")
        if isinstance(record, FinalRecord):
            finals.append(record)
        else:
            report_record(context, record, live)

    worker_args = ["--config", str(config_path), *data_args, "--out", str(run_dir), "--device", device.device]
    command = torchrun_command(device.processes, "crrecon_pipeline.defs.pipes_worker", worker_args)
    context.log.info(" ".join(command))
    try:
        client = dg.PipesSubprocessClient(message_reader=RecordRelay(on_message))
        client.run(context=context, command=command)
    except Exception:  # DagsterPipesExecutionError (not exported): the ranks exited with an error
        if errors:  # bad input reported by rank 0: its one line, not the launcher's traceback; retrying won't help
            raise dg.Failure(description=errors[-1], allow_retries=False) from None
        raise
    if not finals:
        raise dg.Failure(description=f"the torchrun ranks ended without a final record ({run_dir})")
    return finals[-1].metrics()
