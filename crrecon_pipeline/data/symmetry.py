"""The exact symmetries of a periodic color-router cell at normal incidence, applied to PACKED structures and
their (.., 2, 2, L) Bayer targets, a whole batch at a time (numpy or torch, no per-sample Python).

Convention (docs/simulator.md): structure s[i, j], i (first axis) = x, j = y; Bayer pixel (a, b) of [[R, G1], [G2, B]]
is the quadrant E_ab of x-half a and y-half b. Packed rows are np.packbits of the row-major 128 x 128 bits:
image row i is bytes 16 i .. 16 i + 15.

The group. With periodic boundaries and a normally incident wave, moving the structure moves the field with it,
so a half-period shift moves each quadrant's power to the neighbouring quadrant, for any solver and polarization:
    element          structure                     target pixel (a, b) takes the old pixel    (R, G1, G2, B) ->
    identity         s                             (a, b)                                    (R, G1, G2, B)
    shift x (Sx)     s rolled by 64 rows           (1 - a, b)                                (G2, B, R, G1)
    shift y (Sy)     s rolled by 64 columns        (a, 1 - b)                                (G1, R, B, G2)
    shift xy         both                          (1 - a, 1 - b)                            (B, G2, G1, R)
    turn 180 (T)     s[::-1, ::-1]                 (1 - a, 1 - b)                            (B, G2, G1, R)
    T Sx, T Sy       turned after shifting         (a, 1 - b), (1 - a, b)
    T Sx Sy          turned after both shifts      (a, b): a different structure, the same spectra
The 180-degree turn maps the (x, y) field to (-x, -y): intensities, hence any polarization, are unchanged. These 8
elements (4 shifts x the turn already stored as the `rotated` twins) are on by default (data.augment_shifts,
data.augment_180). A 90-degree turn (np.rot90: s'[i, j] = s[j, 127 - i]; pixel (a, b) takes the old (b, 1 - a):
(R, G1, G2, B) -> (G1, B, R, G2)) exchanges the x- and y-polarized problems, so it is exact only for
unpolarized or scalar data (the built-in simulators are scalar): data.augment_90, off by default; with it the
group has 16 elements.

Raw spectra carry one G channel (the mean of the two green pixels); it is each pixel's own power exactly when the
structure is diagonal-symmetric (E01 = E10), as the research group's and the generator's structures are. A
shifted image of such a structure is no longer diagonal-symmetric: its target has G1 != G2, which the
(2, 2, L) output has room for.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from crrecon_pipeline.data.transforms import pack_structures, rotate_packed, unpack_structures
from crrecon_pipeline.grid import N_PIX, PACKED_BYTES

ROW_BYTES = N_PIX // 8  # 16 bytes per image row
SHIFTS = ((False, False), (True, False), (False, True), (True, True))  # (x, y) half-period shifts


def _roll(a, shift: int, axis: int):
    return torch.roll(a, shift, axis) if torch.is_tensor(a) else np.roll(a, shift, axis)


def shift_packed(packed, x: bool, y: bool):
    """(.., 2048) packed rows shifted by half a period in x (64 image rows = 1024 bytes) and/or y (64 columns =
    8 bytes inside each 16-byte row). Exact bit moves: no unpacking."""
    if x:
        packed = _roll(packed, PACKED_BYTES // 2, -1)
    if y:
        shape = packed.shape
        packed = _roll(packed.reshape(*shape[:-1], N_PIX, ROW_BYTES), ROW_BYTES // 2, -1).reshape(shape)
    return packed


def shift_bayer(bayer, x: bool, y: bool):
    """(.., 2, 2, L) targets of the shifted structures: a shift in x swaps the x-halves (a -> 1 - a), in y the
    y-halves."""
    dims = [d for d, on in ((-3, x), (-2, y)) if on]
    if not dims:
        return bayer
    return torch.flip(bayer, dims) if torch.is_tensor(bayer) else np.flip(bayer, dims)


def turn90_bayer(bayer):
    """Targets of np.rot90(s): pixel (a, b) takes the old pixel (b, 1 - a)."""
    if torch.is_tensor(bayer):
        return torch.flip(bayer, [-2]).transpose(-3, -2)
    return np.flip(bayer, -2).swapaxes(-3, -2)


def turn90_packed(packed: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """np.rot90 of packed structures (numpy; unpacks a chunk at a time: used for the split keys only)."""
    out = np.empty_like(packed)
    for start in range(0, len(packed), chunk):
        bits = unpack_structures(packed[start:start + chunk])
        out[start:start + chunk] = pack_structures(np.ascontiguousarray(np.rot90(bits, 1, axes=(1, 2))))
    return out


def turned_images(packed: np.ndarray):
    """The structures turned by 0, 180, 90 and 270 degrees (numpy, (n, 2048) each); with the four shifts of
    each, every image under the 16-element group."""
    for base in (packed, turn90_packed(packed)):
        yield base
        yield rotate_packed(base)


class Augmentation:
    """Which group elements a training split covers beyond the stored rows (originals and 180-degree twins).

    A virtual sample index v = row + n_rows * e names stored row `row` under element e; e's bits are
    (x shift, y shift, 90-degree turn), absent bits fixed at 0. The shift is applied first, then the turn.
    """

    def __init__(self, shifts: bool, turn90: bool):
        self.shifts, self.turn90 = bool(shifts), bool(turn90)
        self.n_elements = (4 if self.shifts else 1) * (2 if self.turn90 else 1)

    def decode(self, element: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,) element numbers -> (x, y, turn) bool masks."""
        zero = torch.zeros_like(element, dtype=torch.bool)
        x = (element & 1).bool() if self.shifts else zero
        y = (element & 2).bool() if self.shifts else zero
        turn = (element >> (2 if self.shifts else 0) & 1).bool() if self.turn90 else zero
        return x, y, turn

    def packed(self, rows: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, 2048) packed rows, each shifted per its own masks (no data-dependent branch: no device sync)."""
        if self.shifts:
            rows = torch.where(x[:, None], shift_packed(rows, True, False), rows)
            rows = torch.where(y[:, None], shift_packed(rows, False, True), rows)
        return rows

    def images(self, bits: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
        """(B, 1, 128, 128) inputs, each turned by 90 degrees where `turn`."""
        if not self.turn90:
            return bits
        return torch.where(turn[:, None, None, None], torch.rot90(bits, 1, (-2, -1)), bits)

    def targets(self, bayer: torch.Tensor, x: torch.Tensor, y: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
        """(B, 2, 2, L) targets permuted as the elements permute the pixels (shift, then turn)."""
        if self.shifts:
            bayer = torch.where(x[:, None, None, None], shift_bayer(bayer, True, False), bayer)
            bayer = torch.where(y[:, None, None, None], shift_bayer(bayer, False, True), bayer)
        if self.turn90:
            bayer = torch.where(turn[:, None, None, None], turn90_bayer(bayer), bayer)
        return bayer


def symmetry_summary(*, turn180: bool, shifts: bool, turn90: bool) -> str:
    """The images per structure a run trains on (its data.augment_180 / augment_shifts / augment_90), in words
    (logs, model card)."""
    options = (("half-period shifts", shifts, 4), ("180-degree turn", turn180, 2), ("90-degree turn", turn90, 2))
    parts = [name for name, on, _ in options if on]
    n = math.prod(size for _, on, size in options if on)
    return f"{n} images per structure: " + " x ".join(parts) if parts else "no symmetry augmentation"
