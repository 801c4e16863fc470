"""trained_model: the GPU-tagged training step. Hyper-parameters come from run config (the YAML presets'
structure, so a preset pastes into the launchpad); progress streams to the UI as one observation per epoch."""


import json
import subprocess
import time
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from pydantic import Field

from ...analysis import parse_train_log
from ...config import load_config, validate
from ...distributed import torchrun_command
from ...npyio import write_text_atomic
from ...plots import markdown_image
from ...training import EpochReport, log_line, train
from ..resources import CrreconPaths, ModelChecks, TrainingDevice
from ...data import load_prepared
from ...quality import check_beats_baseline
from ..lineage import training_versions
from .common import bad_input_fails_step, check_result

QUICK = load_config("quick")

GPU_TAGS = {
    # dagster-k8s: the step pod asks the cluster for one GPU (see deploy/ and the README).
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
}


class DataSection(dg.Config):
    batch_size: int = QUICK["data"]["batch_size"]
    augment_180: bool = QUICK["data"]["augment_180"]
    train_ratio: float = QUICK["data"]["train_ratio"]
    map_to_pm1: bool = QUICK["data"]["map_to_pm1"]
    out_len: int = QUICK["data"]["out_len"]


class ModelSection(dg.Config):
    name: str = QUICK["model"]["name"]
    params: dict[str, Any] = Field(default_factory=lambda: dict(QUICK["model"]["params"]))


class LossSection(dg.Config):
    name: str = QUICK["loss"]["name"]
    params: dict[str, Any] = Field(default_factory=lambda: dict(QUICK["loss"]["params"]))


class TrainingSection(dg.Config):
    epochs: int = QUICK["training"]["epochs"]
    lr: float = QUICK["training"]["lr"]
    weight_decay: float = QUICK["training"]["weight_decay"]
    grad_clip: float = QUICK["training"]["grad_clip"]
    use_amp: bool = QUICK["training"]["use_amp"]
    warmup_ratio: float = QUICK["training"]["warmup_ratio"]
    save_every: int = QUICK["training"]["save_every"]


class OutputSection(dg.Config):
    dir: str = "outputs"
    log_file: str = "train_log.txt"


class TrainedModelConfig(dg.Config):
    """configs/*.yaml in the launchpad: defaults are configs/quick.yaml (CPU, minutes)."""

    seed: int = QUICK["seed"]
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    loss: LossSection = Field(default_factory=LossSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    output: OutputSection = Field(default_factory=OutputSection)

    def as_dict(self) -> dict:
        return self.model_dump()


def run_config_for_preset(name: str) -> dg.RunConfig:
    """A RunConfig for train_job from configs/<name>.yaml (used by the schedule and the demo)."""
    return dg.RunConfig({"trained_model": TrainedModelConfig(**load_config(name))})


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
    try:
        cfg = validate(config.as_dict(), "run config")
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from None
    prepared, excluded = training_data(context, paths, cfg["data"]["augment_180"])
    # A retry or a re-execution of a failed run keeps the root run's folder and resumes from its last checkpoint.
    run_dir = paths.runs_path() / (context.run.root_run_id or context.run.run_id)
    resume = "auto" if (run_dir / "last.pt").exists() else None
    if resume:
        context.log.info(f"resuming from {run_dir / 'last.pt'}")

    def on_epoch(r: EpochReport) -> None:
        context.log.info(log_line(r.epoch, r.epochs, r.train_loss, r.val_loss, r.best_val, r.lr) + f" ({r.samples_per_s:,.0f} samples/s)")
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata={
            "epoch": r.epoch, "train_loss": r.train_loss, "val_loss": r.val_loss, "best_val": r.best_val,
            "lr": r.lr, "samples_per_s": r.samples_per_s}))

    with bad_input_fails_step():
        if device.processes > 1:
            metrics = train_with_torchrun(context, cfg, paths, run_dir, device, prepared.training_set())
        else:
            metrics = train(cfg, prepared, run_dir, device=device.device, resume=resume, on_epoch=on_epoch, log=context.log.info)
    check = check_beats_baseline(metrics, model_checks.max_mse_ratio)
    yield dg.MaterializeResult(metadata={
        "training_set": dg.MetadataValue.json(prepared.training_set()),
        "excluded_shards": dg.MetadataValue.json(excluded),
        "val_mse": metrics["val_mse"],
        "baseline_val_mse": metrics["baseline_val_mse"],
        "mse_vs_baseline": metrics["val_mse"] / metrics["baseline_val_mse"],
        "val_pearson": metrics["val_pearson"],
        "val_mae": metrics["val_mae"],
        "epochs_completed": metrics["epochs_completed"],
        "best_epoch": metrics["best_epoch"],
        "n_params": metrics["n_params"],
        "samples_per_s": metrics["samples_per_s"],
        "device": metrics["device"],
        "train_samples": metrics["train_samples"],
        "val_samples": metrics["val_samples"],
        "model": cfg["model"]["name"],
        "loss": cfg["loss"]["name"],
        "checkpoint": dg.MetadataValue.path(metrics["best_checkpoint"]),
        "run_dir": dg.MetadataValue.path(metrics["run_dir"]),
        "loss_curves": dg.MetadataValue.md(markdown_image(run_dir / "loss_curves.png", "loss curves")),
        "predictions": dg.MetadataValue.md(markdown_image(run_dir / "predictions.png", "true vs predicted spectra")),
    })
    yield check_result("trained_model", "check_beats_baseline", check)


def training_data(context: dg.AssetExecutionContext, paths: CrreconPaths, augment_180: bool):
    """The shard versions the lineage says passed their checks, loaded exactly; the others named with a reason."""
    chosen, excluded = training_versions(context.instance, augment_180)
    for partition, reason in excluded.items():
        context.log.warning(f"shard {partition} left out of training: {reason}")
    if not chosen:
        detail = "; ".join(f"{k}: {r}" for k, r in excluded.items()) or "no shard partitions registered"
        raise dg.Failure(description=f"nothing to train on: no shard passed its checks ({detail})")
    with bad_input_fails_step():
        prepared = load_prepared(paths.prepared_path(), chosen)
    for shard, version in prepared.versions.items():  # the manifest's own record of the checks must agree
        if not version.checks_passed:
            raise dg.Failure(description=f"{version.path}: the manifest records failed checks; re-prepare shard {shard}")
    context.log.info("training set: " + ", ".join(f"shard {k} {v['version']} ({v['rows']} rows)" for k, v in prepared.training_set().items()))
    return prepared, excluded


def train_with_torchrun(context: dg.AssetExecutionContext, cfg: dict, paths: CrreconPaths, run_dir: Path,
                        device: TrainingDevice, training_set: dict) -> dict:
    """Data-parallel training in `device.processes` ranks; the epochs stream to the UI from rank 0's log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "run_config.yaml"
    write_text_atomic(config_path, yaml.safe_dump(cfg, sort_keys=False))
    log_path = run_dir / cfg["output"]["log_file"]
    seen = {r["epoch"] for r in parse_train_log(log_path)} if log_path.exists() else set()
    set_path = write_text_atomic(run_dir / "training_set.json", json.dumps(training_set, indent=2) + "\n")
    command = torchrun_command(config_path, paths.prepared_path(), run_dir, device.processes, device.device, set_path)
    context.log.info(" ".join(command))
    with open(run_dir / "torchrun.log", "a") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        while True:
            done = proc.poll() is not None
            for r in parse_train_log(log_path) if log_path.exists() else []:
                if r["epoch"] not in seen:
                    seen.add(r["epoch"])
                    context.log.info(log_line(r["epoch"], r["total"], r["train_loss"], r["val_loss"], r["best_val"], r["lr"]))
                    context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata={
                        k: r[k] for k in ("epoch", "train_loss", "val_loss", "best_val", "lr")}))
            if done:
                break
            time.sleep(2)
    if proc.returncode != 0:
        tail = (run_dir / "torchrun.log").read_text().strip().splitlines()[-1:] or ["no output"]
        raise dg.Failure(description=f"torchrun exited with {proc.returncode}: {tail[0]} (see {run_dir / 'torchrun.log'})")
    return json.loads((run_dir / "metrics.json").read_text())
