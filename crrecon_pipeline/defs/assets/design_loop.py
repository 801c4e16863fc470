"""design_round: one round of the active-learning design loop as Dagster lineage.

The round designs with trained_model's latest checkpoint on exactly the data it trained on, verifies every design
with the training data's simulator, and writes the verified designs as a new raw shard in the managed data
(CRRECON_HOME/design_shards/shard_<k>/, never the user's CRRECON_RAW_DIR) with design_made.json naming the
checkpoint, the model's run and this run; then it registers shard k as a new partition. From there the shard is a
shard like any other: design_loop_sensor asks for its preparation (prepare_data_job: raw -> filtered -> rotated
with every data check), then for the fine-tuning (design_finetune_job: trained_model from the current checkpoint,
the round's short schedule, on every shard that passed its checks, old and new), then for the next round
(design_loop_job again, starting from this round's best), until `rounds` rounds are done. A round whose designs
cannot be verified fails with one line and adds nothing: no files, no partition."""


import json
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crrecon_pipeline.data.home import DESIGN_MADE, design_shard_dir, design_shards_dir
from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.rawfiles import STRUCTURE_RE
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.assets.design import DesignConfig
from crrecon_pipeline.defs.assets.training import trained_model
from crrecon_pipeline.defs.handoff import required_trained_model
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.progress import LogProgress
from crrecon_pipeline.defs.resources import CrreconPaths, TrainingDevice
from crrecon_pipeline.defs.settings import build, generated
from crrecon_pipeline.design.loop import LOOP_FIELDS, LoopSettings, surrogate_gap
from crrecon_pipeline.design.run import design_on
from crrecon_pipeline.design.summary import DesignSummary, RoundNumbers
from crrecon_pipeline.numbers import rounded
from crrecon_pipeline.plots import markdown_image
from crrecon_pipeline.report.tables import design_rounds_table, design_table
from crrecon_pipeline.settings import pydantic_fields
from crrecon_pipeline.train.inference import load_model


class DesignLoopConfig(generated("DesignLoopFields", DesignConfig,
                                 pydantic_fields(LoopSettings, LOOP_FIELDS))):
    """A design round: the design run (DesignConfig), the fine-tuning between rounds, and where in the loop it is
    (design_loop_sensor fills `round` and `loop_id` for the rounds after the first)."""

    rounds: int = Field(2, ge=1, le=1000, description="rounds of the loop (design, add the shard, fine-tune) in all")
    round: int = Field(0, ge=0, description="this round's number (0: a new loop)")
    loop_id: str = Field("", description="the loop this round belongs to (empty: a new loop, named by this run id)")

    def loop(self) -> LoopSettings:
        return build(LoopSettings, self)


def next_free_shard(instance: dg.DagsterInstance, paths: CrreconPaths) -> int:
    """One above every shard index in use: registered partitions, the raw folder's files, design-made folders."""
    taken = {int(k) for k in instance.get_dynamic_partitions(shards.name) if k.isascii() and k.isdigit()}
    for folder in (paths.raw_path(), design_shards_dir(paths.home)):
        if folder.is_dir():
            taken |= {int(m.group(1)) for p in folder.iterdir() if (m := STRUCTURE_RE.match(p.name))}
            taken |= {int(p.name.removeprefix("shard_")) for p in folder.glob("shard_*")
                      if p.name.removeprefix("shard_").isdigit()}
    return max(taken) + 1 if taken else 0


class RoundRecord(BaseModel):
    """A design_round materialization's `round_record` (Dagster metadata): what the next round and
    design_loop_sensor continue from. `row`: the round's line of the rounds table."""

    model_config = ConfigDict(frozen=True)  # keys a newer version added are ignored

    loop_id: str
    round: int
    rounds: int
    shard: int
    structures_file: str
    rank: list[int]
    simulated: list[float | None]
    gap_after_previous: float | None
    model_run_id: str | None
    loop_config: dict[str, Any]
    finetune_run_config: dict[str, Any]
    row: dict[str, Any]

    @classmethod
    def of_metadata(cls, value) -> "RoundRecord | None":
        """The record of a materialization's `round_record` metadata value (None: absent or not a record)."""
        entry = getattr(value, "value", None)
        try:
            return cls.model_validate(entry) if isinstance(entry, dict) else None
        except ValidationError:
            return None


def loop_history(instance: dg.DagsterInstance, loop_id: str) -> list[RoundRecord]:
    """The earlier rounds of a loop: each design_round materialization's `round_record`, by round."""
    records = instance.fetch_materializations(dg.AssetKey("design_round"), limit=1000).records
    found = {}
    for record in records:
        entry = RoundRecord.of_metadata(record.asset_materialization.metadata.get("round_record"))
        if entry is not None and entry.loop_id == loop_id and entry.round not in found:
            found[entry.round] = entry  # newest first: a re-run round replaces the older one
    return [found[k] for k in sorted(found)]


def rounds_rows(history: list[RoundRecord], current: RoundRecord) -> list[dict]:
    """Table rows: each round's numbers, its gap after fine-tuning from the round after it."""
    done = history + [current]
    return [r.row | {"gap_after": done[i + 1].gap_after_previous if i + 1 < len(done) else None}
            for i, r in enumerate(done)]


@dg.asset(
    deps=[trained_model],
    group_name="design",
    kinds={"pytorch"},
    description="One active-learning round: designs through the latest trained surrogate, verified by the "
                "training data's simulator, written as a new design-made shard partition in CRRECON_HOME "
                "(design_loop_sensor then prepares it, fine-tunes trained_model on old + new shards and starts the "
                "next round from this round's best).",
)
def design_round(context: dg.AssetExecutionContext, config: DesignLoopConfig, paths: CrreconPaths,
                 device: TrainingDevice):
    model = required_trained_model(context.instance)
    loop_id = config.loop_id or context.run.run_id
    history = loop_history(context.instance, loop_id)
    previous = history[-1] if config.round > 0 and history else None
    if config.round > 0 and (previous is None or previous.round != config.round - 1):
        raise dg.Failure(description=f"design loop {loop_id}: round {config.round - 1} has no materialization "
                                     "to continue from", allow_retries=False)
    with bad_input_fails_step():
        loop = config.loop()
        settings = loop.round_settings(config.settings(), config.round)
        prepared = load_prepared(paths.prepared_path(), model.versions())  # exactly what the model trained on
        original = {k: v.version for k, v in prepared.versions.items() if paths.design_made(k) is None}
        reference = load_prepared(paths.prepared_path(), original) if original else prepared
        start = gap_after = None
        if previous is not None:
            shard_structures = np.load(previous.structures_file)[:, 0]
            start = shard_structures[previous.rank]  # the previous round's designs, best first
            gap_after = surrogate_gap(model.checkpoint, shard_structures, np.array(previous.simulated),
                                      prepared.wavelengths_nm, settings, device.device)
        shard = next_free_shard(context.instance, paths)
        out = design_shard_dir(paths.home, shard)
        record = {"checkpoint": str(model.checkpoint), "model_run_id": model.run_id,
                  "design_run_id": context.run.run_id, "loop_id": loop_id, "round": config.round}
        summary = design_on(model.checkpoint, prepared, paths.prepared_path(), out, settings, shard, device.device,
                            LogProgress(context.log, settings.steps, f"design round {config.round}", unit="steps"),
                            start=start, require_verified=True, record=record, reference=reference)
        designed = [k for k in prepared.versions if paths.design_made(k) is not None] + [shard]
        finetune_config = loop.run_config(load_model(model.checkpoint, "cpu")[1], model.checkpoint, designed)
    write_text_atomic(out / DESIGN_MADE, json.dumps(record, indent=2) + "\n")  # last: the shard is complete
    context.instance.add_dynamic_partitions(shards.name, [str(shard)])
    numbers = RoundNumbers.of(summary)
    context.log.info(f"design loop {loop_id[:8]} round {config.round}: shard {shard} added ({numbers.rows_added} "
                     f"rows); best simulated {numbers.best_simulated}, gap {numbers.gap}")
    current = RoundRecord(loop_id=loop_id, round=config.round, rounds=config.rounds, shard=shard,
                          structures_file=summary.structures_file, rank=summary.rank, simulated=summary.simulated(),
                          gap_after_previous=gap_after, model_run_id=model.run_id,
                          loop_config=config.model_dump() | {"loop_id": loop_id},
                          finetune_run_config=finetune_config.to_dict(),
                          row={"round": config.round, "checkpoint": str(model.checkpoint), "shard": shard,
                               **numbers.to_json()})
    yield dg.MaterializeResult(metadata=round_metadata(summary, numbers, current, history, out))


def round_metadata(summary: DesignSummary, numbers: RoundNumbers, current: RoundRecord, history: list[RoundRecord],
                   out: Path) -> dict:
    return {
        "loop_id": current.loop_id,
        "round": current.round,
        "rounds": current.rounds,
        "shard": current.shard,
        "designed_by": dg.MetadataValue.path(current.row["checkpoint"]),
        "model_run_id": current.model_run_id,
        "rows_added": numbers.rows_added,
        "counted_designs": numbers.counted_designs,
        "best_simulated_efficiency": rounded(numbers.best_simulated),
        "mean_simulated_efficiency": rounded(numbers.mean_simulated),
        "best_simulated_min_band": rounded(numbers.best_simulated_min_band),
        "gap_before": rounded(numbers.gap),  # the designing model's largest |predicted - simulated|
        "previous_round_gap_after": rounded(current.gap_after_previous),  # this model on the last round's designs
        "training_best_efficiency": rounded(summary.training_best_efficiency),
        "min_feature_px": summary.min_feature_px,
        "objective": summary.objective,
        "design_rounds": dg.MetadataValue.md(design_rounds_table(rounds_rows(history, current))),
        "efficiencies": dg.MetadataValue.md(design_table(summary.designs)),
        "designs_picture": dg.MetadataValue.md(markdown_image(out / "designs.png", "designs: simulated vs predicted")),
        "shard_dir": dg.MetadataValue.path(str(out)),
        "round_record": dg.MetadataValue.json(current.model_dump()),
    }


def loop_state(instance: dg.DagsterInstance) -> dict | None:
    """The latest design_round's record (what design_loop_sensor continues), or None."""
    records = instance.fetch_materializations(dg.AssetKey("design_round"), limit=1).records
    if not records:
        return None
    value = records[0].asset_materialization.metadata.get("round_record")
    entry = getattr(value, "value", None)
    return entry | {"timestamp": records[0].timestamp} if isinstance(entry, dict) else None
