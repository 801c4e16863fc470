"""Inverse design: the trained surrogate designs color routers, and the built-in simulator checks the designs.

Objective: the Bayer routing efficiency (invrs-gym's Bayer challenge, Zou et al. 2022): per band the fraction of
incident power reaching its own pixel(s) (R over 600-700 nm, G1 + G2 over 500-600 nm, B over 400-500 nm),
averaged over the bands. It is a fixed linear functional of the (.., 2, 2, L) Bayer spectra, so ONE function
scores predicted, simulated and training spectra alike (numpy or torch, differentiable).

Parameterization (all N designs in one tensor): latent (N, 128, 128) in [-1, 1] -> (A + A^T)/2 (so G1 = G2)
-> periodic Gaussian blur (the generator's, a minimum feature size) -> tanh(beta * field), beta rising
geometrically -> surrogate -> -efficiency, Adam on the latent. The final structure is field > 0: exactly binary
and exactly diagonal-symmetric; its surrogate score is the reported predicted_efficiency.

Verification: when the prepared data came from the built-in simulator, the raw folder holds simulation.json.
Its settings must reproduce a few training rows' spectra (so a stale or foreign record is never trusted); then
each design is simulated with exactly those settings and scored through the same binning as the training data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data import PrepareSettings, Prepared, bin_spectra, load_prepared, to_bayer
from .errors import ConfigError
from .inference import load_model, predict
from .npyio import DataError, save_atomic, write_text_atomic
from .physics import PhysicsParams, simulate_spectra
from .rawfiles import STRUCTURE_RE, spectra_path, structure_path
from .structures import N_PIX, StructureGenerator, StructureParams, _periodic_gaussian
from .synthetic import SimulationSettings

ProgressFn = Callable[[int], None]
REPRODUCE_TOLERANCE = 1e-4  # recorded settings must give the training spectra back to this (float32 noise ~1e-7)


# ---------------------------------------------------------------------------------------------------- objective

@dataclass(frozen=True)
class Band:
    """Wavelengths [lo_nm, hi_nm] (inclusive) whose power should reach `pixels` of the [[R, G1], [G2, B]] group."""

    name: str
    lo_nm: float
    hi_nm: float
    pixels: tuple[tuple[int, int], ...]
    weight: float = 1.0


def bayer_bands(edges_nm=(400.0, 500.0, 600.0, 700.0), weights=(1.0, 1.0, 1.0)) -> tuple[Band, ...]:
    """B over edges[0..1], G1 + G2 over edges[1..2], R over edges[2..3], with the given weights."""
    edges, weights = [float(e) for e in edges_nm], [float(w) for w in weights]
    if len(edges) != 4 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"band edges must be 4 increasing wavelengths (B|G|R boundaries), got {edges}")
    if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"band weights must be 3 non-negative numbers with a positive sum, got {weights}")
    return (Band("B", edges[0], edges[1], ((1, 1),), weights[0]),
            Band("G", edges[1], edges[2], ((0, 1), (1, 0)), weights[1]),
            Band("R", edges[2], edges[3], ((0, 0),), weights[2]))


DEFAULT_BANDS = bayer_bands()


def band_matrix(wavelengths_nm: np.ndarray, bands: tuple[Band, ...] = DEFAULT_BANDS) -> np.ndarray:
    """(n_bands, 2, 2, L): band b's efficiency = sum(W[b] * bayer), the mean over its wavelengths of the power
    reaching its own pixels."""
    lam = np.asarray(wavelengths_nm, dtype=np.float64)
    out = np.zeros((len(bands), 2, 2, len(lam)))
    for k, band in enumerate(bands):
        inside = (lam >= band.lo_nm) & (lam <= band.hi_nm)
        if not inside.any():
            raise ConfigError(f"band {band.name} ({band.lo_nm:g}-{band.hi_nm:g} nm) holds no wavelength of the grid "
                             f"({lam.min():g}-{lam.max():g} nm)")
        for a, b in band.pixels:
            out[k, a, b, inside] = 1.0 / inside.sum()
    return out


def band_efficiencies(bayer, wavelengths_nm: np.ndarray, bands: tuple[Band, ...] = DEFAULT_BANDS):
    """(..., 2, 2, L) Bayer spectra (positive power fractions) -> (..., n_bands); numpy in, numpy out; torch
    in, torch out (differentiable)."""
    w = band_matrix(wavelengths_nm, bands).reshape(len(bands), -1)
    if torch.is_tensor(bayer):
        return bayer.flatten(-3) @ torch.as_tensor(w.T, dtype=bayer.dtype, device=bayer.device)
    return np.asarray(bayer, dtype=np.float64).reshape(*np.shape(bayer)[:-3], -1) @ w.T


def routing_efficiency(bayer, wavelengths_nm: np.ndarray, bands: tuple[Band, ...] = DEFAULT_BANDS):
    """(..., 2, 2, L) -> (...): the band efficiencies averaged with the bands' weights. A uniform pattern
    (each pixel 1/4 of the incident power) scores (1/4 + 1/2 + 1/4) / 3 = 1/3 with the default bands."""
    weights = np.array([b.weight for b in bands]) / sum(b.weight for b in bands)
    per_band = band_efficiencies(bayer, wavelengths_nm, bands)
    if torch.is_tensor(per_band):
        return per_band @ torch.as_tensor(weights, dtype=per_band.dtype, device=per_band.device)
    return per_band @ weights


# ---------------------------------------------------------------------------------------------------- optimizer

@dataclass(frozen=True)
class DesignSettings:
    designs: int = 8
    steps: int = 100
    seed: int = 0
    lr: float = 0.05
    beta_start: float = 4.0  # tanh sharpness at the first step ...
    beta_end: float = 128.0  # ... and at the last (geometric schedule)
    blur_sigma_px: float = 3.0  # periodic Gaussian blur of the latent: the minimum feature size
    bands: tuple[Band, ...] = DEFAULT_BANDS

    def __post_init__(self):
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


def optimize(model: torch.nn.Module, config: dict, wavelengths_nm: np.ndarray, settings: DesignSettings,
             progress: ProgressFn | None = None) -> DesignResult:
    """Adam on the latent of all N designs at once through the frozen surrogate; deterministic per seed."""
    dev = next(model.parameters()).device
    pm1 = bool(config["data"].get("map_to_pm1", True))
    model.eval().requires_grad_(False)
    start = initial_latent(settings.designs, settings.seed)
    latent = torch.tensor(start, device=dev, requires_grad=True)
    to_field = DensityField(settings.blur_sigma_px, dev)
    opt = torch.optim.Adam([latent], lr=settings.lr)
    history = []
    for step, beta in enumerate(settings.betas()):
        x = torch.tanh(float(beta) * to_field(latent))  # in (-1, 1); binary as beta grows
        eff = routing_efficiency(model((x if pm1 else (x + 1) / 2).unsqueeze(1)).float(), wavelengths_nm, settings.bands)
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


# ---------------------------------------------------------------------------------------------------- verification

def _known(cls, values: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def settings_from_record(record: dict) -> SimulationSettings:
    """SimulationSettings from a simulation.json record. Extra keys (rows, shards, newer fields) are tolerated;
    SimulationSettings.from_dict is used where it exists so fields this module does not know still count."""
    keys = SimulationSettings().to_dict().keys()
    core = {k: record[k] for k in keys if k in record}
    if hasattr(SimulationSettings, "from_dict"):
        return SimulationSettings.from_dict(core)
    return SimulationSettings(seed=int(core.get("seed", 0)),
                              physics=PhysicsParams(**_known(PhysicsParams, core.get("physics", {}))),
                              structures=StructureParams(**_known(StructureParams, core.get("structures", {}))))


def prepare_settings_of(prepared: Prepared) -> PrepareSettings:
    return PrepareSettings(**_known(PrepareSettings, prepared.shards[0]["settings"]))


def simulated_bayer(structures: np.ndarray, settings: SimulationSettings, prep: PrepareSettings) -> tuple[np.ndarray, np.ndarray]:
    """(raw negative spectra (N, 3, W), Bayer spectra (N, 2, 2, bins)) exactly as the training data was made."""
    raw = simulate_spectra(structures, settings.physics)
    return raw, to_bayer(bin_spectra(-raw, prep))


@dataclass
class Recorded:
    settings: SimulationSettings | None
    reason: str  # why the designs are (not) simulated
    source: str | None = None  # the simulation.json used
    reproduction_error: float | None = None


def recorded_simulation(prepared: Prepared, rows: int = 8) -> Recorded:
    """The simulator settings the prepared data was made with, if any, checked by re-simulating `rows` rows."""
    raw_dirs = sorted({str(Path(r["raw_files"][0]).parent) for r in prepared.shards if r.get("raw_files")})
    if len(raw_dirs) != 1:
        return Recorded(None, f"prepared data comes from {len(raw_dirs)} raw folders; need exactly one with simulation.json")
    source = Path(raw_dirs[0]) / "simulation.json"
    if not source.parent.is_dir():
        return Recorded(None, f"{source.parent}: the raw folder the data was prepared from is not found "
                              f"(from {Path.cwd()}): designs not simulated")
    if not source.is_file():
        return Recorded(None, f"{source}: not found (data not from the built-in simulator): designs not simulated")
    try:
        settings = settings_from_record(json.loads(source.read_text()))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: unreadable simulator settings ({exc})") from None
    pick = np.unique(np.linspace(0, len(prepared) - 1, min(rows, len(prepared))).astype(int))
    _, bayer = simulated_bayer(prepared.structures[pick], settings, prepare_settings_of(prepared))
    error = float(np.abs(bayer - prepared.bayer[pick]).max())
    if not error <= REPRODUCE_TOLERANCE:
        return Recorded(None, f"{source}: these settings do not reproduce the training spectra (max difference "
                              f"{error:.3g} on {len(pick)} rows): designs not simulated", str(source), error)
    return Recorded(settings, f"simulated with {source} (reproduces the training spectra to {error:.1g})", str(source), error)


def training_best(prepared: Prepared, bands: tuple[Band, ...] = DEFAULT_BANDS) -> tuple[float, int]:
    """(best efficiency, row) over every prepared structure's true spectra, 180-degree twins included
    (rows >= M are twins of row - M)."""
    sets = [prepared.bayer] + ([prepared.rotated_bayer] if prepared.rotated_bayer is not None else [])
    eff = np.concatenate([routing_efficiency(np.asarray(b), prepared.wavelengths_nm, bands) for b in sets])
    best = int(np.argmax(eff))
    return float(eff[best]), best


# ---------------------------------------------------------------------------------------------------- the command

def next_shard_index(out_dir: Path) -> int:
    taken = [int(m.group(1)) for p in out_dir.iterdir() if (m := STRUCTURE_RE.match(p.name))] if out_dir.is_dir() else []
    return max(taken) + 1 if taken else 0


def run_design(checkpoint: str | Path, prepared_dir: str | Path, out_dir: str | Path, settings: DesignSettings,
               shard_index: int | None = None, device: str = "auto", progress: ProgressFn | None = None,
               versions: dict | None = None) -> dict:
    """Design, verify, and write OUT: binary_dataset_128_<k>.npy (+ spectra_latest_<k>.npy when simulated),
    designs.png and designs.json. Returns the summary (designs.json's content). `versions` ({shard: version})
    picks the prepared data the model trained on (default: each shard's LATEST)."""
    from .plots import plot_design_progress, plot_predictions

    out_dir = Path(out_dir)
    prepared = load_prepared(prepared_dir, versions)
    k = next_shard_index(out_dir) if shard_index is None else int(shard_index)
    if k < 0:
        raise ConfigError(f"--shard-index must be >= 0, got {k}")
    for path in (structure_path(out_dir, k), spectra_path(out_dir, k)):
        if path.exists():
            raise DataError(f"{path}: already exists; choose another --shard-index")
    model, ckpt = load_model(checkpoint, device)
    n_bins = int(ckpt["config"]["model"].get("params", {}).get("out_len", 30))
    if n_bins != prepared.bayer.shape[-1]:
        raise DataError(f"{checkpoint}: the model predicts {n_bins} bins, {prepared_dir} holds {prepared.bayer.shape[-1]}")
    lam = prepared.wavelengths_nm
    recorded = recorded_simulation(prepared)  # before the optimization: a bad record fails fast
    best_train, best_row = training_best(prepared, settings.bands)

    result = optimize(model, ckpt["config"], lam, settings, progress)
    raw = simulated = sim_eff = None
    if recorded.settings is not None:
        raw, simulated = simulated_bayer(result.structures, recorded.settings, prepare_settings_of(prepared))
        sim_eff = routing_efficiency(simulated, lam, settings.bands)

    def number(x, i):
        return None if x is None else round(float(x[i]), 6)

    def per_band(bayer):
        return dict(zip([b.name for b in settings.bands], np.round(band_efficiencies(bayer, lam, settings.bands), 6).tolist()))

    designs = []
    for i in range(settings.designs):
        d = {"index": i, "predicted_efficiency": number(result.predicted_efficiency, i),
             "simulated_efficiency": number(sim_eff, i), "initial_predicted_efficiency": number(result.initial_efficiency, i),
             "fill": round(float(result.structures[i].mean()), 4), "predicted_bands": per_band(result.predicted[i])}
        if simulated is not None:
            d["simulated_bands"] = per_band(simulated[i])
        designs.append(d)
    rank = np.argsort(-(sim_eff if sim_eff is not None else result.predicted_efficiency))

    show = rank[: min(4, len(rank))]
    labels = [f"design {i}: predicted {designs[i]['predicted_efficiency']:.3f}"
              + (f", simulated {designs[i]['simulated_efficiency']:.3f}" if sim_eff is not None else "") for i in show]
    title = ("Designs: simulated (solid) vs surrogate (dashed)" if simulated is not None
             else "Designs: surrogate prediction (not simulated)")
    plot_predictions(result.structures[show], (simulated if simulated is not None else result.predicted)[show],
                     result.predicted[show] if simulated is not None else None, lam, out_dir / "designs.png",
                     title=title, labels=labels)
    plot_design_progress(result.history, out_dir / "design_progress.png", reference=best_train)
    # the shard pair last and back to back (each file atomic), so OUT never holds a lone shard file for long
    if raw is not None:
        save_atomic(spectra_path(out_dir, k), raw.astype(np.float32))
    save_atomic(structure_path(out_dir, k), result.structures[:, None])
    summary = {
        "designs": designs,
        "training_best_efficiency": round(best_train, 6),
        "training_best_row": best_row,
        "best_design": int(rank[0]),
        "verified": recorded.settings is not None,
        "verification": recorded.reason,
        "simulation_settings": recorded.source,
        "reproduction_error": recorded.reproduction_error,
        "shard_index": k,
        "files": [str(structure_path(out_dir, k))] + ([str(spectra_path(out_dir, k))] if raw is not None else []),
        "checkpoint": str(Path(checkpoint).resolve()),
        "prepared": str(Path(prepared_dir).resolve()),
        "settings": asdict(settings),
        "history": result.history,
        "out": str(out_dir.resolve()),
    }
    write_text_atomic(out_dir / "designs.json", json.dumps(summary, indent=2) + "\n")
    return summary
