"""Verifying designs with the simulator that made the training data.

When the prepared data came from the built-in simulator, the raw folder holds simulation.json. Its settings must
reproduce a few training rows' spectra (so a stale or foreign record is never trusted); then each design is
simulated with exactly those settings and scored through the same binning as the training data. The check on a
design run (check_design_verified) is registered here in the style of data.checks.DATA_CHECKS."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import Field

from crrecon_pipeline.data.checks import CheckDef, CheckOutcome, Stage, by_stage
from crrecon_pipeline.data.prepared import Prepared
from crrecon_pipeline.data.transforms import PrepareSettings, bin_spectra, to_bayer
from crrecon_pipeline.design.summary import DesignSummary
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.physics.bands import DEFAULT_BANDS, Band, routing_efficiency
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings
from crrecon_pipeline.physics.simulate import make_plan, simulate_spectra
from crrecon_pipeline.physics.structures import StructureParams
from crrecon_pipeline.settings import Settings

REPRODUCE_TOLERANCE = 1e-4  # recorded settings must give the training spectra back to this (float32 noise ~1e-7)


def _known(cls, values: dict) -> dict:
    names = set(cls.model_fields)
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


@lru_cache(maxsize=4)
def _plan(physics: PhysicsParams):
    """The simulator's structure-independent plan, kept per physics: the loop verifies every round (and checks the
    record first) with the same settings, and building a plan costs seconds."""
    return make_plan(physics)


def simulated_bayer(structures: np.ndarray, settings: SimulationSettings,
                    prep: PrepareSettings) -> tuple[np.ndarray, np.ndarray]:
    """(raw negative spectra (N, 3, W), Bayer spectra (N, 2, 2, bins)) exactly as the training data was made."""
    raw = simulate_spectra(structures, plan=_plan(settings.physics))
    return raw, to_bayer(bin_spectra(-raw, prep))


@dataclass
class Recorded:
    settings: SimulationSettings | None
    reason: str  # why the designs are (not) simulated
    source: str | None = None  # the simulation.json used
    reproduction_error: float | None = None


def recorded_simulation(prepared: Prepared, rows: int = 8) -> Recorded:
    """The simulator settings the prepared data was made with, if any, checked by re-simulating `rows` rows.

    Every raw folder the shards come from must hold a simulation.json and all must record the same physics (the
    design-made shards of the active-learning loop sit in their own folder, with the record they were simulated
    with); the rows re-simulated are spread over all shards."""
    raw_dirs = sorted({str(Path(r["raw_files"][0]).parent) for r in prepared.shards if r.get("raw_files")})
    if not raw_dirs:
        return Recorded(None, "the prepared data names no raw folder: designs not simulated")
    found = []
    for folder in raw_dirs:
        source = Path(folder) / "simulation.json"
        if not source.parent.is_dir():
            return Recorded(None, f"{source.parent}: the raw folder the data was prepared from is not found "
                                  f"(from {Path.cwd()}): designs not simulated")
        if not source.is_file():
            return Recorded(None, f"{source}: not found (data not from the built-in simulator): designs not simulated")
        try:
            found.append((source, settings_from_record(json.loads(source.read_text()))))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: unreadable simulator settings ({exc})") from None
    source, settings = found[0]
    for other, theirs in found[1:]:
        if theirs.physics != settings.physics:
            return Recorded(None, f"{other}: records other physics than {source} (the prepared data mixes "
                                  "simulators): designs not simulated")
    pick = np.unique(np.linspace(0, len(prepared) - 1, min(rows, len(prepared))).astype(int))
    _, bayer = simulated_bayer(prepared.structures[pick], settings, prepare_settings_of(prepared))
    error = float(np.abs(bayer - prepared.bayer[pick]).max())
    if not error <= REPRODUCE_TOLERANCE:
        return Recorded(None, f"{source}: these settings do not reproduce the training spectra (max difference "
                              f"{error:.3g} on {len(pick)} rows): designs not simulated", str(source), error)
    return Recorded(settings, f"simulated with {source} (reproduces the training spectra to {error:.1g})",
                    str(source), error)


def verification_settings(recorded: SimulationSettings, fidelity: str) -> SimulationSettings:
    """The recorded settings with the verification fidelity chosen by the design run ("recorded": unchanged);
    any fidelity of physics.params.FIDELITIES, with the recorded geometry and materials."""
    if fidelity in ("", "recorded") or fidelity == recorded.physics.fidelity:
        return recorded
    return recorded.changed(physics=recorded.physics.changed(fidelity=fidelity))


def training_best(prepared: Prepared, bands: tuple[Band, ...] = DEFAULT_BANDS) -> tuple[float, int]:
    """(best efficiency, row) over every prepared structure's true spectra, 180-degree twins included
    (rows >= M are twins of row - M)."""
    sets = [prepared.bayer] + ([prepared.rotated_bayer] if prepared.rotated_bayer is not None else [])
    eff = np.concatenate([routing_efficiency(np.asarray(b), prepared.wavelengths_nm, bands) for b in sets])
    best = int(np.argmax(eff))
    return float(eff[best]), best


class DesignCheckLimits(Settings):
    """Limits of the check on a design run (the design run config's `tolerance` is generated from this field)."""

    OWNER = "design"

    tolerance: float = Field(0.05, ge=0, description="check_design_verified: largest |predicted - simulated| allowed")


def check_design_verified(summary: DesignSummary, limits: DesignCheckLimits) -> CheckOutcome:
    """Every design's surrogate efficiency within `tolerance` of the simulator's; a run that could not be simulated
    (no matching simulation.json) is a warning, not a failure of the designs."""
    if not summary.verified:
        return CheckOutcome(False, f"not verified: {summary.verification}", warn_only=True)
    gaps = summary.gaps()
    return CheckOutcome(bool(max(gaps) <= limits.tolerance),
                        f"largest |predicted - simulated| {max(gaps):.4f} (tolerance {limits.tolerance})",
                        {"max_abs_gap": max(gaps), "tolerance": limits.tolerance, "gaps": gaps})


DESIGN_CHECKS = by_stage(
    CheckDef("check_design_verified", Stage.DESIGNS,
             "every design's surrogate efficiency is within `tolerance` of the simulator's", check_design_verified,
             blocking=False),
)
