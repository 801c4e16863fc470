"""A research run config (their YAML: seed, data, model, loss, training, constraints, dashboard, output) mapped to
this project's run config, key by key, with the research trainer's unstated defaults written out:

- seed 42 when absent; `training.min_lr_ratio` 0.01 when absent (their cosine floor);
- their output projection is always on: `constraints` (defaults [0.45, 0.95], also when the block is absent)
  becomes `model.constraint` (the same three keys, the same projection);
- their schedule steps per epoch with max(1, int(ratio x epochs)) warmup epochs: the per-step schedule here gets the
  warmup that reaches the peak lr at the same epoch;
- their training has no half-period shift images: `data.augment_shifts` false.

Owns the key inventory of the research trainer (hyoseokp/data_CR code/CR_recon at debe903); a key it does not read
is dropped as one that changed nothing there. Plain data in, plain data out: the caller validates the result."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from crrecon_pipeline.data.rawfiles import SPECTRA_RE, STRUCTURE_RE
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.migrate.report import ImportReport
from crrecon_pipeline.models.research.parts import trainer_constraint
from crrecon_pipeline.train.config import assign_dotted, flatten

RESEARCH_SEED = 42  # trainer.py: cfg.get("seed", 42)
RESEARCH_MIN_LR_RATIO = 0.01  # trainer.py: training.min_lr_ratio, default 1 % of the peak lr

SAME_KEYS = ("seed", "data.out_len", "data.map_to_pm1", "data.augment_180", "data.train_ratio", "data.batch_size",
             "model.name", "model.params", "loss.name", "loss.params", "training.epochs", "training.lr",
             "training.weight_decay", "training.grad_clip", "training.use_amp", "training.save_every",
             "training.min_lr_ratio")
SAME_PREFIXES = ("model.params.", "loss.params.")
SAME_NOTES = {
    "data.train_ratio": "split by structure hash here, a 180-degree twin always on its original's side; theirs is a "
                        "random split whose training part is rows 0..n_train of the data, so it overlaps validation",
    "training.use_amp": "fp16 autocast + GradScaler there, bf16 autocast here (CUDA only in both)",
    "training.save_every": "epoch_NNNN.pt in the run folder every this many epochs (theirs: "
                           "<output.dir>/<model>_epoch_NNNN.pt); 0 means never here",
}
RAW_REASON = ("this project finds raw shards by folder, not by file list: shard k is binary_dataset_128_<k>.npy + "
              "spectra_latest_<k>.npy in CRRECON_RAW_DIR (Dagster) or --raw (crrecon train / preprocess)")
DROPPED = {
    "data.struct_files": RAW_REASON,
    "data.spectra_files": RAW_REASON,
    "data.num_workers": "no DataLoader: the data sit on the training device and batches are cut there",
    "dashboard.enabled": "the live view is the Dagster UI (an observation per epoch, loss curves, sample "
                         "spectra) and TensorBoard (output.tensorboard, on)",
    "dashboard.port": "no server to run: the Dagster UI (make dev, port 3000) and tensorboard --logdir runs/",
}
CONSTRAINT_KEYS = ("constraints.sum_min", "constraints.sum_max", "constraints.physical_is_negative")
UNREAD = "not a key the research trainer reads (debe903): it changed nothing there"


@dataclass
class MappedConfig:
    """The mapped run config (plain data, not yet validated), its report and what their pretrained_from named."""

    config: dict
    report: ImportReport
    pretrained_from: Path | None  # the file their training.pretrained_from names, resolved; None when not set


def map_config(raw: Any, source: str, code_dir: Path) -> MappedConfig:
    """Every leaf key of `raw` (their YAML) mapped or dropped; `code_dir` is the folder their train.py runs in
    (relative paths in their config, like training.pretrained_from, are relative to it)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a research config must be a mapping of sections, got {type(raw).__name__}")
    ours: dict = {}
    report = ImportReport()
    pretrained = None
    for key, value in flatten(dict(raw)).items():
        if key == "training.pretrained_from":
            pretrained = _pretrained(value, code_dir, report)
        elif key in ("training.warmup_ratio", "output.dir", "output.log_file") or key.startswith("constraints"):
            continue  # below, each with the keys it depends on
        else:
            _map_key(key, value, ours, report, code_dir)
    _schedule(raw, ours, report)
    _constraint(raw, ours, report)
    _output(raw, ours, report)
    _fill(raw, ours, report)
    _differences(ours, report)
    return MappedConfig(ours, report, pretrained)


def _map_key(key: str, value: Any, ours: dict, report: ImportReport, code_dir: Path) -> None:
    if key in SAME_KEYS or key.startswith(SAME_PREFIXES):
        assign_dotted(ours, key, value, key)
        report.map(key, key, SAME_NOTES.get(key))
    elif key in DROPPED:
        files = key in ("data.struct_files", "data.spectra_files")
        report.dropped[key] = DROPPED[key] + (_raw_folders(value, code_dir) if files else "")
    elif key.startswith("dashboard."):
        report.dropped[key] = DROPPED["dashboard.enabled"]
    else:
        report.dropped[key] = UNREAD


def _raw_folders(files: Any, code_dir: Path) -> str:
    """Which folders their file list names (resolved from their code folder), and whether the names follow the
    shard pattern."""
    if not isinstance(files, list) or not files:
        return ""
    paths = [PurePosixPath(str(f).replace("\\", "/")) for f in files]
    folders = sorted({str(Path(os.path.normpath(code_dir / p.parent))) for p in paths})
    named = all(STRUCTURE_RE.match(p.name) or SPECTRA_RE.match(p.name) for p in paths)
    return (f"; yours: {', '.join(folders)}" + ("" if named else " (link the files under the shard names first)"))


def _pretrained(value: Any, code_dir: Path, report: ImportReport) -> Path | None:
    """training.pretrained_from -> training.init_from (set by the importer once the file is imported)."""
    if not value:
        report.map("training.pretrained_from", "training.init_from", "empty: random initialization, as there")
        return None
    path = Path(str(value)).expanduser()
    path = path if path.is_absolute() else code_dir / path
    report.map("training.pretrained_from", "training.init_from",
               "their trainer loads by shape and skips a missing file with a log line; training.init_from loads "
               "by shape too (1-D conv kernels centre-cropped or padded) but refuses a missing file and takes only "
               "this project's checkpoints: the importer converts the file it names")
    return path


def _schedule(raw: Mapping, ours: dict, report: ImportReport) -> None:
    """Their LambdaLR steps once per epoch: lr x (e + 1)/W for epochs e < W = max(1, int(ratio x epochs)), then a
    cosine from the peak at epoch W to min_lr_ratio. Here the schedule steps per optimizer step from 1e-3 x lr:
    a warmup of (W - 1)/epochs reaches the peak at the start of epoch W - 1, as theirs does."""
    training = raw.get("training") if isinstance(raw.get("training"), Mapping) else {}
    if "warmup_ratio" not in training:
        return
    ratio, epochs = training["warmup_ratio"], training.get("epochs")
    if not _number(ratio) or not (isinstance(epochs, int) and epochs >= 1):
        assign_dotted(ours, "training.warmup_ratio", ratio, "training.warmup_ratio")  # validation names the problem
        report.map("training.warmup_ratio", "training.warmup_ratio")
        return
    warmup_epochs = max(1, int(ratio * epochs))
    converted = (warmup_epochs - 1) / epochs
    assign_dotted(ours, "training.warmup_ratio", converted, "training.warmup_ratio")
    report.map("training.warmup_ratio", "training.warmup_ratio",
               f"{ratio} -> {converted:.6g}: their {warmup_epochs} warmup epoch(s) reach the peak lr at the start of "
               f"epoch {warmup_epochs} (1-based); here the warmup is per step and ends there too")
    ramp = (f"warmup (e+1)/{warmup_epochs} of the lr, the peak held for 2 epochs" if warmup_epochs > 1
            else "no warmup, the first 2 epochs at the peak")
    report.differences.append(
        f"schedule: per epoch there ({ramp}, the cosine ending one epoch short of its floor), per optimizer step "
        "here (linear from 1e-3 x lr, the cosine reaching training.min_lr_ratio on the last step); same peak, same "
        "floor, the peak reached at the same epoch")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1


def _constraint(raw: Mapping, ours: dict, report: ImportReport) -> None:
    """Their projection with their defaults, always on (model.constraint takes the same three keys)."""
    block = raw.get("constraints")
    if "constraints" in raw and not isinstance(block, Mapping):
        report.map("constraints", "model.constraint", f"{block!r}: no bounds given, their defaults apply")
    block = block if isinstance(block, Mapping) else {}
    for key in flatten({"constraints": dict(block)}) if block else ():
        if key not in CONSTRAINT_KEYS:
            report.dropped[key] = UNREAD
    try:
        sum_min, sum_max, negative = trainer_constraint({"constraints": dict(block)})
    except (TypeError, ValueError):
        raise ConfigError(f"constraints: sum_min and sum_max must be numbers (got {dict(block)!r})") from None
    assign_dotted(ours, "model.constraint", {"sum_min": sum_min, "sum_max": sum_max,
                                             "physical_is_negative": negative}, "model.constraint")
    for key in ("sum_min", "sum_max", "physical_is_negative"):
        if key in block:
            report.map(f"constraints.{key}", f"model.constraint.{key}")
    missing = [k for k in ("sum_min", "sum_max") if k not in block]
    if missing:
        report.filled["model.constraint"] = (
            f"{{sum_min: {sum_min}, sum_max: {sum_max}, physical_is_negative: {str(negative).lower()}}}: their "
            f"trainer projects every output, with sum_min 0.45 and sum_max 0.95 where the config gives none "
            f"({', '.join('constraints.' + k for k in missing)} absent)")


def _output(raw: Mapping, ours: dict, report: ImportReport) -> None:
    """Their output.dir holds everything (checkpoints, log, figures); here the run folder (--out) does, and
    output.dir inside it the figures."""
    output = raw.get("output") if isinstance(raw.get("output"), Mapping) else {}
    if "dir" in output:
        value = str(output["dir"]).replace("\\", "/").rstrip("/") or "outputs"
        inside = not (PurePosixPath(value).is_absolute() or value.startswith("~") or ".." in PurePosixPath(value).parts)
        assign_dotted(ours, "output.dir", value if inside else "outputs", "output.dir")
        report.map("output.dir", "output.dir",
                   "figures and sample predictions, inside the run folder (crrecon train --out DIR); checkpoints go "
                   "in the run folder itself" + ("" if inside else f"; {output['dir']!r} leads outside it: 'outputs'"))
    if "log_file" in output:
        assign_dotted(ours, "output.log_file", str(output["log_file"]), "output.log_file")
        report.map("output.log_file", "output.log_file",
                   "beside the checkpoints in the run folder, one [EPOCH] line per epoch in their format (theirs: in "
                   "output.dir, with the whole console log); metrics.jsonl holds every record")
    for key in flatten({"output": dict(output)}) if output else ():
        if key not in ("output.dir", "output.log_file"):
            report.dropped[key] = UNREAD


def _fill(raw: Mapping, ours: dict, report: ImportReport) -> None:
    """The keys their trainer reads with a default no config sets, and what it never does, written out."""
    if "seed" not in raw:
        ours["seed"] = RESEARCH_SEED
        report.filled["seed"] = f"{RESEARCH_SEED}: their trainer's default seed"
    if "min_lr_ratio" not in (ours.get("training") or {}):
        assign_dotted(ours, "training.min_lr_ratio", RESEARCH_MIN_LR_RATIO, "training.min_lr_ratio")
        report.filled["training.min_lr_ratio"] = f"{RESEARCH_MIN_LR_RATIO}: their trainer's cosine floor (default)"
    assign_dotted(ours, "data.augment_shifts", False, "data.augment_shifts")
    report.filled["data.augment_shifts"] = ("false: their training sees each structure and its 180-degree twin "
                                            "only; true adds the exact half-period shifts (4x the images)")
    if "init_from" not in (ours.get("training") or {}):
        assign_dotted(ours, "training.init_from", "", "training.init_from")


def _differences(ours: dict, report: ImportReport) -> None:
    """What the two trainers do differently whatever the config says (and the binning, when it matters)."""
    out_len = (ours.get("data") or {}).get("out_len")
    if out_len == 301:
        report.notes["data.out_len"] = ("301: every raw sample, as there (crrecon preprocess --bins 301, or crrecon "
                                        "train --raw, which bins by data.out_len)")
    elif "data.out_len" in report.mapped:
        report.differences.append(
            f"binning: their preprocessing keeps {out_len} of the 301 samples (linspace(0, 300, {out_len}) as "
            "integers); here each bin averages its band by default: crrecon preprocess --binning subsample takes "
            "their samples")
    report.differences += [
        "optimizer: AdamW with betas (0.9, 0.95) there, torch's defaults (0.9, 0.999) here; eps 1e-8 in both",
        "checkpoints: last.pt, best.pt and epoch_NNNN.pt in the run folder, with the optimizer, schedule and random "
        "state (an exact resume); theirs <model>_last.pt / _best.pt / _epoch_NNNN.pt in output.dir",
    ]
