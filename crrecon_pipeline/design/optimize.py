"""Inverse design with the surrogate: all N designs in one tensor, Adam on a latent.

Parameterization: latent (N, 128, 128) in [-1, 1] -> (A + A^T)/2 (so G1 = G2) -> periodic Gaussian blur (the
generator's, a smooth boundary) -> tanh(beta * field), beta rising geometrically -> surrogate -> -objective
(design/objective.py: band_mean or min_band). The final structure is field > 0, filtered to the minimum length scale
`min_feature_px` where a small morphological filter can (design/lengthscale.py): exactly binary and exactly
diagonal-symmetric; its surrogate score is the reported predicted_efficiency. Starts: the generator's rows, or given
structures (the next round of the active-learning loop starts from the previous round's best).

`climb` is the loop itself, whatever scores the designs: `optimize` puts the surrogate there, and
`optimize_through_simulator` the simulator with its exact gradient (the physics optimum designs are measured
against)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from crrecon_pipeline.data.transforms import to_bayer
from crrecon_pipeline.design.lengthscale import LengthScales, enforce_length_scale, length_scales
from crrecon_pipeline.design.objective import OBJECTIVES, smooth_objective
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.physics.bands import DEFAULT_BANDS, Band, routing_efficiency
from crrecon_pipeline.physics.params import FIDELITIES, PhysicsParams
from crrecon_pipeline.physics.structures import StructureGenerator, StructureParams, _periodic_gaussian
from crrecon_pipeline.settings import Settings
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.inference import predict

ProgressFn = Callable[[int], None]
# What a user sets for a design run (the design run config's fields and `crrecon design`'s flags); the bands are
# given as edges and weights (physics.bands.bayer_bands).
DESIGN_FIELDS = ("designs", "steps", "seed", "lr", "beta_start", "beta_end", "blur_sigma_px", "objective",
                 "min_feature_px", "verify_fidelity")
RECORDED = "recorded"  # verify_fidelity: the fidelity the training data was simulated with (its simulation.json)


VERIFY_FIDELITIES = (RECORDED, *FIDELITIES)


class DesignSettings(Settings):
    """An inverse-design run: how many designs, the optimizer and its sharpness schedule, the objective, the
    minimum length scale, the verification fidelity and the bands scored."""

    OWNER = "design"

    designs: int = Field(8, ge=1, le=4096, description="structures optimized together, from random starts")
    steps: int = Field(100, ge=1, le=1_000_000, description="Adam steps on the latent density")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="random starts (the generator's rows 0..designs-1 of this "
                                                          "seed)")
    lr: float = Field(0.05, gt=0, le=100, description="Adam learning rate on the latent")
    beta_start: float = Field(4.0, gt=0, le=1e6, description="tanh sharpness at the first step (geometric schedule)")
    beta_end: float = Field(128.0, gt=0, le=1e6, description="tanh sharpness at the last step")
    blur_sigma_px: float = Field(3.0, ge=0, le=64, description="smoothness of the design's boundary (periodic "
                                                               "Gaussian blur of the latent, pixels)")
    objective: Literal[OBJECTIVES] = Field(  # type: ignore[valid-type]
        "band_mean", description="what the designs maximize: band_mean (weighted mean of the B, G, R band "
                                 "efficiencies) or min_band (the smallest band efficiency, invrs-gym's Bayer metric); "
                                 "both are reported")
    min_feature_px: int = Field(4, ge=0, le=64, description="minimum solid and void length scale (pixels; 128 px = "
                                "one period) a design must have to count; the final structures are filtered towards "
                                "it; 0: off")
    verify_fidelity: Literal[VERIFY_FIDELITIES] = Field(  # type: ignore[valid-type]
        RECORDED, description="simulator fidelity the designs are verified with; recorded: the training data's own "
                              "(its simulation.json)")
    bands: tuple[Band, ...] = Field(DEFAULT_BANDS, description="the Bayer bands scored (physics.bands.bayer_bands)")

    @model_validator(mode="after")
    def _schedule(self) -> DesignSettings:
        if self.beta_start > self.beta_end:
            raise ConfigError(f"design.beta_start={self.beta_start!r}: must be <= beta_end ({self.beta_end!r})")
        return self

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


def initial_latent(n: int, seed: int, start: np.ndarray | None = None) -> np.ndarray:
    """(n, 128, 128) +-1 latents: the given start structures (cycled to n rows), or random starts in the
    generator's style (its rows 0..n-1 of `seed`)."""
    if start is None:
        structures, _ = StructureGenerator(StructureParams(), seed).rows(0, n)
    else:
        start = np.asarray(start).reshape(-1, N_PIX, N_PIX)
        if not len(start):
            raise ConfigError("design: no start structures given")
        structures = start[np.arange(n) % len(start)]
    return (structures != 0).astype(np.float32) * 2 - 1


@dataclass
class DesignResult:
    structures: np.ndarray  # (N, 128, 128) uint8 {0, 1}
    predicted: np.ndarray  # (N, 2, 2, L) surrogate spectra of the binary structures
    predicted_efficiency: np.ndarray  # (N,)
    initial_efficiency: np.ndarray  # (N,) surrogate score of the binary starting structures
    scales: LengthScales  # solid and void length scales of the final structures (pixels)
    history: list[dict] = field(default_factory=list)  # per step: beta, mean/max projected objective


SpectraFn = Callable[[torch.Tensor], torch.Tensor]  # x (N, 128, 128) in (-1, 1) -> Bayer spectra (N, 2, 2, L)


def climb(spectra_of: SpectraFn, wavelengths_nm: np.ndarray, settings: DesignSettings, start: np.ndarray,
          device: torch.device, progress: ProgressFn | None = None) -> tuple[np.ndarray, list[dict]]:
    """Adam on the latent of all N designs at once, whatever scores them (the surrogate or the simulator itself):
    (binary structures (N, 128, 128) uint8 before the length-scale filter, history per step)."""
    latent = torch.tensor(start, device=device, requires_grad=True)
    to_field = DensityField(settings.blur_sigma_px, device)
    opt = torch.optim.Adam([latent], lr=settings.lr)
    history = []
    for step, beta in enumerate(settings.betas()):
        x = torch.tanh(float(beta) * to_field(latent))  # in (-1, 1); binary as beta grows
        eff = smooth_objective(spectra_of(x), wavelengths_nm, settings.bands, settings.objective)
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
        return (to_field(latent) > 0).to(torch.uint8).cpu().numpy(), history


def optimize(model: torch.nn.Module, config: RunConfig, wavelengths_nm: np.ndarray, settings: DesignSettings,
             progress: ProgressFn | None = None, start: np.ndarray | None = None) -> DesignResult:
    """Adam on the latent of all N designs at once through the frozen surrogate; deterministic per seed (and
    start structures)."""
    dev = next(model.parameters()).device
    pm1 = config.data.map_to_pm1
    model.eval().requires_grad_(False)
    start = initial_latent(settings.designs, settings.seed, start)

    def spectra_of(x: torch.Tensor) -> torch.Tensor:
        return model((x if pm1 else (x + 1) / 2).unsqueeze(1)).float()

    structures, history = climb(spectra_of, wavelengths_nm, settings, start, dev, progress)
    with torch.no_grad():
        starts = (DensityField(settings.blur_sigma_px, dev)(torch.as_tensor(start, device=dev)) > 0)
    starts = starts.to(torch.uint8).cpu().numpy()
    structures = enforce_length_scale(structures, settings.min_feature_px)
    predicted = predict(model, config, structures)
    return DesignResult(structures, predicted, routing_efficiency(predicted, wavelengths_nm, settings.bands),
                        routing_efficiency(predict(model, config, starts), wavelengths_nm, settings.bands),
                        length_scales(structures), history)


def optimize_through_simulator(physics: PhysicsParams, settings: DesignSettings, device: str = "cpu",
                               progress: ProgressFn | None = None,
                               start: np.ndarray | None = None) -> tuple[np.ndarray, list[dict]]:
    """The same optimization with the simulator's own exact gradient in place of the surrogate: (structures
    (N, 128, 128) uint8, filtered to the length scale like the surrogate's designs, history).

    Why: it is the reference a surrogate design is measured against. What this parameterization and this physics
    allow at best is what no surrogate can beat, so a loop that stops short of a target can be told apart from a
    target the physics does not reach. The thin fidelity costs about as much as the surrogate; multislice more
    (every slice is differentiated); rcwa is too slow for it on a CPU."""
    from crrecon_pipeline.physics.simulate import FIDELITY_PLANS, make_plan  # the simulator only for this reference

    dev = torch.device(device)
    plan = make_plan(physics, dev)
    power = FIDELITY_PLANS[physics.fidelity].power
    wavelengths_nm = physics.wavelengths_um() * 1000.0

    def spectra_of(x: torch.Tensor) -> torch.Tensor:
        return to_bayer(power((x + 1) / 2, plan))  # (N, 3, W) R, G, B -> (N, 2, 2, W)

    start = initial_latent(settings.designs, settings.seed, start)
    structures, history = climb(spectra_of, wavelengths_nm, settings, start, dev, progress)
    return enforce_length_scale(structures, settings.min_feature_px), history
