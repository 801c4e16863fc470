"""Minimum solid and void length scale of binary periodic structures: what a fab can make.

The measure of imageruler (Schubert et al., JOSA B 41, A161, 2024; PyPI `imageruler`, MIT, numpy + opencv-python),
written here in numpy for a periodic unit cell, batched over designs (no OpenCV dependency for one function):
the solid length scale is the largest diameter d (pixels) of a disk-shaped brush whose morphological opening leaves
the solid unchanged, violations at the edges of large features ignored (discretization jaggedness of a smooth
boundary, imageruler's LARGE_FEATURE_EDGES); the void length scale is the same for the void. Every morphological
operation wraps around the cell (the structure is one period of an infinite array), so a feature that crosses the
border is measured whole.

Brush of diameter d: the pixels whose centres lie strictly inside the circle of radius d/2 (square for d <= 2),
opened with the 3-pixel plus so that it can itself be drawn by a width-3 brush (imageruler's kernel). Morphology is
circular convolution by FFT (exact after rounding: counts are integers below 2^24)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLUS_3 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
PLUS_5 = np.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=bool)
SQUARE_3 = np.ones((3, 3), dtype=bool)
GAP_ALLOWANCE = 4  # diameters tried past a failing one: a discrete disk of d + 1 may fit where d's does not


def brush(d: int) -> np.ndarray:
    """(d, d) bool: the pixelated disk of diameter d (square for d <= 2)."""
    centres = np.arange(d) - (d - 1) / 2
    disk = centres[:, None] ** 2 + centres[None, :] ** 2 < (d / 2) ** 2
    if d <= 2:
        return np.ones((d, d), dtype=bool)
    padded = np.pad(disk, 2)
    return _open_flat(padded, PLUS_3)[2:-2, 2:-2]


def _open_flat(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Opening of one small zero-padded image (the brush itself), wrapping harmlessly inside its padding."""
    return Morphology(x.shape, kernel).opening(x[None])[0]


class Morphology:
    """Erosion, dilation and opening of (N, H, W) bool images by one kernel, periodic in both axes."""

    def __init__(self, shape: tuple[int, int], kernel: np.ndarray):
        h, w = shape
        kh, kw = kernel.shape
        place = np.zeros((h, w))
        for i, j in np.argwhere(kernel):  # offsets from the kernel's centre (half-integer for an even side)
            place[int(np.floor(i - (kh - 1) / 2)) % h, int(np.floor(j - (kw - 1) / 2)) % w] = 1.0
        self.size = int(kernel.sum())
        self.k = np.fft.rfft2(place)
        self.shape = shape

    def _sum(self, x: np.ndarray, reflect: bool) -> np.ndarray:
        """(N, H, W) counts of set pixels under the kernel at each position (reflect: the mirrored kernel)."""
        k = np.conj(self.k) if not reflect else self.k
        return np.rint(np.fft.irfft2(np.fft.rfft2(x.astype(np.float64)) * k, s=self.shape))

    def erosion(self, x: np.ndarray) -> np.ndarray:
        return self._sum(x, reflect=False) >= self.size  # every pixel under the kernel set

    def dilation(self, x: np.ndarray) -> np.ndarray:
        return self._sum(x, reflect=True) > 0  # the union of the kernel placed at every set pixel

    def opening(self, x: np.ndarray) -> np.ndarray:
        return self.dilation(self.erosion(x))


def ignored_edges(x: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: edge pixels of large features (removed by a plus-3 erosion and next to an interior pixel,
    interior = the whole 3 x 3 neighbourhood set), where a violation is discretization, not a small feature."""
    shape = x.shape[-2:]
    interior = Morphology(shape, SQUARE_3).erosion(x)
    near_interior = Morphology(shape, PLUS_5).dilation(interior)
    edge = x & ~Morphology(shape, PLUS_3).erosion(x)
    return edge & near_interior & ~interior


def solid_violations(x: np.ndarray, d: int, ignored: np.ndarray | None = None) -> np.ndarray:
    """(N, H, W) bool: solid pixels that the opening with brush(d) removes, edges of large features ignored."""
    ignored = ignored_edges(x) if ignored is None else ignored
    return x & ~Morphology(x.shape[-2:], brush(d)).opening(x) & ~ignored


def solid_length_scale(x: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N,) int: the largest d <= min(H, W) with no solid violation; a row without solid (or all
    solid) measures min(H, W), as imageruler does."""
    x = np.asarray(x, dtype=bool)
    top = min(x.shape[-2:])
    ignored = ignored_edges(x)
    best = np.zeros(len(x), dtype=int)
    uniform = ~x.any(axis=(1, 2)) | x.all(axis=(1, 2))
    best[uniform] = top
    fails = np.zeros(len(x), dtype=int)  # consecutive failing diameters since the last success
    active = ~uniform
    for d in range(1, top + 1):
        if not active.any():
            break
        idx = np.nonzero(active)[0]
        ok = ~solid_violations(x[idx], d, ignored[idx]).any(axis=(1, 2))
        best[idx[ok]] = d
        fails[idx] = np.where(ok, 0, fails[idx] + 1)
        active[idx[fails[idx] >= GAP_ALLOWANCE]] = False
    return best


@dataclass(frozen=True)
class LengthScales:
    solid: np.ndarray  # (N,) int pixels
    void: np.ndarray  # (N,) int pixels

    @property
    def minimum(self) -> np.ndarray:
        """(N,) the smaller of the two: the design's minimum feature size in pixels."""
        return np.minimum(self.solid, self.void)


def length_scales(structures: np.ndarray) -> LengthScales:
    """(N, H, W) or (H, W) binary {0, 1} -> solid and void length scales per structure, periodic."""
    x = np.asarray(structures).astype(bool)
    x = x[None] if x.ndim == 2 else x
    return LengthScales(solid_length_scale(x), solid_length_scale(~x))


REPAIR_EXTRA_PX = (0, 1, 2)  # brushes tried by enforce_length_scale: d, d + 1, d + 2


def enforce_length_scale(structures: np.ndarray, d: int) -> np.ndarray:
    """(N, H, W) {0, 1} -> structures whose solid and void length scales are >= d where a small morphological
    filter can make them so: per structure, among open-then-close and close-then-open with brushes d .. d + 2
    (periodic), the candidate that changes the fewest pixels and measures >= d; a structure that already meets d
    is kept as it is, one no candidate fixes gets the open-close with d (the caller measures and reports it). One
    filter alone is not enough: a closing can leave one-pixel bridges where a gap was narrow, an opening notches.
    A transpose-symmetric input stays symmetric (every brush is). d < 1: unchanged."""
    x = np.asarray(structures).astype(bool)
    if d < 1:
        return x.astype(np.uint8)
    out = x.copy()
    todo = length_scales(x).minimum < d
    if not todo.any():
        return out.astype(np.uint8)
    best_change = np.full(len(x), np.inf)
    fallback = None
    for extra in REPAIR_EXTRA_PX:
        m = Morphology(x.shape[-2:], brush(int(d) + extra))
        for candidate in (~m.opening(~m.opening(x[todo])), m.opening(~m.opening(~x[todo]))):
            if fallback is None:
                fallback = candidate
            meets = length_scales(candidate).minimum >= d
            change = (candidate != x[todo]).sum(axis=(1, 2))
            idx = np.nonzero(todo)[0]
            better = meets & (change < best_change[idx])
            out[idx[better]] = candidate[better]
            best_change[idx[better]] = change[better]
    unfixed = np.nonzero(todo)[0][~np.isfinite(best_change[todo])]
    out[unfixed] = fallback[~np.isfinite(best_change[todo])]
    return out.astype(np.uint8)
