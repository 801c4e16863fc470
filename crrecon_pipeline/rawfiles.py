"""The research group's raw shard format: finding shard pairs and checking their headers.

binary_dataset_128_<k>.npy   (N, 1, 128, 128) uint8 structures, {0,1} (or {0,255})
spectra_latest_<k>.npy       (N, 3, W) float spectra R, G, B, stored negative; W = 301 by default
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .npyio import DataError, NpyHeader, read_header

STRUCTURE_RE = re.compile(r"^binary_dataset_128_(\d+)\.npy$")
SPECTRA_RE = re.compile(r"^spectra_latest_(\d+)\.npy$")


def structure_path(raw_dir: str | Path, shard: int | str) -> Path:
    return Path(raw_dir) / f"binary_dataset_128_{shard}.npy"


def spectra_path(raw_dir: str | Path, shard: int | str) -> Path:
    return Path(raw_dir) / f"spectra_latest_{shard}.npy"


def _indices(raw_dir: Path, pattern: re.Pattern) -> set[int]:
    return {int(m.group(1)) for p in raw_dir.iterdir() if (m := pattern.match(p.name))}


def discover_shards(raw_dir: str | Path) -> list[int]:
    """Shard indices with both files present, in shard order; a lone file or an empty folder is bad input."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DataError(f"{raw_dir}: raw data folder not found")
    structures, spectra = _indices(raw_dir, STRUCTURE_RE), _indices(raw_dir, SPECTRA_RE)
    for k in sorted(structures - spectra):
        raise DataError(f"{structure_path(raw_dir, k)}: structure shard without its spectra shard ({spectra_path(raw_dir, k).name} missing)")
    for k in sorted(spectra - structures):
        raise DataError(f"{spectra_path(raw_dir, k)}: spectra shard without its structure shard ({structure_path(raw_dir, k).name} missing)")
    if not structures:
        raise DataError(f"{raw_dir}: no raw shards (binary_dataset_128_<k>.npy + spectra_latest_<k>.npy) in this folder")
    return sorted(structures)


@dataclass(frozen=True)
class RawShard:
    index: int
    structures: NpyHeader
    spectra: NpyHeader

    @property
    def rows(self) -> int:
        return self.structures.shape[0]

    @property
    def n_wavelengths(self) -> int:
        return self.spectra.shape[2]


def open_shard(raw_dir: str | Path, shard: int, n_wavelengths: int | None = None) -> RawShard:
    """Both headers of shard k, with shapes, dtypes and row counts checked (values are checked while streaming)."""
    st = read_header(structure_path(raw_dir, shard))
    sp = read_header(spectra_path(raw_dir, shard))
    if not (len(st.shape) == 4 and st.shape[1:] == (1, 128, 128)) and not (len(st.shape) == 3 and st.shape[1:] == (128, 128)):
        raise DataError(f"{st.path}: structures must have shape (N, 1, 128, 128), got {st.shape}")
    if not (np.issubdtype(st.dtype, np.integer) or st.dtype == np.bool_):
        raise DataError(f"{st.path}: structures must be integer (uint8 0/1), got dtype {st.dtype}")
    if len(sp.shape) != 3 or sp.shape[1] != 3:
        raise DataError(f"{sp.path}: spectra must have shape (N, 3, {n_wavelengths or 'W'}), got {sp.shape}")
    if n_wavelengths is not None and sp.shape[2] != n_wavelengths:
        raise DataError(f"{sp.path}: spectra have {sp.shape[2]} wavelength samples, the raw source expects {n_wavelengths}")
    if not np.issubdtype(sp.dtype, np.floating):
        raise DataError(f"{sp.path}: spectra must be floating point, got dtype {sp.dtype}")
    if st.shape[0] != sp.shape[0]:
        raise DataError(f"{sp.path}: {sp.shape[0]} rows but {st.path.name} has {st.shape[0]}")
    if st.shape[0] == 0:
        raise DataError(f"{st.path}: shard has no rows")
    return RawShard(shard, st, sp)
