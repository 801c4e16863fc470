"""Random freeform color-router structures, made the way the research group makes theirs (docs/simulator.md).

16x16 random seed -> symmetrised about the diagonal -> 8x bilinear periodic upsampling -> small periodic
Gaussian blur -> threshold at the quantile that gives the row's target fill. Upsampling and blur are one fixed
linear map M (128 x 16), so a batch is two GEMMs: S = M A M^T.

Determinism: random numbers come in blocks of ROWS_PER_BLOCK rows, each block from its own generator seeded
by (seed, block), so row r of a seed is the same bytes however the rows are chunked or sharded.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.settings import Settings

ROWS_PER_BLOCK = 256


class StructureParams(Settings):
    """How the random structures are made (the research group's recipe, docs/simulator.md)."""

    OWNER = "structures"

    seed_size: int = Field(16, ge=1, le=128, description="side of the random seed pattern (pixels)")
    blur_sigma_px: float = Field(2.0, ge=0, le=64, description="periodic Gaussian blur after upsampling (pixels)")
    fill_mean: float = Field(0.32, ge=0, le=1, description="mean target fill fraction")
    fill_spread: float = Field(0.08, ge=0, le=1, description="target fill drawn uniformly in fill_mean +- this")
    unfinished_fraction: float = Field(0.47, ge=0, le=1, description="fraction of rows written as unfinished "
                                       "simulations (all-zero spectra), as in the research data")


def _periodic_bilinear(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) periodic bilinear interpolation matrix, pixel-centre aligned."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo % n_in] += 1 - frac
    m[np.arange(n_out), (lo + 1) % n_in] += frac
    return m


def _periodic_gaussian(n: int, sigma: float) -> np.ndarray:
    d = np.arange(n)
    d = np.minimum(d, n - d)
    kernel = np.exp(-0.5 * (d / sigma) ** 2) if sigma > 0 else (d == 0).astype(float)
    kernel /= kernel.sum()
    return np.stack([np.roll(kernel, i) for i in range(n)])  # circulant


def _row_randoms(seed: int, rows: np.ndarray, seed_size: int) -> np.ndarray:
    """(len(rows), seed_size^2 + 2) uniforms: the seed pattern, the fill draw, the unfinished draw."""
    width = seed_size * seed_size + 2
    out = np.empty((len(rows), width))
    blocks = rows // ROWS_PER_BLOCK
    for block in np.unique(blocks):  # one generator per block of 256 rows, not per row
        table = np.random.default_rng([seed, int(block)]).random((ROWS_PER_BLOCK, width))
        sel = blocks == block
        out[sel] = table[rows[sel] % ROWS_PER_BLOCK]
    return out


class StructureGenerator:
    def __init__(self, params: StructureParams | None = None, seed: int = 0):
        self.params = params or StructureParams()
        self.seed = seed
        p = self.params
        m = _periodic_gaussian(N_PIX, p.blur_sigma_px) @ _periodic_bilinear(p.seed_size, N_PIX)
        self._m = torch.as_tensor(m, dtype=torch.float32)  # (128, 16)

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Structures (n, 128, 128) uint8 {0,1} and the unfinished flags (n,) bool for global rows [start, stop)."""
        p = self.params
        u = _row_randoms(self.seed, np.arange(start, stop), p.seed_size)
        k = p.seed_size
        a = torch.as_tensor(u[:, : k * k].reshape(-1, k, k), dtype=torch.float32)
        a = 0.5 * (a + a.transpose(1, 2))
        # S = M A M^T with both products as right-multiplications (one large GEMM each): (n, 128, 128)
        s = ((a @ self._m.T).transpose(1, 2) @ self._m.T).transpose(1, 2)
        s = 0.5 * (s + s.transpose(1, 2))  # exactly symmetric in floating point, so is the threshold
        fill = p.fill_mean + p.fill_spread * (2 * u[:, k * k] - 1)
        # The pattern is smooth (8x upsampled): the quantile of every 4th pixel in each direction (4 samples per
        # seed cell) sets the threshold to within ~0.5% of fill on average (2% at worst), at 1/16 of the sort.
        flat = s[:, ::4, ::4].reshape(len(u), -1)
        rank = np.clip(np.round((1 - fill) * flat.shape[1]).astype(np.int64), 1, flat.shape[1])
        thr = torch.sort(flat, dim=1).values.gather(1, torch.as_tensor(rank - 1)[:, None])  # (n, 1)
        structures = (s > thr[:, :, None]).to(torch.uint8).numpy()
        unfinished = u[:, k * k + 1] < p.unfinished_fraction
        return structures, unfinished
