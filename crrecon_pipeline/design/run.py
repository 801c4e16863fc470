"""One design run end to end (the CLI's `crrecon design`, the designed_structures and design_round assets and each
round of the active-learning loop): load the surrogate, optimize, measure the length scales, verify by simulation,
write the designs as a raw shard with their figures and a JSON summary.

A design counts (may be the best) only when its minimum length scale meets `min_feature_px`; designs are ranked by
the run's objective, simulated where verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crrecon_pipeline.data.npyio import save_atomic, write_text_atomic
from crrecon_pipeline.data.prepared import Prepared, load_prepared
from crrecon_pipeline.data.rawfiles import STRUCTURE_RE, spectra_path, structure_path
from crrecon_pipeline.design.objective import min_band_efficiency, objective_value
from crrecon_pipeline.design.optimize import DesignResult, DesignSettings, ProgressFn, optimize
from crrecon_pipeline.design.verify import (
    prepare_settings_of,
    recorded_simulation,
    simulated_bayer,
    training_best,
    verification_settings,
)
from crrecon_pipeline.errors import ConfigError, DataError
from crrecon_pipeline.physics.bands import band_efficiencies, routing_efficiency
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


def design_records(result: DesignResult, simulated, sim_eff, lam: np.ndarray, settings: DesignSettings) -> list[dict]:
    """One JSON-ready record per design: predicted (and simulated) efficiency overall, per band and as the
    min-band metric, the solid / void length scales, whether it counts, its fill."""
    bands = settings.bands

    def number(x, i):
        return None if x is None else round(float(x[i]), 6)

    def per_band(bayer):
        return dict(zip([b.name for b in bands], np.round(band_efficiencies(bayer, lam, bands), 6).tolist()))

    pred_min = min_band_efficiency(result.predicted, lam, bands)
    sim_min = None if simulated is None else min_band_efficiency(simulated, lam, bands)
    scales = result.scales
    designs = []
    for i in range(len(result.structures)):
        d = {"index": i, "predicted_efficiency": number(result.predicted_efficiency, i),
             "simulated_efficiency": number(sim_eff, i),
             "predicted_min_band": number(pred_min, i), "simulated_min_band": number(sim_min, i),
             "min_feature_px": int(scales.minimum[i]), "solid_px": int(scales.solid[i]), "void_px": int(scales.void[i]),
             "counted": bool(scales.minimum[i] >= settings.min_feature_px),
             "initial_predicted_efficiency": number(result.initial_efficiency, i),
             "fill": round(float(result.structures[i].mean()), 4), "predicted_bands": per_band(result.predicted[i])}
        if simulated is not None:
            d["simulated_bands"] = per_band(simulated[i])
        designs.append(d)
    return designs


def ranking(designs: list[dict], scores: np.ndarray) -> np.ndarray:
    """Design indices best first: the designs that count (meet min_feature_px) by score, then the others."""
    counted = np.array([d["counted"] for d in designs])
    return np.lexsort((-np.asarray(scores, dtype=float), ~counted))


def draw_designs(out_dir: Path, result: DesignResult, designs: list[dict], rank: np.ndarray, simulated,
                 lam: np.ndarray, best_train: float) -> None:
    """designs.png (the best four: simulated solid vs surrogate dashed) and design_progress.png."""
    from crrecon_pipeline.plots import plot_design_progress, plot_predictions  # matplotlib only when drawing

    show = rank[: min(4, len(rank))]
    labels = [f"design {i}: predicted {designs[i]['predicted_efficiency']:.3f}"
              + (f", simulated {designs[i]['simulated_efficiency']:.3f}" if simulated is not None else "")
              + ("" if designs[i]["counted"] else f" (features {designs[i]['min_feature_px']} px: not counted)")
              for i in show]
    title = ("Designs: simulated (solid) vs surrogate (dashed)" if simulated is not None
             else "Designs: surrogate prediction (not simulated)")
    plot_predictions(result.structures[show], (simulated if simulated is not None else result.predicted)[show],
                     result.predicted[show] if simulated is not None else None, lam, out_dir / "designs.png",
                     title=title, labels=labels)
    plot_design_progress(result.history, out_dir / "design_progress.png", reference=best_train)


def run_design(checkpoint: str | Path, prepared_dir: str | Path, out_dir: str | Path, settings: DesignSettings,
               shard_index: int | None = None, device: str = "auto", progress: ProgressFn | None = None,
               versions: dict | None = None, **more) -> dict:
    """Design, verify, and write OUT: binary_dataset_128_<k>.npy (+ spectra_latest_<k>.npy when simulated),
    designs.png and designs.json. Returns the summary (designs.json's content). `versions` ({shard: version})
    picks the prepared data the model trained on (default: each shard's LATEST). `more`: design_on's options."""
    prepared = load_prepared(prepared_dir, versions)
    return design_on(checkpoint, prepared, Path(prepared_dir).resolve(), out_dir, settings, shard_index, device,
                     progress, **more)


def design_on(checkpoint: str | Path, prepared: Prepared, prepared_name: str | Path, out_dir: str | Path,
              settings: DesignSettings, shard_index: int | None = None, device: str = "auto",
              progress: ProgressFn | None = None, start: np.ndarray | None = None, require_verified: bool = False,
              record: dict | None = None, reference: Prepared | None = None) -> dict:
    """run_design on loaded data. start: (S, 128, 128) structures the designs start from (default: the generator's
    rows). require_verified (the active-learning loop): a design run that cannot be verified is refused before
    anything is written (DataError, one line), and OUT gets the simulation.json the designs were simulated with, so
    it is a raw folder like any simulated one. record: extra lineage written into designs.json (who designed).
    reference: the data whose best structure the designs are compared with (default: `prepared`; the loop passes
    the data before any design shard)."""
    out_dir = Path(out_dir)
    k = target_shard(out_dir, shard_index)
    model, config = load_model(checkpoint, device)
    n_bins = config.data.out_len
    if n_bins != prepared.bayer.shape[-1]:
        raise DataError(f"{checkpoint}: the model predicts {n_bins} bins, "
                        f"{prepared_name} holds {prepared.bayer.shape[-1]}")
    lam = prepared.wavelengths_nm
    recorded = recorded_simulation(prepared)  # before the optimization: a bad record fails fast
    if require_verified and recorded.settings is None:
        raise DataError(f"verification failed, nothing added: {recorded.reason}")
    sim_settings = None if recorded.settings is None else verification_settings(recorded.settings,
                                                                                 settings.verify_fidelity)
    if require_verified and sim_settings.physics != recorded.settings.physics:
        raise ConfigError(f"design.verify_fidelity={settings.verify_fidelity}: the loop's new shard must come from the "
                          f"training data's simulator ({recorded.settings.physics.fidelity}); verify with 'recorded'")
    best_train, best_row = training_best(reference or prepared, settings.bands)

    result = optimize(model, config, lam, settings, progress, start)
    raw = simulated = sim_eff = None
    if sim_settings is not None:
        raw, simulated = simulated_bayer(result.structures, sim_settings, prepare_settings_of(prepared))
        sim_eff = routing_efficiency(simulated, lam, settings.bands)
    designs = design_records(result, simulated, sim_eff, lam, settings)
    scores = objective_value(simulated if simulated is not None else result.predicted, lam, settings.bands,
                             settings.objective)
    rank = ranking(designs, scores)
    out_dir.mkdir(parents=True, exist_ok=True)
    draw_designs(out_dir, result, designs, rank, simulated, lam, best_train)
    if require_verified:
        write_text_atomic(out_dir / "simulation.json", json.dumps(sim_settings.to_dict(), indent=2) + "\n")
    # the shard pair last and back to back (each file atomic), so OUT never holds a lone shard file for long
    if raw is not None:
        save_atomic(spectra_path(out_dir, k), raw.astype(np.float32))
    save_atomic(structure_path(out_dir, k), result.structures[:, None])
    counted = [int(i) for i in rank if designs[i]["counted"]]
    summary = {
        "designs": designs,
        "objective": settings.objective,
        "training_best_efficiency": round(best_train, 6),
        "training_best_row": best_row,
        "best_design": counted[0] if counted else None,
        "rank": [int(i) for i in rank],
        "counted_designs": len(counted),
        "min_feature_px": settings.min_feature_px,
        "verified": sim_settings is not None,
        "verification": recorded.reason,
        "verify_fidelity": None if sim_settings is None else sim_settings.physics.fidelity,
        "simulation_settings": recorded.source,
        "reproduction_error": recorded.reproduction_error,
        "shard_index": k,
        "files": [str(structure_path(out_dir, k))] + ([str(spectra_path(out_dir, k))] if raw is not None else []),
        "checkpoint": str(Path(checkpoint).resolve()),
        "prepared": str(prepared_name),
        "settings": settings.model_dump(),
        "record": record or {},
        "history": result.history,
        "out": str(out_dir.resolve()),
    }
    write_text_atomic(out_dir / "designs.json", json.dumps(summary, indent=2) + "\n")
    return summary
