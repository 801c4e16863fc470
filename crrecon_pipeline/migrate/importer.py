"""`crrecon import`: a research config (and optionally one of their checkpoints) -> OUT/config.yaml, a validated run
config, OUT/<their checkpoint's name>.pt, this project's checkpoint, and OUT/import.json, the report. Everything is
checked before anything is written; each file appears atomically.

The checkpoint keeps the config its weights were trained with (their out_len), so `crrecon predict` and `crrecon
design` use it as it is. `out_len` (--out-len) changes only OUT/config.yaml: a run on data of other bins started from
the checkpoint (--init-weights) skips the per-bin tensors, which are listed. The model contract checks run on the
imported architecture; each failure is a warning in the report, never a refusal (their model is what it is)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import yaml
from pydantic import ValidationError

from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.migrate.checkpoint import read_research, to_project
from crrecon_pipeline.migrate.config import MappedConfig, map_config
from crrecon_pipeline.migrate.report import ImportReport
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.config import RunConfig, describe_error, read_config
from crrecon_pipeline.train.setup import build_model

Log = Callable[[str], None]


def validated(config: dict, source: str) -> RunConfig:
    """The mapped config validated, every field problem in the one line (not one problem per attempt)."""
    try:
        return RunConfig.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(describe_error(e) for e in exc.errors())) from None


def with_out_len(config: RunConfig, out_len: int | None, report: ImportReport) -> RunConfig:
    if out_len is None or out_len == config.data.out_len:
        return config
    changes = {"data.out_len": out_len}
    if "out_len" in config.model.params:
        changes["model.params.out_len"] = out_len
    report.filled["data.out_len"] = (f"{out_len} (--out-len; theirs {config.data.out_len}, kept in the checkpoint): "
                                     "a run started from the checkpoint skips the tensors shaped by the bins")
    return config.with_overrides(changes, "--out-len")


def contract_warnings(config: RunConfig) -> list[str]:
    """The model contract (models/contract.py) on the architecture at its initial weights, seeded."""
    import torch

    from crrecon_pipeline.models.contract import check_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(config)
    return [f"model {config.model.name} breaks the model contract: {failure}" for failure in check_model(model)]


def _pretrained(mapped: MappedConfig, config: RunConfig, out_dir: Path, research: dict) -> tuple[dict | None, Path]:
    """Their training.pretrained_from converted (weights by shape, as their trainer loads them), or nothing when the
    file is missing (their trainer skips it too)."""
    path, report = mapped.pretrained_from, mapped.report
    target = out_dir / f"init_{path.stem}.pt"
    if not path.is_file():
        report.notes["training.pretrained_from"] += (f"; {path} is not there: their trainer starts from random "
                                                     "weights then, and so does this config (training.init_from "
                                                     "empty); import the file and set it when you have it")
        return None, target
    theirs = read_research(path)
    model = build_model(config)
    state = {"config": config.to_dict(), "model": theirs["model"]}
    skipped = checkpoints.load_weights(model, state, config, path)  # the rule training.init_from applies
    if skipped:
        report.warnings.append(f"{path}: {len(skipped)} tensors of another shape will start fresh: "
                               f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    return {"format": checkpoints.CHECKPOINT_FORMAT, "config": config.to_dict(), "epoch": 0, "best_val": float("inf"),
            "history": [],
            "model": theirs["model"], "provenance": {"source": "research training.pretrained_from (weights for "
                                                                "initialization only)", "file": str(path.resolve()),
                                                     "research_config": research}}, target


def import_research(config_path: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None,
                    out_len: int | None = None, log: Log | None = None) -> dict:
    """Map, validate and convert everything first; then write the checkpoint(s), config.yaml and import.json."""
    log = log or (lambda message: None)
    config_path, out_dir = Path(config_path), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: is a file; give a folder")
    raw, source = read_config(config_path)
    mapped = map_config(raw, source, config_path.resolve().parent.parent)  # their train.py runs in CR_recon/
    trained = validated(mapped.config, source)
    report = mapped.report
    run_config = with_out_len(trained, out_len, report)
    init = init_path = None
    if mapped.pretrained_from is not None:
        init, init_path = _pretrained(mapped, trained, out_dir, raw)
        if init is not None:
            run_config = run_config.replaced("training.init_from", str(init_path.resolve()), "--config")
    project = None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        project = to_project(read_research(checkpoint), trained, raw, checkpoint, report.warnings)
    report.warnings += contract_warnings(trained)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = _write(out_dir, run_config, config_path, project, checkpoint, init, init_path)
    result = {**written, **report.as_dict()}
    write_text_atomic(out_dir / "import.json", json.dumps(result, indent=2, allow_nan=False) + "\n")
    for line in report.lines() + [f"warning: {w}" for w in report.warnings]:
        log(line)
    return result


def _write(out_dir: Path, config: RunConfig, source: Path, project: dict | None, checkpoint: Path | None,
           init: dict | None, init_path: Path | None) -> dict:
    """The checkpoints first, the config that may name one of them last."""
    target = None
    if project is not None:
        target = out_dir / f"{checkpoint.stem}.pt"
        checkpoints.save_atomic(project, target)
    if init is not None:
        checkpoints.save_atomic(init, init_path)
    header = (f"# imported by `crrecon import` from {source.resolve()}; what became of each key: import.json\n"
              f"# train it: crrecon train --config {out_dir / 'config.yaml'} --raw RAW_FOLDER --out RUN_FOLDER\n")
    config_file = out_dir / "config.yaml"
    write_text_atomic(config_file, header + yaml.safe_dump(config.to_dict(), sort_keys=False))
    return {"config": str(config_file.resolve()), "checkpoint": str(target.resolve()) if target else None}
