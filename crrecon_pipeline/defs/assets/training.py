"""trained_model: the GPU-tagged training step. Hyper-parameters come from run config (the YAML presets'
structure, so a preset pastes into the launchpad); progress streams to the UI as one observation per epoch."""


from typing import Any

import dagster as dg
from pydantic import Field

from ...config import load_config, validate
from ...npyio import DataError
from ...plots import markdown_image
from ...training import EpochReport, log_line, train
from ..resources import CrreconPaths, TrainingDevice
from .prepared import prepared_or_failure

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


@dg.asset(
    deps=["rotated_bayer"],
    group_name="training",
    kinds={"pytorch", "gpu"},
    pool="gpu",
    op_tags=GPU_TAGS,
    retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
    description="Train the surrogate on every prepared shard; checkpoints, log and plots in CRRECON_HOME/runs/<run>.",
)
def trained_model(context: dg.AssetExecutionContext, config: TrainedModelConfig, paths: CrreconPaths,
                  device: TrainingDevice) -> dg.MaterializeResult:
    try:
        cfg = validate(config.as_dict(), "run config")
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from None
    prepared = prepared_or_failure(paths)
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

    try:
        metrics = train(cfg, prepared, run_dir, device=device.device, resume=resume, on_epoch=on_epoch, log=context.log.info)
    except DataError as exc:
        raise dg.Failure(description=str(exc)) from None
    return dg.MaterializeResult(metadata={
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


@dg.asset_check(asset=trained_model, description="validation MSE is below the mean-spectrum baseline's")
def check_beats_baseline(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("trained_model"))
    meta = event.asset_materialization.metadata
    mse, base = meta["val_mse"].value, meta["baseline_val_mse"].value
    return dg.AssetCheckResult(passed=bool(mse < base), description=f"val MSE {mse:.3g} vs baseline {base:.3g} ({mse / base:.1%})",
                               metadata={"ratio": mse / base})
