"""The active-learning design loop: design -> verify -> the verified designs become a new raw shard, prepared and
checked like any shard -> fine-tune the surrogate from its current checkpoint on old + new shards -> design again,
starting from the previous round's best.

Why: a surrogate's designs sit where its training data are thin (it under-predicts them); simulating them and
training on them is exactly the data the next round needs. What trains is what passed its checks: a design shard
goes through data.prepare (the DATA_CHECKS of every shard) before any training sees it, and a round whose designs
cannot be verified (no simulator record, or one that does not reproduce the training spectra) stops the loop with
one line, adding nothing.

Here the loop of `crrecon design --rounds N` (plain Python): round k writes OUT/round_<k>/ (the design shard in the
raw format with its simulation.json and designs.json naming the checkpoint that designed it), prepares it into
OUT/prepared (a store of the design shards only; the user's prepared folder is only read) and, between rounds,
fine-tunes into OUT/round_<k>/model/. The Dagster loop (design_loop_job and design_loop_sensor) runs the same steps
as assets, with the shard as a new partition of the managed data."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import Field

from crrecon_pipeline.data.prepare import prepare_shard, refuse_failed_checks, rotate_version
from crrecon_pipeline.data.prepared import Prepared, combine_prepared, load_prepared
from crrecon_pipeline.data.rawfiles import structure_path
from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.design.optimize import DesignSettings, ProgressFn
from crrecon_pipeline.design.run import design_on
from crrecon_pipeline.design.summary import DesignBrief, DesignSummary, LoopResult, LoopRound, RoundNumbers
from crrecon_pipeline.design.verify import prepare_settings_of
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.physics.bands import routing_efficiency
from crrecon_pipeline.settings import Settings
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.inference import load_model, predict

LOOP_FIELDS = ("finetune_epochs", "finetune_lr", "finetune_design_repeat", "refine_lr")


class LoopSettings(Settings):
    """What the loop adds to a design run: the short fine-tuning schedule between rounds (the designing model's own
    run config, started from its checkpoint by training.init_from, with these epochs and peak learning rate, no
    warmup, every design-made row in training and counted `finetune_design_repeat` times: a few dozen new rows
    among thousands would barely move it) and how the rounds after the first design (round_settings)."""

    OWNER = "design"

    finetune_epochs: int = Field(6, ge=1, le=100_000, description="epochs of the fine-tuning between rounds (from "
                                 "the current checkpoint, on old + new shards)")
    finetune_lr: float = Field(5e-4, gt=0, le=10, description="peak learning rate of the fine-tuning between rounds")
    finetune_design_repeat: int = Field(10, ge=1, le=10_000, description="times each design-made row counts per "
                                        "fine-tuning epoch (data.oversample); 1: like any row")
    refine_lr: float = Field(0.01, gt=0, le=100, description="Adam learning rate of the rounds after the first: they "
                             "refine the previous round's designs at the final sharpness (beta_end) in steps this "
                             "small, where the fine-tuned surrogate has seen data")

    def run_config(self, base: RunConfig, checkpoint: str | Path, design_shards) -> RunConfig:
        """The fine-tuning run: `base` (the checkpoint's own config) from `checkpoint`'s weights, a short schedule,
        the rows of `design_shards` all in training (data.train_all) and oversampled."""
        shards = [str(k) for k in sorted(design_shards, key=int)]
        repeat = {k: self.finetune_design_repeat for k in shards}
        return base.with_overrides({"training.init_from": str(checkpoint), "training.resume_from": "",
                                    "training.epochs": self.finetune_epochs, "training.lr": self.finetune_lr,
                                    "training.warmup_ratio": 0.0, "training.save_every": 0,
                                    "data.train_all": shards,
                                    "data.oversample": repeat if self.finetune_design_repeat > 1 else {}},
                                   "design loop fine-tuning")

    def round_settings(self, settings: DesignSettings, k: int) -> DesignSettings:
        """Round k's design settings. Round 0 explores from the given starts with the full sharpness schedule;
        later rounds start from the previous round's designs, which are verified and now in the training data,
        so they keep them binary (beta_end from the first step) and move them in small steps (refine_lr).
        Melting them back to beta_start would send the designs where the surrogate has seen nothing, and its
        gap on them would grow instead of shrink (measured in docs/design.md)."""
        if k == 0:
            return settings
        return settings.changed(beta_start=settings.beta_end, lr=self.refine_lr)


def surrogate_gap(checkpoint: str | Path, structures: np.ndarray, simulated_efficiency: np.ndarray,
                  wavelengths_nm: np.ndarray, settings: DesignSettings, device: str = "auto") -> float:
    """Largest |predicted - simulated| band-mean efficiency of `checkpoint` on given structures (the gap on a
    round's designs after retraining)."""
    model, config = load_model(checkpoint, device)
    eff = routing_efficiency(predict(model, config, structures), wavelengths_nm, settings.bands)
    return round(float(np.abs(eff - np.asarray(simulated_efficiency)).max()), 6)


def next_start(structures: np.ndarray, summary: DesignSummary) -> np.ndarray:
    """The next round's starts: this round's designs best first (those that count, by the objective)."""
    return np.asarray(structures)[summary.rank]


def prepare_design_shard(round_dir: Path, shard: int, store: Path, like: Prepared) -> None:
    """The design shard through the same preparation and DATA_CHECKS as any shard; a failed blocking check is
    one line (DataError) and LATEST does not move."""
    filtered = prepare_shard(round_dir, shard, store, prepare_settings_of(like), make_latest=False)
    refuse_failed_checks(filtered)
    rotated = rotate_version(store, filtered, make_latest=False)
    refuse_failed_checks(rotated)
    PreparedStore(store).update_pointers({shard: rotated.version})


def run_rounds(checkpoint: str | Path, prepared_dir: str | Path, out_dir: str | Path, settings: DesignSettings,
               rounds: int, loop: LoopSettings, device: str = "auto", progress: ProgressFn | None = None,
               log: Callable[[str], None] = lambda message: None, train_log: Callable[[str], None] | None = None,
               ) -> LoopResult:
    """`rounds` rounds of design -> verify -> new shard -> prepare -> fine-tune (between rounds)."""
    out_dir, prepared_dir = Path(out_dir), Path(prepared_dir)
    for earlier in [out_dir / "prepared", *sorted(out_dir.glob("round_*"))]:
        if earlier.exists():  # a loop continues from its own numbers only: never mix two loops' shards
            raise DataError(f"{earlier}: already exists (an earlier loop); give --out a new folder")
    base = load_prepared(prepared_dir)
    store = out_dir / "prepared"
    shard = max(base.versions) + 1 if base.versions else 0
    start, current = None, Path(checkpoint)
    done: list[LoopRound] = []
    for k in range(rounds):
        data = combine_prepared([base] + ([load_prepared(store)] if PreparedStore(store).pointers() else []))
        round_dir = out_dir / f"round_{k}"
        summary = design_on(current, data, prepared_dir.resolve(), round_dir, loop.round_settings(settings, k), shard,
                            device, progress,
                            start=start, require_verified=True,
                            record={"round": k, "designed_by": str(current.resolve())}, reference=base)
        numbers = RoundNumbers.of(summary)
        log(f"round {k}: best simulated {numbers.best_simulated}, gap {numbers.gap} "
            f"({numbers.counted_designs} of {len(summary.designs)} designs meet {settings.min_feature_px} px)")
        prepare_design_shard(round_dir, shard, store, data)
        entry = LoopRound(round=k, checkpoint=str(current.resolve()), shard=shard, numbers=numbers,
                          designs=[DesignBrief.model_validate(d.model_dump(include=set(DesignBrief.model_fields)))
                                   for d in summary.designs])
        if k + 1 < rounds:
            structures = np.load(structure_path(round_dir, shard))[:, 0]
            current = finetune(loop, k, current, base, store, round_dir, device, train_log or log, log)
            gap_after = surrogate_gap(current, structures, np.array(summary.simulated()), data.wavelengths_nm,
                                      settings, device)
            entry = entry.model_copy(update={"gap_after": gap_after})
            start = next_start(structures, summary)
        done.append(entry)
        shard += 1
    return LoopResult(rounds=done, training_best_efficiency=summary.training_best_efficiency,
                      out=str(out_dir.resolve()))


def finetune(loop: LoopSettings, k: int, current: Path, base: Prepared, store: Path, round_dir: Path, device: str,
             train_log: Callable[[str], None], log: Callable[[str], None]) -> Path:
    """The fine-tuning between rounds: `current`'s own run config from its weights, on the original data and every
    design shard so far, into round_dir/model. Returns the new best checkpoint."""
    from crrecon_pipeline.train.loop import train  # the trainer only when the loop runs

    _, base_config = load_model(current, "cpu")
    designed = load_prepared(store)
    config = loop.run_config(base_config, current, designed.versions)
    grown = combine_prepared([base, designed])
    log(f"round {k}: fine-tuning {loop.finetune_epochs} epochs on {len(grown)} rows ({len(designed)} designed, "
        f"each x{loop.finetune_design_repeat}) into {round_dir / 'model'}")
    return Path(train(config, grown, round_dir / "model", device=device, log=train_log).best_checkpoint)
