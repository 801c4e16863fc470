"""Geometry, materials and fidelity of the built-in simulator: one frozen dataclass whose defaults mirror the
research group's FDTD setup (docs/simulator.md). The CLI flags, the Dagster resource and the pretraining run
config are generated from its fields, so a default is written here only."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.grid import N_PIX, N_WAVELENGTHS

FIDELITIES = ("thin", "multislice")


@dataclass(frozen=True)
class PhysicsParams:
    """Geometry and materials; the defaults mirror the research group's FDTD setup (docs/simulator.md)."""

    period_um: float = 2.0  # L, unit cell (2 x 2 Bayer pixels of 1 um)
    height_um: float = 0.6  # h, pillar height
    depth_um: float = 2.5  # z, detector plane below the pillars
    n_substrate: float = 1.0  # n_s, medium between pillars and detector (air)
    cauchy_a: float = 1.996  # n_hi = A + B / lambda^2 (lambda in um): SiN
    cauchy_b: float = 0.0166
    n_low: float = 1.0  # index where the pattern is 0
    wavelength_min_nm: float = 400.0
    wavelength_max_nm: float = 700.0
    n_wavelengths: int = N_WAVELENGTHS
    fidelity: str = "thin"  # "thin" (this module) or "multislice" (physics/multislice.py: wave propagation in slices)
    multislice_slices: int = 40  # slices through the pillar layer
    multislice_step_nm: float = 10.0  # wavelength sub-grid of the layer solve, interpolated to every sample
    multislice_grid: int = N_PIX  # lateral samples per side inside the layer (a multiple or divisor of 128)

    def __post_init__(self):
        if self.fidelity not in FIDELITIES:
            raise ConfigError(f"physics fidelity must be one of {FIDELITIES}, got {self.fidelity!r}")
        for name in ("period_um", "height_um", "n_substrate", "cauchy_a", "n_low", "multislice_step_nm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"physics {name} must be positive, got {getattr(self, name)}")
        if self.depth_um < 0 or self.multislice_slices < 1:
            raise ConfigError(f"physics depth_um must be >= 0 and multislice_slices >= 1, got {self.depth_um}, {self.multislice_slices}")
        g = self.multislice_grid
        if g < 8 or not (g % N_PIX == 0 or N_PIX % g == 0):
            raise ConfigError(f"physics multislice_grid must divide or be a multiple of {N_PIX}, got {g}")

    def n_high(self, lam_um):
        """Pillar index (Cauchy) at wavelengths in um."""
        return self.cauchy_a + self.cauchy_b / np.asarray(lam_um) ** 2

    def wavelengths_um(self) -> np.ndarray:
        return np.linspace(self.wavelength_min_nm, self.wavelength_max_nm, self.n_wavelengths) / 1000.0

    def to_dict(self) -> dict:
        return asdict(self)
