"""The trainer's entry for the CLI and for every torchrun rank: raw shards are prepared first when given, then
the run trains on the latest version of each prepared shard, or on exactly the versions the lineage chose."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from crrecon_pipeline.data.home import default_prepared_dir
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.records import RecordCallback, RunMetrics


def train_from_config(config: RunConfig, out_dir: str | Path, raw_dir: str | Path | None = None,
                      prepared_dir: str | Path | None = None, resume: str | None = None, device: str = "auto",
                      on_record: RecordCallback | None = None, log: Callable[[str], None] | None = None,
                      versions: dict | None = None) -> RunMetrics:
    """The CLI's entry (and each torchrun rank's): prepare the data if given raw shards, then train on the LATEST
    version of each prepared shard, or on exactly `versions` ({shard: version}, the lineage's choice)."""
    import sys

    out_dir = Path(out_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if raw_dir is not None:  # seconds even at full scale, and deterministic: a resumed run gets the same data
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("under torchrun, run `crrecon preprocess` first and pass --prepared (ranks would race)")
        prepared_dir = out_dir / "prepared"
        log(f"preprocessing {raw_dir} -> {prepared_dir}")
        preprocess(raw_dir, prepared_dir, PrepareSettings(n_bins=config.data.out_len))
    if prepared_dir is None:
        prepared_dir = default_prepared_dir()
    prepared = load_prepared(prepared_dir, versions)
    return train(config, prepared, out_dir, device=device, resume=resume, on_record=on_record, log=log)
