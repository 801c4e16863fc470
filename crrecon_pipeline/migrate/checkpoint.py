"""The research trainer's checkpoints (`{"model", "optimizer", "epoch", "val_loss", "best_val_loss", "train_losses",
"val_losses"[, "loss_fn"]}`, or a bare state dict as their pretrained_from takes) read safely and turned into a
checkpoint of this project.

Their files are untrusted: loaded with weights_only (their layout is tensors, numbers and lists, so it loads); a
Git LFS pointer is named as one. The result carries this project's layout (`format`, `config`, `epoch`, `best_val`,
`history`, `model`, `loss_state`) with the weights exactly theirs, checked against the imported config by a strict
load, and their epoch and loss history under `provenance` (which marks it imported). It holds no optimizer or
schedule: it starts runs (`--init-weights`, `training.init_from`) and predicts, and a resume from it is refused with
that said."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from crrecon_pipeline.errors import DataError
from crrecon_pipeline.losses import get_loss
from crrecon_pipeline.models import count_parameters
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.setup import build_model

HISTORY_KEYS = ("epoch", "val_loss", "best_val_loss", "train_losses", "val_losses")


def read_research(path: Path) -> dict:
    """{"model": state dict, and whichever of their other keys the file has}; DataError naming the file when it is
    no research checkpoint."""
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is bad input
        raise DataError(checkpoints.unloadable(path, exc)) from None
    if isinstance(state, dict) and "config" in state and "format" in state:
        raise DataError(f"{path}: already a crrecon checkpoint; use it as it is")
    weights = state.get("model") if isinstance(state, dict) and "model" in state else state
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise DataError(f"{path}: not a research checkpoint (no `model` state dict of named tensors)")
    extra = {k: state[k] for k in (*HISTORY_KEYS, "loss_fn") if weights is not state and k in state}
    return {"model": weights, **extra}


def check_fit(weights: dict, config: RunConfig, path: Path) -> torch.nn.Module:
    """The model of `config` with `weights` loaded strictly: every tensor name and shape must be theirs."""
    model = build_model(config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        text = " ".join(str(exc).split()).removeprefix("Error(s) in loading state_dict for ")
        raise DataError(f"{path}: its weights do not fit model {config.model.name} with the config's model.params "
                        f"({text[:200]})") from None
    return model


def loss_state(theirs: dict, config: RunConfig, path: Path, warnings: list[str]) -> dict | None:
    """Their loss's state (adaptive_spectral's running balances) when it loads into the configured loss; their
    trainer skips a state that does not load, and so does the import (with a warning)."""
    state = theirs.get("loss_fn")
    if not state:
        return None
    loss = get_loss(config.loss.name, **config.loss.params)
    try:
        loss.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        warnings.append(f"{path}: its loss_fn state does not fit loss {config.loss.name} and is left out "
                        f"({' '.join(str(exc).split())[:120]})")
        return None
    return {k: v.detach().clone() for k, v in loss.state_dict().items()}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_project(theirs: dict, config: RunConfig, research_config: dict, path: Path, warnings: list[str]) -> dict:
    """This project's checkpoint of `theirs` (checked to fit `config`): their epoch is the 0-based index of the last
    finished epoch, so `epoch` here (epochs completed) is one more."""
    model = check_fit(theirs["model"], config, path)
    epoch = theirs.get("epoch")
    best = theirs.get("best_val_loss")
    state = {"format": checkpoints.CHECKPOINT_FORMAT, "config": config.to_dict(),
             "epoch": int(epoch) + 1 if isinstance(epoch, int) else 0,
             "best_val": float(best) if isinstance(best, (int, float)) else float("inf"), "history": [],
             "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
             "n_params": count_parameters(model),
             "provenance": {"source": "research trainer checkpoint (hyoseokp/data_CR code/CR_recon)",
                            "file": str(path.resolve()), "sha256": sha256(path),
                            **{k: theirs[k] for k in HISTORY_KEYS if k in theirs},
                            "optimizer": "left out: AdamW state of their parameter order, betas and groups",
                            "research_config": research_config}}
    loss = loss_state(theirs, config, path, warnings)
    if loss is not None:
        state["loss_state"] = loss
    return state
