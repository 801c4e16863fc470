"""Batches built on the device: bit-packed structures indexed a whole batch at a time, unpacked and mapped to
[-1, 1] there, with the symmetry images (data.symmetry: half-period shifts, 90-degree turns) and their permuted
targets made in the same batched step. No per-sample Python, no host round trip in the hot loop."""

from __future__ import annotations

import numpy as np
import torch

from crrecon_pipeline.data.prepared import Prepared
from crrecon_pipeline.data.symmetry import Augmentation
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.grid import N_PIX

BIT_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # np.packbits is big-endian within a byte


class DeviceData:
    """Originals and (optionally) rotated twins stacked on the device: rows [0, M) and [M, 2M). A sample index
    v = row + rows * e names a stored row under symmetry element e (symmetry.Augmentation): the structure is
    shifted packed and its target permuted in the same batched step; e = 0 is the stored row itself."""

    def __init__(self, prepared: Prepared, device: torch.device, with_rotated: bool,
                 augmentation: Augmentation | None = None):
        packed = [prepared.structures.packed]
        targets = [prepared.bayer]
        if with_rotated:
            if prepared.rotated_structures is None:
                raise DataError("prepared data has no rotated set (materialize rotated_bayer / run crrecon preprocess)")
            packed.append(prepared.rotated_structures.packed)
            targets.append(prepared.rotated_bayer)
        self.m = len(prepared)
        self.packed = torch.as_tensor(np.concatenate(packed), device=device)  # (M or 2M, 2048) uint8
        self.targets = torch.as_tensor(np.concatenate(targets), device=device)  # (.., 2, 2, 30) float32
        self.rows = len(self.packed)
        self.augmentation = augmentation or Augmentation(shifts=False, turn90=False)
        self.shifts = BIT_SHIFTS.to(device)

    def samples(self, rows: np.ndarray) -> np.ndarray:
        """Every sample index of the given stored rows under every element of the augmentation."""
        return (np.asarray(rows)[None, :] + self.rows * np.arange(self.augmentation.n_elements)[:, None]).ravel()

    def _split(self, idx: torch.Tensor):
        return idx % self.rows, self.augmentation.decode(idx // self.rows)

    def inputs(self, idx: torch.Tensor, pm1: bool = True) -> torch.Tensor:
        """(B,) sample indices -> (B, 1, 128, 128) float in [-1, 1] (or {0, 1})."""
        rows, (x_shift, y_shift, turn) = self._split(idx)
        packed = self.augmentation.packed(self.packed[rows], x_shift, y_shift)
        bits = (packed.unsqueeze(-1) >> self.shifts) & 1  # (B, 2048, 8)
        x = self.augmentation.images(bits.view(-1, 1, N_PIX, N_PIX), turn).float()
        return x * 2 - 1 if pm1 else x

    def target(self, idx: torch.Tensor) -> torch.Tensor:
        """(B,) sample indices -> (B, 2, 2, L) targets, permuted as each sample's element moves the pixels."""
        rows, elements = self._split(idx)
        return self.augmentation.targets(self.targets[rows], *elements)


def unpack_to_inputs(structures: np.ndarray, device: torch.device, pm1: bool = True) -> torch.Tensor:
    """Raw structures (N, [1,] 128, 128) {0,1} or {0,255} -> model inputs on device."""
    x = torch.as_tensor(np.asarray(structures).reshape(-1, 1, N_PIX, N_PIX) != 0, device=device).float()
    return x * 2 - 1 if pm1 else x
