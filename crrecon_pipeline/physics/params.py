"""Geometry, materials and fidelity of the built-in simulator: one frozen dataclass whose defaults mirror the
research group's FDTD setup (docs/simulator.md). The CLI flags, the Dagster resource and the pretraining run
config are generated from its fields, so a default is written here only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from crrecon_pipeline.errors import ConfigError, Range, check_ranges
from crrecon_pipeline.grid import N_PIX, N_WAVELENGTHS

FIDELITIES = ("thin", "multislice", "rcwa")
RCWA_DEFAULT_ORDERS = 8


# The user's cell: geometry and materials (the simulator resource, `crrecon simulate` flags, pretraining overrides).
GEOMETRY = ("period_um", "height_um", "depth_um", "n_substrate", "cauchy_a", "cauchy_b")
# How finely the multi-slice and rcwa fidelities resolve the layer (the pretraining rows use a coarse setting).
RESOLUTION = ("multislice_slices", "multislice_grid", "multislice_step_nm", "rcwa_orders", "rcwa_step_nm")
# What a user sets for the built-in simulator: the simulator resource's fields and `crrecon simulate`'s flags.
SIMULATOR_FIELDS = ("fidelity", *GEOMETRY, *RESOLUTION)


def _help(text: str, **more) -> dict:
    return {"help": text, **more}


@dataclass(frozen=True)
class PhysicsParams:
    """Geometry and materials; the defaults mirror the research group's FDTD setup (docs/simulator.md)."""

    period_um: float = field(default=2.0, metadata=_help(
        "unit cell period L (um): 2 x 2 Bayer pixels of 1 um", range=Range(0, 100, lo_open=True)))
    height_um: float = field(default=0.6, metadata=_help("pillar height h (um)", range=Range(0, 100, lo_open=True)))
    depth_um: float = field(default=2.5, metadata=_help(
        "detector depth z below the pillars (um)", range=Range(0, 1000)))
    n_substrate: float = field(default=1.0, metadata=_help(
        "index n_s of the medium below the pillars (air)", range=Range(0, 10, lo_open=True)))
    cauchy_a: float = field(default=1.996, metadata=_help(
        "pillar index n = A + B / lambda^2 (lambda in um): A (SiN)", range=Range(0, 10, lo_open=True)))
    cauchy_b: float = field(default=0.0166, metadata=_help(
        "pillar index n = A + B / lambda^2: B (um^2)", range=Range(-1, 1)))
    n_low: float = field(default=1.0, metadata=_help("index where the pattern is 0", range=Range(0, 10, lo_open=True)))
    wavelength_min_nm: float = field(default=400.0, metadata=_help(
        "first simulated wavelength (nm)", range=Range(0, 100_000, lo_open=True)))
    wavelength_max_nm: float = field(default=700.0, metadata=_help(
        "last simulated wavelength (nm)", range=Range(0, 100_000, lo_open=True)))
    n_wavelengths: int = field(default=N_WAVELENGTHS, metadata=_help("wavelength samples", range=Range(2, 100_000)))
    fidelity: str = field(default="thin", metadata=_help(
        "thin element (fast), multi-slice wave propagation through the layer (closer to rigorous solvers) or rcwa "
        "(rigorous vector Maxwell: the Fourier modal method; slow, for small rigorous sets)",
        choices=FIDELITIES))
    multislice_slices: int = field(default=40, metadata=_help(
        "slices through the pillar layer (multislice)", range=Range(1, 10_000)))
    multislice_step_nm: float = field(default=10.0, metadata=_help(
        "wavelength sub-grid of the layer solve in nm, interpolated to every sample (multislice)",
        range=Range(0, 1000, lo_open=True)))
    multislice_grid: int = field(default=N_PIX, metadata=_help(
        "lateral samples per side in the layer, a multiple or divisor of 128 (multislice; 32 makes cheap rows)",
        range=Range(8, 4096)))
    rcwa_orders: int = field(default=RCWA_DEFAULT_ORDERS, metadata=_help(
        "Fourier orders |m|, |n| <= N kept in the layer, (2N+1)^2 of them (rcwa; cost ~ N^6, must cover the "
        "propagating orders)", range=Range(1, 40)))
    rcwa_step_nm: float = field(default=10.0, metadata=_help(
        "wavelength sub-grid of the layer solve in nm, interpolated to every sample (rcwa)",
        range=Range(0, 1000, lo_open=True)))

    def __post_init__(self):
        if self.fidelity not in FIDELITIES:
            raise ConfigError(f"physics fidelity must be one of {FIDELITIES}, got {self.fidelity!r}")
        check_ranges(self, "physics")
        for name in ("period_um", "height_um", "n_substrate", "cauchy_a", "n_low", "multislice_step_nm",
                     "rcwa_step_nm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"physics {name} must be positive, got {getattr(self, name)}")
        if self.depth_um < 0 or self.multislice_slices < 1:
            raise ConfigError(f"physics depth_um must be >= 0 and multislice_slices >= 1, "
                              f"got {self.depth_um}, {self.multislice_slices}")
        g = self.multislice_grid
        if g < 8 or not (g % N_PIX == 0 or N_PIX % g == 0):
            raise ConfigError(f"physics multislice_grid must divide or be a multiple of {N_PIX}, got {g}")
        if self.fidelity == "rcwa" and self.rcwa_orders < self.propagating_order_bound():
            raise ConfigError(f"physics rcwa_orders={self.rcwa_orders}: fewer than the orders that propagate at "
                              f"{self.wavelength_min_nm:g} nm in this cell (|m| up to {self.propagating_order_bound()}"
                              f"); give at least that many")

    def propagating_order_bound(self) -> int:
        """Largest |m| that can propagate above or below the layer at the shortest wavelength (rcwa's minimum)."""
        return int(np.floor(self.period_um * max(1.0, self.n_substrate) * 1000.0 / self.wavelength_min_nm))

    def n_high(self, lam_um):
        """Pillar index (Cauchy) at wavelengths in um."""
        return self.cauchy_a + self.cauchy_b / np.asarray(lam_um) ** 2

    def wavelengths_um(self) -> np.ndarray:
        return np.linspace(self.wavelength_min_nm, self.wavelength_max_nm, self.n_wavelengths) / 1000.0

    def to_dict(self) -> dict:
        return asdict(self)
