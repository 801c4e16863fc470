"""Geometry, materials and fidelity of the built-in simulator: one frozen settings class (settings.Settings) whose
defaults mirror the research group's FDTD setup (docs/simulator.md). The CLI flags, the Dagster resource and the
pretraining run config are generated from its fields, so a default or a range is written here only."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.grid import N_PIX, N_WAVELENGTHS
from crrecon_pipeline.settings import Settings

FIDELITIES = ("thin", "multislice", "rcwa")
RCWA_DEFAULT_ORDERS = 8


# The user's cell: geometry and materials (the simulator resource, `crrecon simulate` flags, pretraining overrides).
GEOMETRY = ("period_um", "height_um", "depth_um", "n_substrate", "cauchy_a", "cauchy_b")
# How finely the multi-slice and rcwa fidelities resolve the layer (the pretraining rows use a coarse setting).
RESOLUTION = ("multislice_slices", "multislice_grid", "multislice_step_nm", "rcwa_orders", "rcwa_step_nm")
# What a user sets for the built-in simulator: the simulator resource's fields and `crrecon simulate`'s flags.
SIMULATOR_FIELDS = ("fidelity", *GEOMETRY, *RESOLUTION)


class PhysicsParams(Settings):
    """Geometry and materials; the defaults mirror the research group's FDTD setup (docs/simulator.md)."""

    OWNER = "physics"

    period_um: float = Field(2.0, gt=0, le=100, description="unit cell period L (um): 2 x 2 Bayer pixels of 1 um")
    height_um: float = Field(0.6, gt=0, le=100, description="pillar height h (um)")
    depth_um: float = Field(2.5, ge=0, le=1000, description="detector depth z below the pillars (um)")
    n_substrate: float = Field(1.0, gt=0, le=10, description="index n_s of the medium below the pillars (air)")
    cauchy_a: float = Field(1.996, gt=0, le=10, description="pillar index n = A + B / lambda^2 (lambda in um): A (SiN)")
    cauchy_b: float = Field(0.0166, ge=-1, le=1, description="pillar index n = A + B / lambda^2: B (um^2)")
    n_low: float = Field(1.0, gt=0, le=10, description="index where the pattern is 0")
    wavelength_min_nm: float = Field(400.0, gt=0, le=100_000, description="first simulated wavelength (nm)")
    wavelength_max_nm: float = Field(700.0, gt=0, le=100_000, description="last simulated wavelength (nm)")
    n_wavelengths: int = Field(N_WAVELENGTHS, ge=2, le=100_000, description="wavelength samples")
    fidelity: Literal[FIDELITIES] = Field(  # type: ignore[valid-type]
        "thin", description="thin element (fast), multi-slice wave propagation through the layer (closer to rigorous "
                            "solvers) or rcwa (rigorous vector Maxwell: the Fourier modal method; slow, for small "
                            "rigorous sets)")
    multislice_slices: int = Field(40, ge=1, le=10_000, description="slices through the pillar layer (multislice)")
    multislice_step_nm: float = Field(10.0, gt=0, le=1000, description="wavelength sub-grid of the layer solve in nm, "
                                                                       "interpolated to every sample (multislice)")
    multislice_grid: int = Field(N_PIX, ge=8, le=4096, description="lateral samples per side in the layer, a multiple "
                                 "or divisor of 128 (multislice; 32 makes cheap rows)")
    rcwa_orders: int = Field(RCWA_DEFAULT_ORDERS, ge=1, le=40, description="Fourier orders |m|, |n| <= N kept in the "
                             "layer, (2N+1)^2 of them (rcwa; cost ~ N^6, must cover the propagating orders)")
    rcwa_step_nm: float = Field(10.0, gt=0, le=1000, description="wavelength sub-grid of the layer solve in nm, "
                                                                 "interpolated to every sample (rcwa)")

    @model_validator(mode="after")
    def _resolvable(self) -> PhysicsParams:
        g = self.multislice_grid
        if not (g % N_PIX == 0 or N_PIX % g == 0):
            raise ConfigError(f"physics.multislice_grid={g}: must divide or be a multiple of {N_PIX}")
        if self.fidelity == "rcwa" and self.rcwa_orders < self.propagating_order_bound():
            raise ConfigError(f"physics.rcwa_orders={self.rcwa_orders}: fewer than the orders that propagate at "
                              f"{self.wavelength_min_nm:g} nm in this cell (|m| up to {self.propagating_order_bound()}"
                              f"); give at least that many")
        return self

    def propagating_order_bound(self) -> int:
        """Largest |m| that can propagate above or below the layer at the shortest wavelength (rcwa's minimum)."""
        return int(np.floor(self.period_um * max(1.0, self.n_substrate) * 1000.0 / self.wavelength_min_nm))

    def n_high(self, lam_um):
        """Pillar index (Cauchy) at wavelengths in um."""
        return self.cauchy_a + self.cauchy_b / np.asarray(lam_um) ** 2

    def wavelengths_um(self) -> np.ndarray:
        return np.linspace(self.wavelength_min_nm, self.wavelength_max_nm, self.n_wavelengths) / 1000.0
