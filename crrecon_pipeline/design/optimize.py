"""Inverse design with the surrogate: all N designs in one tensor, Adam on a latent.

Parameterization: latent (N, 128, 128) in [-1, 1] -> (A + A^T)/2 (so G1 = G2) -> periodic Gaussian blur (the
generator's, a minimum feature size) -> tanh(beta * field), beta rising geometrically -> surrogate ->
-efficiency (physics.bands). The final structure is field > 0: exactly binary and exactly diagonal-symmetric; its
surrogate score is the reported predicted_efficiency."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from crrecon_pipeline.errors import ConfigError, check_ranges, ranged
from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.bands import DEFAULT_BANDS, Band, routing_efficiency
from crrecon_pipeline.physics.structures import StructureGenerator, StructureParams, _periodic_gaussian
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.inference import predict

ProgressFn = Callable[[int], None]
# What a user sets for a design run (the design run config's fields and `crrecon design`'s flags); the bands are
# given as edges and weights (physics.bands.bayer_bands).
DESIGN_FIELDS = ("designs", "steps", "seed", "lr", "beta_start", "beta_end", "blur_sigma_px")


@dataclass(frozen=True)
class DesignSettings:
    designs: int = field(default=8, metadata=ranged("structures optimized together, from random starts", 1, 4096))
    steps: int = field(default=100, metadata=ranged("Adam steps on the latent density", 1, 1_000_000))
    seed: int = field(default=0, metadata=ranged(
        "random starts (the generator's rows 0..designs-1 of this seed)", 0, 2**63 - 1))
    lr: float = field(default=0.05, metadata=ranged("Adam learning rate on the latent", 0, 100, lo_open=True))
    beta_start: float = field(default=4.0, metadata=ranged(
        "tanh sharpness at the first step (geometric schedule)", 0, 1e6, lo_open=True))
    beta_end: float = field(default=128.0, metadata=ranged("tanh sharpness at the last step", 0, 1e6, lo_open=True))
    blur_sigma_px: float = field(default=3.0, metadata=ranged(
        "minimum feature size (periodic Gaussian blur, pixels)", 0, 64))
    bands: tuple[Band, ...] = DEFAULT_BANDS

    def __post_init__(self):
        check_ranges(self, "design")
        if self.designs < 1 or self.steps < 1:
            raise ConfigError(f"need designs >= 1 and steps >= 1, got designs={self.designs}, steps={self.steps}")
        if not 0 < self.beta_start <= self.beta_end or self.lr <= 0 or self.blur_sigma_px < 0:
            raise ConfigError("need 0 < beta_start <= beta_end, lr > 0 and blur_sigma_px >= 0")

    def betas(self) -> np.ndarray:
        return np.geomspace(self.beta_start, self.beta_end, self.steps)


class DensityField:
    """latent (N, 128, 128) -> a smooth, exactly diagonal-symmetric field whose sign is the structure."""

    def __init__(self, blur_sigma_px: float, device: torch.device):
        self.blur = torch.as_tensor(_periodic_gaussian(N_PIX, blur_sigma_px), dtype=torch.float32, device=device)

    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        a = 0.5 * (latent + latent.transpose(-1, -2))
        f = self.blur @ a @ self.blur.T
        return 0.5 * (f + f.transpose(-1, -2))  # exact in floating point, so the threshold is symmetric too


def initial_latent(n: int, seed: int) -> np.ndarray:
    """Random starts in the generator's style: its structures (rows 0..n-1 of `seed`) as +-1 latents."""
    structures, _ = StructureGenerator(StructureParams(), seed).rows(0, n)
    return structures.astype(np.float32) * 2 - 1


@dataclass
class DesignResult:
    structures: np.ndarray  # (N, 128, 128) uint8 {0, 1}
    predicted: np.ndarray  # (N, 2, 2, L) surrogate spectra of the binary structures
    predicted_efficiency: np.ndarray  # (N,)
    initial_efficiency: np.ndarray  # (N,) surrogate score of the binary starting structures
    history: list[dict] = field(default_factory=list)  # per step: beta, mean/max projected efficiency


def optimize(model: torch.nn.Module, config: RunConfig, wavelengths_nm: np.ndarray, settings: DesignSettings,
             progress: ProgressFn | None = None) -> DesignResult:
    """Adam on the latent of all N designs at once through the frozen surrogate; deterministic per seed."""
    dev = next(model.parameters()).device
    pm1 = config.data.map_to_pm1
    model.eval().requires_grad_(False)
    start = initial_latent(settings.designs, settings.seed)
    latent = torch.tensor(start, device=dev, requires_grad=True)
    to_field = DensityField(settings.blur_sigma_px, dev)
    opt = torch.optim.Adam([latent], lr=settings.lr)
    history = []
    for step, beta in enumerate(settings.betas()):
        x = torch.tanh(float(beta) * to_field(latent))  # in (-1, 1); binary as beta grows
        eff = routing_efficiency(model((x if pm1 else (x + 1) / 2).unsqueeze(1)).float(), wavelengths_nm,
                                 settings.bands)
        opt.zero_grad(set_to_none=True)
        (-eff.sum()).backward()  # designs do not interact (per-sample norms), so each gets its own gradient
        opt.step()
        with torch.no_grad():
            latent.clamp_(-1.0, 1.0)
            history.append({"step": step, "beta": float(beta), "mean_efficiency": float(eff.mean()),
                            "max_efficiency": float(eff.max())})
        if progress:
            progress(1)
    with torch.no_grad():
        structures = (to_field(latent) > 0).to(torch.uint8).cpu().numpy()
        starts = (to_field(torch.as_tensor(start, device=dev)) > 0).to(torch.uint8).cpu().numpy()
    predicted = predict(model, config, structures)
    return DesignResult(structures, predicted, routing_efficiency(predicted, wavelengths_nm, settings.bands),
                        routing_efficiency(predict(model, config, starts), wavelengths_nm, settings.bands), history)
