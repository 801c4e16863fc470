"""A design run's results, typed: what design/run.py returns and the loop, the CLI, the assets and the check read.
They become plain dicts only where written to a file (`designs.json`, from `DesignSummary.to_json()`, its keys and
values as the first release wrote them) or to Dagster metadata.

    DesignRecord    one design: predicted (and simulated) efficiency overall, per band and as the min-band metric,
                    the solid / void length scales, whether it counts (meets min_feature_px), its fill
    DesignSummary   one run: the designs, their ranking, the best that counts, how they were verified, the files
    RoundNumbers    one round of the active-learning loop in numbers (best / mean simulated, the gap, rows added)
    LoopRound       a round of `crrecon design --rounds`: who designed, the shard, the designs in brief, the numbers
    LoopResult      the loop's rounds and the best training structure it compares with

Imports: pydantic, numpy and design.optimize (the settings) only."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from crrecon_pipeline.design.optimize import DesignSettings


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict:
        """Plain data for files and metadata."""
        return self.model_dump()


class DesignRecord(_Result):
    """One design. Efficiencies are rounded to 6 decimals; `simulated_*` are None when the run was not verified
    (and `simulated_bands` is then absent from the file)."""

    index: int
    predicted_efficiency: float
    simulated_efficiency: float | None
    predicted_min_band: float
    simulated_min_band: float | None
    min_feature_px: int
    solid_px: int
    void_px: int
    counted: bool  # its minimum length scale meets the run's min_feature_px: it may be the best
    initial_predicted_efficiency: float
    fill: float
    predicted_bands: dict[str, float]  # {band name: efficiency}
    simulated_bands: dict[str, float] | None = None

    @property
    def gap(self) -> float | None:
        """|predicted - simulated| routing efficiency (None: not simulated)."""
        if self.simulated_efficiency is None:
            return None
        return abs(self.predicted_efficiency - self.simulated_efficiency)

    def to_json(self) -> dict:
        data = self.model_dump()
        if self.simulated_bands is None:
            del data["simulated_bands"]
        return data


class DesignSummary(_Result):
    """One design run (designs.json). `files`: the shard's structures file, then its spectra file when simulated."""

    designs: list[DesignRecord]
    objective: str
    training_best_efficiency: float
    training_best_row: int
    best_design: int | None  # the best design that counts (None: none meets min_feature_px)
    rank: list[int]  # design indices best first: those that count by the objective, then the others
    counted_designs: int
    min_feature_px: int
    verified: bool
    verification: str  # why the designs are (not) simulated
    verify_fidelity: str | None
    simulation_settings: str | None  # the simulation.json used
    reproduction_error: float | None
    shard_index: int
    files: list[str]
    checkpoint: str
    prepared: str
    settings: DesignSettings
    record: dict[str, Any] = {}  # extra lineage (who designed)
    history: list[dict[str, Any]] = []  # per optimization step: step, beta, mean / max efficiency
    out: str

    @property
    def structures_file(self) -> str:
        return self.files[0]

    @property
    def spectra_file(self) -> str | None:
        return self.files[1] if len(self.files) > 1 else None

    @property
    def best(self) -> DesignRecord | None:
        return None if self.best_design is None else self.designs[self.best_design]

    @property
    def counted(self) -> list[DesignRecord]:
        return [d for d in self.designs if d.counted]

    def gaps(self) -> list[float]:
        """|predicted - simulated| routing efficiency per design of a verified run ([] when not verified)."""
        return [d.gap for d in self.designs] if self.verified else []

    def simulated(self) -> list[float | None]:
        return [d.simulated_efficiency for d in self.designs]

    def to_json(self) -> dict:
        return self.model_dump() | {"designs": [d.to_json() for d in self.designs]}


class RoundNumbers(_Result):
    """A round's numbers from its design summary: best and mean simulated efficiency of the designs that count,
    the largest |predicted - simulated| (the designing model's gap), rows added."""

    best_simulated: float | None
    best_simulated_min_band: float | None
    mean_simulated: float | None
    gap: float
    counted_designs: int
    rows_added: int

    @classmethod
    def of(cls, summary: DesignSummary) -> RoundNumbers:
        best, sim = summary.best, [d.simulated_efficiency for d in summary.counted]
        return cls(best_simulated=best.simulated_efficiency if best else None,
                   best_simulated_min_band=best.simulated_min_band if best else None,
                   mean_simulated=round(float(np.mean(sim)), 6) if sim else None,
                   gap=round(max(d.gap for d in summary.designs), 6),
                   counted_designs=len(summary.counted), rows_added=len(summary.designs))


class DesignBrief(_Result):
    """A design as the loop's result lists it."""

    index: int
    predicted_efficiency: float
    simulated_efficiency: float | None
    min_feature_px: int


class LoopRound(_Result):
    """One round of the plain loop: the checkpoint that designed, the shard its designs became, the designs in
    brief, the numbers, and the gap of the fine-tuned model on them (None after the last round)."""

    round: int
    checkpoint: str
    shard: int
    designs: list[DesignBrief]
    numbers: RoundNumbers
    gap_after: float | None = None

    def to_json(self) -> dict:
        data = self.model_dump(exclude={"numbers", "gap_after"})
        return data | self.numbers.to_json() | {"gap_after": self.gap_after}


class LoopResult(_Result):
    rounds: list[LoopRound]
    training_best_efficiency: float
    out: str

    def to_json(self) -> dict:
        return {"rounds": [r.to_json() for r in self.rounds],
                "training_best_efficiency": self.training_best_efficiency, "out": self.out}
