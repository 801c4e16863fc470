"""Raw-format shards (the research code's format) from the built-in simulator: the default data of a fresh install.

Shard k holds global rows [start_k, stop_k) of a seed, so a dataset (or one new batch of it) is regenerated
byte for byte from (seed, row range, settings); the settings are written beside the shards in simulation.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import Field

from crrecon_pipeline.data.npyio import AtomicNpyWriter, iter_chunks, read_header, write_text_atomic
from crrecon_pipeline.data.rawfiles import spectra_path, structure_path
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.simulate import make_plan, simulate_power
from crrecon_pipeline.physics.structures import StructureGenerator, StructureParams
from crrecon_pipeline.settings import Settings

ProgressFn = Callable[[int], None]


class SimulationSettings(Settings):
    """Everything a simulated shard is regenerated from: the structure seed, the physics, the structure recipe."""

    OWNER = "simulation"

    seed: int = Field(0, ge=0, le=2**63 - 1, description="structure seed: row r of a seed is the same bytes however "
                                                          "sharded")
    physics: PhysicsParams = Field(default_factory=PhysicsParams, description="geometry, materials and fidelity")
    structures: StructureParams = Field(default_factory=StructureParams, description="the random structures")

    def to_dict(self) -> dict:
        return {"seed": self.seed, "physics": self.physics.to_dict(), "structures": self.structures.to_dict()}

    @classmethod
    def from_dict(cls, record: dict) -> "SimulationSettings":
        """The settings of to_dict() (or of a simulation.json: its other keys are ignored), to re-simulate with them.

        Keys missing from an older record take today's defaults; an unknown key is a ValueError naming it."""
        parts = {}
        for key, kind in (("physics", PhysicsParams), ("structures", StructureParams)):
            values = dict(record.get(key) or {})
            unknown = sorted(set(values) - set(kind.model_fields))
            if unknown:
                raise ValueError(f"simulation settings: unknown {key} key(s) {unknown}")
            parts[key] = kind(**values)
        return cls(seed=int(record.get("seed", 0)), **parts)


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
    with AtomicNpyWriter(structure_path(out_dir, shard), (n, 1, N_PIX, N_PIX), np.uint8) as ws, \
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
                  chunk: int = 1024, device: str = "cpu",
                  progress: ProgressFn | None = None) -> list[tuple[Path, Path]]:
    settings = settings or SimulationSettings()
    out_dir = Path(out_dir)
    plan = make_plan(settings.physics, device)
    ranges = shard_ranges(rows, shards)
    written = [write_shard(out_dir, k, a, b, settings, chunk, device, progress, plan)
               for k, (a, b) in enumerate(ranges)]
    _write_record(out_dir, settings, rows, ranges)
    return written


def _write_record(out_dir: Path, settings: SimulationSettings, rows: int, ranges: list[tuple[int, int]],
                  **extra) -> None:
    """simulation.json beside the shards: the settings (SimulationSettings.from_dict reads them back) and the rows."""
    record = settings.to_dict() | extra | {
        "rows": rows, "shards": [{"shard": k, "start": a, "stop": b} for k, (a, b) in enumerate(ranges)]}
    write_text_atomic(out_dir / "simulation.json", json.dumps(record, indent=2) + "\n")


def _binary_rows(path: Path, rows: np.ndarray, seen: set) -> np.ndarray:
    """A chunk of user structures as uint8 {0, 1}; values other than {0,1} / {0,255} (one encoding) are bad input."""
    ones, full = rows == 1, rows == 255
    if not ((rows == 0) | ones | full).all():
        bad = rows[~((rows == 0) | ones | full)].flat[0]
        raise DataError(f"{path}: structures must be binary {{0,1}} or {{0,255}}, found the value {bad}")
    seen.update(v for v, hit in ((1, ones.any()), (255, full.any())) if hit)
    if len(seen) > 1:
        raise DataError(f"{path}: structures mix the encodings {{0,1}} and {{0,255}}")
    return (rows != 0).astype(np.uint8)


def simulate_structures_file(structures_file: str | Path, out_dir: str | Path,
                             settings: SimulationSettings | None = None, chunk: int = 1024, device: str = "cpu",
                             progress: ProgressFn | None = None) -> tuple[Path, Path]:
    """Simulate the user's structures ((N, 1, 128, 128) or (N, 128, 128), {0,1} or {0,255}) into shard 0 of out_dir.

    Streamed in chunks; both files appear only when every row is written (bad input leaves out_dir as it was).
    Structures are written as uint8 {0,1}, every row simulated (none unfinished)."""
    path, out_dir = Path(structures_file), Path(out_dir)
    settings = settings or SimulationSettings()
    header = read_header(path)
    if header.shape[1:] not in ((1, N_PIX, N_PIX), (N_PIX, N_PIX)):
        raise DataError(f"{path}: structures must have shape (N, 1, 128, 128) or (N, 128, 128), got {header.shape}")
    if header.shape[0] == 0:
        raise DataError(f"{path}: no structures in this file")
    if not (np.issubdtype(header.dtype, np.number) or header.dtype == np.bool_):
        raise DataError(f"{path}: structures must be numeric, got dtype {header.dtype}")
    n, n_lam = header.shape[0], settings.physics.n_wavelengths
    plan = make_plan(settings.physics, device)
    seen: set = set()
    with AtomicNpyWriter(structure_path(out_dir, 0), (n, 1, N_PIX, N_PIX), np.uint8) as ws, \
            AtomicNpyWriter(spectra_path(out_dir, 0), (n, 3, n_lam), np.float32) as wp, torch.inference_mode():
        for _, rows in iter_chunks(header, chunk):
            s = _binary_rows(path, rows.reshape(len(rows), N_PIX, N_PIX), seen)
            wp.write(-simulate_power(torch.from_numpy(s), plan).cpu().numpy())
            ws.write(s[:, None])
            if progress:
                progress(len(s))
    _write_record(out_dir, settings, n, [(0, n)], structures_file=str(path.resolve()))
    return structure_path(out_dir, 0), spectra_path(out_dir, 0)
