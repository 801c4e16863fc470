"""Checkpoint I/O and the compatibility rules between a checkpoint and the run that wants to use it.

- resume (`--resume`): the checkpoint's config, validated by today's schema (defaults filled in), must equal the
  requested one, except for keys that do not change
  what is trained (RESUMABLE_CHANGES); a changed `training.epochs` rebuilds the schedule (training.Schedule).
- init (`--init-weights` / `training.init_from`): weights only, from a checkpoint of the same model; tensors whose
  shape differs (e.g. another out_len) are skipped and listed; a 1-D conv kernel of another length is centre-cropped.
Checkpoints from elsewhere are untrusted: tensors and plain containers only (weights_only), every weight finite
(predict, --init-weights, training.init_from and resume all load through `load`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from crrecon_pipeline.data.npyio import atomic_output, lfs_pointer
from crrecon_pipeline.errors import ConfigError, DataError
from crrecon_pipeline.train.config import RunConfig, differing_keys
from crrecon_pipeline.train.records import ResumeChange

# 2: the learning-rate schedule is stored (format 1 checkpoints can seed weights only); 3: the registries carry the
# research code's names, and a loss with state (adaptive_spectral's averages) has it under "loss_state"
CHECKPOINT_FORMAT = 3
# what this project's own models and losses were called before the research code's took those names: a checkpoint
# of an older format is read with its config's names moved on (its weights are this project's design's)
RENAMED_IN_FORMAT_3 = {"model": {"cnn_xattn": "crrecon_xattn", "cnn_gru": "crrecon_gru"},
                       "loss": {"mse_pearson": "crrecon_mse_pearson", "mse_corr_l1": "crrecon_mse_corr_l1",
                                "weighted_smooth": "crrecon_weighted_smooth"}}
RESUMABLE_CHANGES = ("training.epochs", "training.save_every", "training.init_from", "output.dir", "output.log_file",
                     "training.compile", "training.channels_last", "training.accumulate",  # how, not what
                     # fine-tuning: stop a run, change a loss weight / what is frozen / the patience, go on
                     "loss.params", "training.freeze", "training.early_stopping", "training.resume_from",
                     "training.grad_clip")
# listed in the log and model card
RECORDED_CHANGES = ("loss.params", "training.freeze", "training.early_stopping", "training.grad_clip")


def save_atomic(state: dict, path: Path) -> None:
    """torch.save through npyio.atomic_output: a kill or a full disk mid-write never leaves a truncated checkpoint."""
    try:
        with atomic_output(path) as f:
            torch.save(state, f)
    except RuntimeError as exc:  # torch's writer reports a failed write (a full disk) as an enforce failure
        raise OSError(f"{path}: cannot write the checkpoint ({' '.join(str(exc).split())[:160]})") from None


def load(path: str | Path, device: torch.device | str = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is bad input
        raise DataError(lfs_pointer(path) or unloadable(path, exc)) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise DataError(f"{path}: not a crrecon checkpoint (no model/config)")
    check_layout(state, path)
    return upgraded(state)


def upgraded(state: dict) -> dict:
    """A format-2 checkpoint read as format 3: its config's model and loss names are today's names of the same
    designs (RENAMED_IN_FORMAT_3), so it resumes and seeds weights as before. Format 1 keeps its number (it can
    seed weights only) but gets the names too."""
    version = int(state.get("format", 1))
    if version >= 3:
        return state
    config = state["config"]
    for section, renamed in RENAMED_IN_FORMAT_3.items():
        part = config.get(section)
        if isinstance(part, dict) and part.get("name") in renamed:
            config[section] = part | {"name": renamed[part["name"]]}
    if version == 2:
        state["format"] = 3
    return state


def check_layout(state: dict, path: Path) -> None:
    """What every use of a checkpoint reads: weights as named tensors, a config dict naming its model."""
    weights, config = state["model"], state["config"]
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise DataError(f"{path}: not a crrecon checkpoint (its model is not a set of named tensors)")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise DataError(f"{path}: not a crrecon checkpoint (its config names no model)")
    bad = next((k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # refused before any epoch or prediction: NaN weights predict NaN and train nothing
        raise DataError(f"{path}: its weights hold NaN or infinite values (tensor {bad}); not a usable checkpoint")


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def unloadable(path: Path, exc: Exception) -> str:
    """Why a file is no checkpoint, in words that never suggest the unsafe way round (weights_only=False)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError:
        head = b""
    if head == LFS_POINTER:
        return (f"{path}: a Git LFS pointer ({path.stat().st_size} bytes), not the checkpoint itself: fetch the file "
                "with `git lfs pull` in its repository")
    text = " ".join(str(exc).split())
    if "Weights only load failed" in text or "weights_only" in text:
        return (f"{path}: not a plain checkpoint: it holds pickled Python objects, which crrecon will not unpickle "
                "(they could run code); save the weights as tensors and plain containers")
    return f"{path}: not a loadable checkpoint ({text.split('. ')[0][:160]})"


def latest(run_dir: Path) -> Path | None:
    last = run_dir / "last.pt"
    return last if last.is_file() else None


def stored_config(state: dict, path: Path) -> RunConfig:
    """The checkpoint's config validated by today's schema: keys added since it was written take their defaults,
    so a resume compares like with like (an upgrade that adds a key does not block resuming)."""
    return RunConfig.from_dict(state["config"], f"{path}: its config")


def check_resumable(state: dict, stored: RunConfig, requested: RunConfig, path: Path) -> list[str]:
    """The dotted keys in which `requested` differs from the checkpoint's `stored` config (both validated, defaults
    filled on both sides) when a resume may carry them over (RESUMABLE_CHANGES); ConfigError otherwise."""
    if "provenance" in state:  # crrecon import: the weights and history of another trainer, no optimizer state
        raise ConfigError(f"{path}: imported from another trainer, without its optimizer and schedule state; start a "
                          f"new run with --init-weights {path}")
    if int(state.get("format", 1)) < CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: made by an older version (format {state.get('format', 1)}); start a new run "
                          f"with --init-weights {path}")
    changed = differing_keys(stored.to_dict(), requested.to_dict())
    refused = [k for k in changed if not k.startswith(RESUMABLE_CHANGES)]
    if refused:
        raise ConfigError(f"{path}: cannot resume, the config differs in {', '.join(refused)} "
                          f"(start a new run, or --init-weights {path} for its weights only)")
    if requested.training.epochs < int(state["epoch"]):
        raise ConfigError(f"{path}: cannot resume, training.epochs={requested.training.epochs} but the "
                          f"checkpoint has already trained {state['epoch']} epochs")
    return changed


def check_same_training_set(state: dict, requested: dict, path: Path) -> None:
    """A changed training set is a changed config: a resume continues on the data its checkpoint was trained on.
    Checkpoints from before the training set was stored carry no record of it and are not judged."""
    stored = state.get("training_set")
    if stored is None:
        return
    shards = sorted(set(stored) | set(requested), key=lambda k: (len(k), k))
    changed = [f"shard {k} {stored.get(k, {}).get('version', 'none')} -> {requested.get(k, {}).get('version', 'none')}"
               for k in shards if stored.get(k, {}).get("version") != requested.get(k, {}).get("version")]
    if changed:
        raise ConfigError(f"{path}: cannot resume, the training set differs ({'; '.join(changed)}); start a new run, "
                          f"or --init-weights {path} for its weights only")


def resume_changes(stored: RunConfig, requested: RunConfig, changed: list[str], epoch: int,
                   recorded: tuple | list = RECORDED_CHANGES) -> list[ResumeChange]:
    """The changed keys that change what is trained (RECORDED_CHANGES; `crrecon control`: every key it changed),
    for the records; `epoch`: the last one trained with the old values."""
    theirs, ours = stored.flat(), requested.flat()
    return [ResumeChange(key=k, old=theirs.get(k), new=ours.get(k), epoch=epoch)
            for k in changed if k.startswith(tuple(recorded))]


def centre_crop_kernel(weight: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A 1-D conv kernel (out, in, k) of another length k, centre-cropped (or zero-padded around the centre) to
    `shape`, as the research code's pretrained_from does; None for any other shape change."""
    if weight.ndim != 3 or weight.shape[:2] != shape[:2] or (weight.shape[2] - shape[2]) % 2:
        return None
    k, target = weight.shape[2], shape[2]
    if k > target:
        start = (k - target) // 2
        return weight[:, :, start:start + target].clone()
    out = weight.new_zeros(shape)
    start = (target - k) // 2
    out[:, :, start:start + k] = weight
    return out


def load_weights(model: torch.nn.Module, state: dict, requested: RunConfig, path: Path) -> list[str]:
    """Copy the matching tensors of `state` into `model`; the names skipped for a shape mismatch are returned."""
    theirs, ours = state["config"]["model"]["name"], requested.model.name
    if theirs != ours:
        raise ConfigError(f"{path}: a {theirs} checkpoint cannot initialize model {ours}")
    own = model.state_dict()
    weights = state["model"]
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise ConfigError(f"{path}: not weights of this {ours} architecture "
                          f"(unexpected tensors {', '.join(unknown[:3])}"
                          f"{' ...' if len(unknown) > 3 else ''})")
    matching = {k: v for k, v in weights.items() if v.shape == own[k].shape}
    kernels = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, torch.nn.Conv1d)}
    for k, v in weights.items():  # a 1-D conv kernel of another length: centre-cropped, not skipped
        if k not in matching and k in kernels and (cropped := centre_crop_kernel(v, own[k].shape)) is not None:
            matching[k] = cropped
    skipped = sorted(k for k in weights if k not in matching)
    if not matching:
        raise ConfigError(f"{path}: no tensor of the checkpoint fits model {ours} (every shape differs)")
    model.load_state_dict(matching, strict=False)
    return skipped


def check_same_architecture(model: torch.nn.Module, state: dict, requested: RunConfig, path: Path) -> None:
    """A resume needs every tensor to fit; say which does not, in one line (not a size-mismatch traceback)."""
    skipped = load_weights(model, state, requested, path)
    if skipped:
        raise ConfigError(f"{path}: cannot resume, tensor shapes differ ({', '.join(skipped[:3])}"
                          f"{' ...' if len(skipped) > 3 else ''})")
