"""Seed-format raw shards from the built-in simulator: the default data of a fresh install.

Shard k holds global rows [start_k, stop_k) of a seed, so a dataset (or one new batch of it) is regenerated
byte for byte from (seed, row range, settings); the settings are written beside the shards in simulation.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .npyio import AtomicNpyWriter, write_text_atomic
from .physics import PhysicsParams, make_plan, simulate_power
from .rawfiles import spectra_path, structure_path
from .structures import StructureGenerator, StructureParams

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class SimulationSettings:
    seed: int = 0
    physics: PhysicsParams = field(default_factory=PhysicsParams)
    structures: StructureParams = field(default_factory=StructureParams)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "physics": self.physics.to_dict(), "structures": self.structures.to_dict()}


def shard_ranges(rows: int, shards: int) -> list[tuple[int, int]]:
    """Global row ranges of `shards` nearly equal shards covering `rows` rows."""
    if rows < 1 or shards < 1 or shards > rows:
        raise ValueError(f"need 1 <= shards <= rows, got rows={rows}, shards={shards}")
    edges = np.linspace(0, rows, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def write_shard(out_dir: str | Path, shard: int, start: int, stop: int, settings: SimulationSettings,
                chunk: int = 1024, device: str = "cpu", progress: ProgressFn | None = None,
                plan=None) -> tuple[Path, Path]:
    """Simulate global rows [start, stop) and write shard `shard`'s two files atomically."""
    out_dir = Path(out_dir)
    plan = plan or make_plan(settings.physics, device)
    gen = StructureGenerator(settings.structures, settings.seed)
    n = stop - start
    n_lam = settings.physics.n_wavelengths
    with AtomicNpyWriter(structure_path(out_dir, shard), (n, 1, 128, 128), np.uint8) as ws, \
            AtomicNpyWriter(spectra_path(out_dir, shard), (n, 3, n_lam), np.float32) as wp, torch.inference_mode():
        for first in range(start, stop, chunk):
            last = min(first + chunk, stop)
            structures, unfinished = gen.rows(first, last)
            spectra = np.zeros((last - first, 3, n_lam), dtype=np.float32)  # unfinished rows stay all zero
            done = np.nonzero(~unfinished)[0]
            if len(done):
                spectra[done] = -simulate_power(torch.from_numpy(structures[done]), plan).cpu().numpy()
            ws.write(structures[:, None])
            wp.write(spectra)
            if progress:
                progress(last - first)
    return structure_path(out_dir, shard), spectra_path(out_dir, shard)


def write_dataset(out_dir: str | Path, rows: int, shards: int = 2, settings: SimulationSettings | None = None,
                  chunk: int = 1024, device: str = "cpu", progress: ProgressFn | None = None) -> list[tuple[Path, Path]]:
    settings = settings or SimulationSettings()
    out_dir = Path(out_dir)
    plan = make_plan(settings.physics, device)
    ranges = shard_ranges(rows, shards)
    written = [write_shard(out_dir, k, a, b, settings, chunk, device, progress, plan) for k, (a, b) in enumerate(ranges)]
    record = settings.to_dict() | {"rows": rows, "shards": [{"shard": k, "start": a, "stop": b} for k, (a, b) in enumerate(ranges)]}
    write_text_atomic(out_dir / "simulation.json", json.dumps(record, indent=2) + "\n")
    return written
