"""Pretraining data: simulator rows in the user's geometry, for a model that a small set from another physics
model (rigorous FDTD/RCWA rows, or the multislice fidelity) then fine-tunes (training.init_from).

Why a folder per settings digest: simulating thousands of rows costs minutes, and the same settings give the same
rows byte for byte (physics/shards.py), so a second pretraining run with the same simulator settings reuses them.
    <home>/pretrain/<digest>/raw/        raw-format shards + simulation.json (written last: present = complete)
    <home>/pretrain/<digest>/prepared/   its own versioned store (data.prepare.preprocess), never the user's
No Dagster here: the pretrained_model asset and the benchmark call it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from pydantic import Field, model_validator

from crrecon_pipeline.data.home import pretrain_dir
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import Prepared, load_prepared
from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.physics.shards import ProgressFn, SimulationSettings, write_dataset
from crrecon_pipeline.settings import Settings

# The pretraining rows' physics unless the run says otherwise: a coarse multi-slice simulation (32 x 32 grid, 8 slices,
# a 30 nm step: ~300 rows/s on 2 cores), as cheap as thin and a far better start for rigorous data
# (docs/benchmarks.md). Their structures come from their own seed, and no row is unfinished.
PRETRAIN_PHYSICS = {"fidelity": "multislice", "multislice_slices": 8, "multislice_grid": 32, "multislice_step_nm": 30.0}
PRETRAIN_SEED = 1000


class PretrainData(Settings):
    """The pretraining rows: the simulator settings they are made with, how many, in how many shard files."""

    OWNER = "pretraining"

    settings: SimulationSettings = Field(description="the simulator settings of the rows")
    rows: int = Field(4000, ge=10, description="simulated rows (every one finished: no unfinished rows)")
    shards: int = Field(1, ge=1, description="raw shard files the rows are written in")

    @model_validator(mode="after")
    def _split(self) -> PretrainData:
        if self.shards > self.rows:
            raise ConfigError(f"pretraining.shards={self.shards}: need 1 <= shards <= rows ({self.rows})")
        return self

    def digest(self) -> str:
        """The folder name: what decides the rows (settings, row count, shard split), hashed."""
        identity = {"simulation": self.settings.to_dict(), "rows": self.rows, "shards": self.shards}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def folder(self, home: str | Path) -> Path:
        return pretrain_dir(home) / self.digest()


def prepare_pretraining(data: PretrainData, home: str | Path, prepare: PrepareSettings, device: str = "cpu",
                        progress: ProgressFn | None = None, log=print) -> tuple[Prepared, bool]:
    """(the prepared pretraining set, whether the raw rows were reused). Simulates into a temporary folder that is
    renamed into place, so an interrupted run leaves nothing that a later one would take for complete."""
    folder = data.folder(home)
    raw = folder / "raw"
    reused = (raw / "simulation.json").is_file()
    if reused:
        log(f"pretraining rows: reusing {raw}")
    else:
        staging = folder / f".raw.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run of a process with the same id
        log(f"pretraining rows: simulating {data.rows} rows ({data.settings.physics.fidelity}) into {raw}")
        write_dataset(staging, data.rows, data.shards, data.settings, device=device, progress=progress)
        if raw.exists():  # a concurrent run finished first: its rows are the same
            shutil.rmtree(staging)
        else:
            staging.rename(raw)
    summary = preprocess(raw, folder / "prepared", prepare)  # an identical version already there is reused
    return load_prepared(folder / "prepared", {int(k): v for k, v in summary["versions"].items()}), reused
