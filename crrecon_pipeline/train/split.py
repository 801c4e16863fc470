"""The train/validation split: stable across runs and dataset growth, and closed under the symmetry group.

A structure's key is the same for all its images (half-period shifts, 180- and 90-degree turns), so a validation
structure's rotated or shifted twin never lands in the training split, whatever augmentation a run uses."""

from __future__ import annotations

import numpy as np

from crrecon_pipeline.data.symmetry import SHIFTS, shift_packed, turned_images


def structure_keys(packed: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per structure, equal for all its images under the symmetry group (half-period shifts,
    180- and 90-degree turns: symmetry.py), so every image of a structure shares a split even when one appears
    as its own row, whatever augmentation a run uses: the minimum over the images of a vectorised hash (a linear
    form of the 64-bit words + mixing). A shift only permutes the words, so the four shifted images of a turned
    structure cost one (n, 256) @ (256, 4) product against the shifted weights (<S p, w> = <p, S w>, S = S^-1)."""
    weights = (np.random.default_rng(0x5EED).integers(1, 2**63, size=packed.shape[1] // 8, dtype=np.uint64)
               | np.uint64(1))
    shifted = np.stack([shift_packed(weights.view(np.uint8), x, y).view(np.uint64) for x, y in SHIFTS], axis=1)
    keys = np.full(len(packed), np.iinfo(np.uint64).max, dtype=np.uint64)
    for turned in turned_images(packed):
        with np.errstate(over="ignore"):
            linear = np.ascontiguousarray(turned).view(np.uint64) @ shifted  # (n, 4), wraps mod 2^64
        np.minimum(keys, _mix(linear).min(axis=1), out=keys)
    return _mix(keys)  # the minimum of 16 hashes sits low: mix it again so the key is uniform for the split


def _mix(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit finalizer (xor-shift-multiply)."""
    x = x.copy()
    with np.errstate(over="ignore"):
        for shift, mult in ((31, 0x9E3779B97F4A7C15), (29, 0xBF58476D1CE4E5B9), (32, 0x94D049BB133111EB)):
            x ^= x >> np.uint64(shift)
            x *= np.uint64(mult)
    return x


def split_rows(packed: np.ndarray, train_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) into the original rows, by structure hash: stable across runs and dataset growth."""
    u = (structure_keys(packed) >> np.uint64(11)).astype(np.float64) / float(2**53)
    val = u >= train_ratio
    return np.nonzero(~val)[0], np.nonzero(val)[0]


def oversampled(rows: np.ndarray, shard_of_row: np.ndarray, times: dict[str, int]) -> np.ndarray:
    """Training rows with the rows of the listed shards repeated `times[shard]` times in all (data.oversample):
    new data (the design loop's shards) weighs more without changing the split, which stays by structure."""
    if not times:
        return rows
    counts = np.ones(len(rows), dtype=np.int64)
    for shard, n in times.items():
        counts[shard_of_row[rows] == int(shard)] = n
    return np.repeat(rows, counts)


def all_rows_train(train: np.ndarray, val: np.ndarray, shard_of_row: np.ndarray,
                   shards: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) with the listed shards' validation rows moved to training (data.train_all). The design loop's
    shards are few rows where the surrogate is wrong; holding a tenth of them out would leave exactly those
    designs unlearnt, while the other shards' rows keep the validation stable."""
    move = np.isin(shard_of_row[val], [int(s) for s in shards])
    return np.sort(np.concatenate([train, val[move]])), val[~move]
