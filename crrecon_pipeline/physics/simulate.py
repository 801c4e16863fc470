"""The simulator's entry points, whatever the fidelity: a registry of fidelities (name -> plan builder, power
function), `make_plan`, `simulate_power` and `simulate_spectra` (the public API, raw format).

Adding a fidelity: its module here in physics/ (a plan builder and a power function over a {0,1} float32 batch),
its name in params.FIDELITIES and one line in FIDELITY_PLANS below."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from crrecon_pipeline.physics.fourier import binary_batch
from crrecon_pipeline.physics.multislice import make_multislice_plan, multislice_power
from crrecon_pipeline.physics.params import FIDELITIES, PhysicsParams
from crrecon_pipeline.physics.rcwa import make_rcwa_plan, rcwa_power
from crrecon_pipeline.physics.thin import make_thin_plan, thin_power


@dataclass(frozen=True)
class Fidelity:
    """How one fidelity simulates: build its plan once (geometry, wavelengths, device), then power per batch."""

    make_plan: Callable  # (PhysicsParams, device) -> plan with .params and .device
    power: Callable  # ({0,1} float32 (B, 128, 128) on plan.device, plan) -> (B, 3, W) float32, positive


FIDELITY_PLANS = {
    "thin": Fidelity(make_thin_plan, thin_power),
    "multislice": Fidelity(make_multislice_plan, multislice_power),
    "rcwa": Fidelity(make_rcwa_plan, rcwa_power),
}
assert tuple(FIDELITY_PLANS) == FIDELITIES, "params.FIDELITIES names the registered fidelities"


def make_plan(params: PhysicsParams | None = None, device: str | torch.device = "cpu"):
    """Everything of params.fidelity that does not depend on the structure: built once, reused for every batch."""
    params = params or PhysicsParams()
    return FIDELITY_PLANS[params.fidelity].make_plan(params, device)


def simulate_power(structures, plan=None) -> torch.Tensor:
    """Positive power fractions (B, 3, n_wavelengths) float32 for binary structures (B, [1,] 128, 128)."""
    plan = plan or make_plan()
    return FIDELITY_PLANS[plan.params.fidelity].power(binary_batch(structures, plan.device), plan)


def simulate_spectra(structures, params: PhysicsParams | None = None, plan=None, chunk: int = 256) -> np.ndarray:
    """Raw-format spectra (B, 3, 301) float32: NEGATIVE transmitted fractions of R, G, B (the research code's
    convention).

    The fidelity is params.fidelity (or the given plan's): thin element, multi-slice or rcwa."""
    if plan is None:
        plan = make_plan(params)
    structures = np.asarray(structures) if not torch.is_tensor(structures) else structures
    n = structures.shape[0]
    out = np.empty((n, 3, plan.params.n_wavelengths), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, chunk):
            out[start:start + chunk] = -simulate_power(structures[start:start + chunk], plan).cpu().numpy()
    return out
