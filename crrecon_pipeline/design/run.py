"""One design run end to end (the CLI's `crrecon design`, the designed_structures and design_round assets and each
round of the active-learning loop): load the surrogate, optimize, measure the length scales, verify by simulation,
write the designs as a raw shard with their figures and a JSON summary.

A design counts (may be the best) only when its minimum length scale meets `min_feature_px`; designs are ranked by
the run's objective, simulated where verified."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crrecon_pipeline.data.npyio import save_atomic, write_text_atomic
from crrecon_pipeline.data.prepared import Prepared, load_prepared
from crrecon_pipeline.data.rawfiles import STRUCTURE_RE, spectra_path, structure_path
from crrecon_pipeline.design.objective import min_band_efficiency, objective_value
from crrecon_pipeline.design.optimize import DesignResult, DesignSettings, ProgressFn, optimize
from crrecon_pipeline.design.summary import DesignRecord, DesignSummary
from crrecon_pipeline.design.verify import (
    Recorded,
    prepare_settings_of,
    recorded_simulation,
    simulated_bayer,
    training_best,
    verification_settings,
)
from crrecon_pipeline.errors import ConfigError, DataError
from crrecon_pipeline.physics.bands import band_efficiencies, routing_efficiency
from crrecon_pipeline.physics.shards import SimulationSettings
from crrecon_pipeline.train.inference import load_model


def next_shard_index(out_dir: Path) -> int:
    taken = ([int(m.group(1)) for p in out_dir.iterdir() if (m := STRUCTURE_RE.match(p.name))]
             if out_dir.is_dir() else [])
    return max(taken) + 1 if taken else 0


def target_shard(out_dir: Path, shard_index: int | None) -> int:
    """The shard index the designs are written as: the next free one in OUT, or the one asked for if free."""
    k = next_shard_index(out_dir) if shard_index is None else int(shard_index)
    if k < 0:
        raise ConfigError(f"--shard-index must be >= 0, got {k}")
    for path in (structure_path(out_dir, k), spectra_path(out_dir, k)):
        if path.exists():
            raise DataError(f"{path}: already exists; choose another --shard-index")
    return k


def design_records(result: DesignResult, simulated, sim_eff, lam: np.ndarray,
                   settings: DesignSettings) -> list[DesignRecord]:
    """One record per design: predicted (and simulated) efficiency overall, per band and as the min-band metric,
    the solid / void length scales, whether it counts, its fill."""
    bands = settings.bands

    def number(x, i):
        return None if x is None else round(float(x[i]), 6)

    def per_band(bayer):
        return dict(zip([b.name for b in bands], np.round(band_efficiencies(bayer, lam, bands), 6).tolist()))

    pred_min = min_band_efficiency(result.predicted, lam, bands)
    sim_min = None if simulated is None else min_band_efficiency(simulated, lam, bands)
    scales = result.scales
    return [DesignRecord(index=i, predicted_efficiency=number(result.predicted_efficiency, i),
                         simulated_efficiency=number(sim_eff, i),
                         predicted_min_band=number(pred_min, i), simulated_min_band=number(sim_min, i),
                         min_feature_px=int(scales.minimum[i]), solid_px=int(scales.solid[i]),
                         void_px=int(scales.void[i]), counted=bool(scales.minimum[i] >= settings.min_feature_px),
                         initial_predicted_efficiency=number(result.initial_efficiency, i),
                         fill=round(float(result.structures[i].mean()), 4),
                         predicted_bands=per_band(result.predicted[i]),
                         simulated_bands=None if simulated is None else per_band(simulated[i]))
            for i in range(len(result.structures))]


def ranking(designs: list[DesignRecord], scores: np.ndarray) -> np.ndarray:
    """Design indices best first: the designs that count (meet min_feature_px) by score, then the others."""
    counted = np.array([d.counted for d in designs])
    return np.lexsort((-np.asarray(scores, dtype=float), ~counted))


def draw_designs(out_dir: Path, result: DesignResult, designs: list[DesignRecord], rank: np.ndarray, simulated,
                 lam: np.ndarray, best_train: float) -> None:
    """designs.png (the best four: simulated solid vs surrogate dashed) and design_progress.png."""
    from crrecon_pipeline.plots import plot_design_progress, plot_predictions  # matplotlib only when drawing

    show = rank[: min(4, len(rank))]
    labels = [f"design {i}: predicted {designs[i].predicted_efficiency:.3f}"
              + (f", simulated {designs[i].simulated_efficiency:.3f}" if simulated is not None else "")
              + ("" if designs[i].counted else f" (features {designs[i].min_feature_px} px: not counted)")
              for i in show]
    title = ("Designs: simulated (solid) vs surrogate (dashed)" if simulated is not None
             else "Designs: surrogate prediction (not simulated)")
    plot_predictions(result.structures[show], (simulated if simulated is not None else result.predicted)[show],
                     result.predicted[show] if simulated is not None else None, lam, out_dir / "designs.png",
                     title=title, labels=labels)
    plot_design_progress(result.history, out_dir / "design_progress.png", reference=best_train)


def run_design(checkpoint: str | Path, prepared_dir: str | Path, out_dir: str | Path, settings: DesignSettings,
               shard_index: int | None = None, device: str = "auto", progress: ProgressFn | None = None,
               versions: dict | None = None, **more) -> DesignSummary:
    """Design, verify, and write OUT: binary_dataset_128_<k>.npy (+ spectra_latest_<k>.npy when simulated),
    designs.png and designs.json. Returns the summary (designs.json's content). `versions` ({shard: version})
    picks the prepared data the model trained on (default: each shard's LATEST). `more`: design_on's options."""
    prepared = load_prepared(prepared_dir, versions)
    return design_on(checkpoint, prepared, Path(prepared_dir).resolve(), out_dir, settings, shard_index, device,
                     progress, **more)


@dataclass(frozen=True)
class Verification:
    """How a design run is verified, settled before the optimization (a bad record fails fast): the recorded
    simulator settings with their check, and the settings the designs are simulated with (None: not simulated)."""

    recorded: Recorded
    settings: SimulationSettings | None

    @property
    def fidelity(self) -> str | None:
        return None if self.settings is None else self.settings.physics.fidelity


def verification_of(prepared: Prepared, settings: DesignSettings, require_verified: bool) -> Verification:
    """The run's verification. require_verified (the loop): no usable record is one line (DataError), and the
    designs must be simulated by the training data's own simulator (ConfigError otherwise)."""
    recorded = recorded_simulation(prepared)
    if require_verified and recorded.settings is None:
        raise DataError(f"verification failed, nothing added: {recorded.reason}")
    sim_settings = None if recorded.settings is None else verification_settings(recorded.settings,
                                                                                 settings.verify_fidelity)
    if require_verified and sim_settings.physics != recorded.settings.physics:
        raise ConfigError(f"design.verify_fidelity={settings.verify_fidelity}: the loop's new shard must come from the "
                          f"training data's simulator ({recorded.settings.physics.fidelity}); verify with 'recorded'")
    return Verification(recorded, sim_settings)


@dataclass(frozen=True)
class Designed:
    """The optimized designs, simulated when verified: raw negative spectra and Bayer spectra (None: not
    simulated), their records and ranking."""

    result: DesignResult
    raw: np.ndarray | None
    simulated: np.ndarray | None
    designs: list[DesignRecord]
    rank: np.ndarray


def optimize_and_simulate(model, config, prepared: Prepared, settings: DesignSettings, verification: Verification,
                          progress: ProgressFn | None, start: np.ndarray | None) -> Designed:
    lam = prepared.wavelengths_nm
    result = optimize(model, config, lam, settings, progress, start)
    raw = simulated = sim_eff = None
    if verification.settings is not None:
        raw, simulated = simulated_bayer(result.structures, verification.settings, prepare_settings_of(prepared))
        sim_eff = routing_efficiency(simulated, lam, settings.bands)
    designs = design_records(result, simulated, sim_eff, lam, settings)
    scores = objective_value(simulated if simulated is not None else result.predicted, lam, settings.bands,
                             settings.objective)
    return Designed(result, raw, simulated, designs, ranking(designs, scores))


def write_designs(out_dir: Path, k: int, designed: Designed, verification: Verification, lam: np.ndarray,
                  best_train: float, require_verified: bool) -> list[str]:
    """The figures, the loop's simulation.json, then the shard pair last and back to back (each file atomic), so
    OUT never holds a lone shard file for long. Returns the shard's files (structures, then spectra)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_designs(out_dir, designed.result, designed.designs, designed.rank, designed.simulated, lam, best_train)
    if require_verified:
        write_text_atomic(out_dir / "simulation.json", json.dumps(verification.settings.to_dict(), indent=2) + "\n")
    if designed.raw is not None:
        save_atomic(spectra_path(out_dir, k), designed.raw.astype(np.float32))
    save_atomic(structure_path(out_dir, k), designed.result.structures[:, None])
    return [str(structure_path(out_dir, k))] + ([str(spectra_path(out_dir, k))] if designed.raw is not None else [])


def design_on(checkpoint: str | Path, prepared: Prepared, prepared_name: str | Path, out_dir: str | Path,
              settings: DesignSettings, shard_index: int | None = None, device: str = "auto",
              progress: ProgressFn | None = None, start: np.ndarray | None = None, require_verified: bool = False,
              record: dict | None = None, reference: Prepared | None = None) -> DesignSummary:
    """run_design on loaded data. start: (S, 128, 128) structures the designs start from (default: the generator's
    rows). require_verified (the active-learning loop): a design run that cannot be verified is refused before
    anything is written (DataError, one line), and OUT gets the simulation.json the designs were simulated with, so
    it is a raw folder like any simulated one. record: extra lineage written into designs.json (who designed).
    reference: the data whose best structure the designs are compared with (default: `prepared`; the loop passes
    the data before any design shard)."""
    out_dir = Path(out_dir)
    k = target_shard(out_dir, shard_index)
    model, config = load_model(checkpoint, device)
    if config.data.out_len != prepared.bayer.shape[-1]:
        raise DataError(f"{checkpoint}: the model predicts {config.data.out_len} bins, "
                        f"{prepared_name} holds {prepared.bayer.shape[-1]}")
    verification = verification_of(prepared, settings, require_verified)
    best_train, best_row = training_best(reference or prepared, settings.bands)
    designed = optimize_and_simulate(model, config, prepared, settings, verification, progress, start)
    files = write_designs(out_dir, k, designed, verification, prepared.wavelengths_nm, best_train, require_verified)
    designs, rank = designed.designs, [int(i) for i in designed.rank]
    counted = [i for i in rank if designs[i].counted]
    summary = DesignSummary(
        designs=designs, objective=settings.objective, training_best_efficiency=round(best_train, 6),
        training_best_row=best_row, best_design=counted[0] if counted else None, rank=rank,
        counted_designs=len(counted), min_feature_px=settings.min_feature_px,
        verified=verification.settings is not None, verification=verification.recorded.reason,
        verify_fidelity=verification.fidelity, simulation_settings=verification.recorded.source,
        reproduction_error=verification.recorded.reproduction_error, shard_index=k, files=files,
        checkpoint=str(Path(checkpoint).resolve()), prepared=str(prepared_name), settings=settings,
        record=record or {}, history=designed.result.history, out=str(out_dir.resolve()))
    write_text_atomic(out_dir / "designs.json", json.dumps(summary.to_json(), indent=2) + "\n")
    return summary
