"""The active-learning design loop: the length-scale measure and the min-band objective by hand on small arrays,
`crrecon design --rounds`, and the Dagster loop (design_round -> a design-made shard partition -> prepared and
checked -> fine-tuned -> the next round), with a failed verification stopping it and adding nothing."""

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from crrecon_pipeline.cli import main
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.design.lengthscale import brush, enforce_length_scale, length_scales
from crrecon_pipeline.design.objective import min_band_efficiency, objective_value, smooth_objective
from crrecon_pipeline.physics.bands import bayer_bands
from crrecon_pipeline.train.loop import train

from .helpers import tiny_config

LAM = np.array([450.0, 550.0, 650.0])  # one wavelength per band: B, G, R


# ---------------------------------------------------------------------------------------------------- length scale

def test_length_scale_by_hand_periodic():
    x = np.zeros((4, 32, 32), np.uint8)
    x[0, :, 5:12] = 1  # a solid stripe 7 px wide: solid 7, void 25
    x[1, :, 29:] = 1
    x[1, :, :4] = 1  # the same width-7 stripe across the border: periodic, so 7 (not 3 and 4)
    x[2] = 1
    x[2, :, 10:12] = 0  # a void gap of 2 px in solid
    yy, xx = np.mgrid[:32, :32]
    x[3] = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 8 ** 2  # a disk of diameter 16
    scales = length_scales(x)
    assert scales.solid[:2].tolist() == [7, 7] and scales.void[:2].tolist() == [25, 25]
    assert scales.void[2] == 2 and scales.solid[2] == 30
    assert scales.solid[3] == 16 and scales.minimum.tolist() == [7, 7, 2, 16]
    assert length_scales(np.zeros((32, 32))).minimum.tolist() == [32]  # nothing to measure: the cell size
    # the brush of diameter d spans d pixels; a stripe one pixel wider than the brush is the limit
    assert [brush(d).shape for d in (1, 2, 5)] == [(1, 1), (2, 2), (5, 5)] and brush(2).all()


def test_length_scale_filter_keeps_symmetry_and_meets_the_minimum():
    x = np.zeros((1, 32, 32), np.uint8)
    x[0, 4:20, 4:20] = 1
    x[0, 10:12, 20:30] = 1  # a 2-px arm sticking out of a square
    x[0] = np.maximum(x[0], x[0].T)  # diagonal-symmetric, as every design is
    assert length_scales(x).solid[0] == 2
    fixed = enforce_length_scale(x, 5)
    assert np.array_equal(fixed[0], fixed[0].T) and length_scales(fixed).minimum[0] >= 5
    assert fixed[0, 12:16, 12:16].all() and not fixed[0, 10:12, 24:30].any()  # the square kept, the arm gone
    assert np.array_equal(enforce_length_scale(x, 0), x)


# ---------------------------------------------------------------------------------------------------- objective

def test_min_band_objective_by_hand():
    bayer = np.zeros((2, 2, 2, 3))
    bayer[:, 1, 1, 0] = [0.40, 0.60]  # B at 450 nm
    bayer[:, 0, 1, 1] = [0.20, 0.20]  # G1 + G2 at 550 nm
    bayer[:, 1, 0, 1] = [0.15, 0.20]
    bayer[:, 0, 0, 2] = [0.30, 0.50]  # R at 650 nm
    # bands (B, G, R): (0.40, 0.35, 0.30) and (0.60, 0.40, 0.50)
    assert min_band_efficiency(bayer, LAM, bayer_bands()) == pytest.approx([0.30, 0.40])  # R, then G
    weighted = bayer_bands(weights=(5, 1, 1))  # weights change the band mean, never the minimum
    assert objective_value(bayer, LAM, weighted, "min_band") == pytest.approx([0.30, 0.40])
    assert objective_value(bayer, LAM, bayer_bands(), "band_mean") == pytest.approx([0.35, 0.50])
    # the optimizer's soft minimum: within tau * log 3 above the minimum, and a gradient for every band
    t = torch.tensor(bayer, requires_grad=True)
    soft = smooth_objective(t, LAM, bayer_bands(), "min_band")
    assert (soft.detach().numpy() >= [0.30, 0.40]).all() and (soft.detach().numpy() <= [0.312, 0.412]).all()
    soft.sum().backward()  # row 0: R is the weakest band, so it pulls hardest; B and G still pull
    assert t.grad[0, 0, 0, 2] > t.grad[0, 0, 1, 1] > t.grad[0, 1, 1, 0] > 0


def test_oversample_repeats_only_the_named_shards_rows():
    from crrecon_pipeline.errors import ConfigError
    from crrecon_pipeline.train.split import oversampled

    rows, shard_of_row = np.array([0, 1, 3, 4]), np.array([0, 0, 0, 7, 7])
    assert oversampled(rows, shard_of_row, {"7": 3}).tolist() == [0, 1, 3, 3, 3, 4, 4, 4]
    assert oversampled(rows, shard_of_row, {}).tolist() == [0, 1, 3, 4]
    with pytest.raises(ConfigError, match="data.oversample"):
        tiny_config("data.oversample={x: 2}")


def test_train_all_moves_only_the_named_shards_validation_rows():
    from crrecon_pipeline.errors import ConfigError
    from crrecon_pipeline.train.split import all_rows_train

    shard_of_row = np.array([0, 0, 0, 0, 7, 7, 7])
    train, val = all_rows_train(np.array([0, 2, 4]), np.array([1, 3, 5, 6]), shard_of_row, ["7"])
    assert train.tolist() == [0, 2, 4, 5, 6] and val.tolist() == [1, 3]
    assert [a.tolist() for a in all_rows_train(np.array([0]), np.array([1, 5]), shard_of_row, ["9"])] == [[0], [1, 5]]
    with pytest.raises(ConfigError, match="data.train_all"):
        tiny_config("data.train_all=[x]")


def test_later_rounds_refine_at_the_final_sharpness():
    from crrecon_pipeline.design.loop import LoopSettings
    from crrecon_pipeline.design.optimize import DesignSettings

    settings, loop = DesignSettings(beta_start=2.0, beta_end=64.0, lr=0.05), LoopSettings(refine_lr=0.02)
    assert loop.round_settings(settings, 0) == settings
    later = loop.round_settings(settings, 3)
    assert (later.beta_start, later.beta_end, later.lr) == (64.0, 64.0, 0.02)
    assert later.betas() == pytest.approx([64.0] * settings.steps)


def test_verification_fidelity_is_any_registered_one():
    from crrecon_pipeline.design.optimize import DesignSettings
    from crrecon_pipeline.design.verify import verification_settings
    from crrecon_pipeline.errors import ConfigError
    from crrecon_pipeline.physics.params import FIDELITIES, PhysicsParams
    from crrecon_pipeline.physics.shards import SimulationSettings

    recorded = SimulationSettings(seed=3, physics=PhysicsParams(depth_um=3.0))
    assert verification_settings(recorded, "recorded") is recorded
    for fidelity in FIDELITIES:  # every registered fidelity, the recorded geometry kept
        assert DesignSettings(verify_fidelity=fidelity).verify_fidelity == fidelity
        chosen = verification_settings(recorded, fidelity)
        assert chosen.physics.fidelity == fidelity and chosen.physics.depth_um == 3.0 and chosen.seed == 3
    with pytest.raises(ConfigError, match="verify_fidelity"):
        DesignSettings(verify_fidelity="no_such_solver")


# ---------------------------------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def checkpoint(prepared_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("loop_run")
    return train(tiny_config("training.epochs=1"), load_prepared(prepared_dir), run, device="cpu",
                 log=lambda m: None).best_checkpoint


@pytest.mark.slow
def test_cli_design_rounds(checkpoint, prepared_dir, tmp_path, capsys):
    out = tmp_path / "loop"
    args = ["design", "--checkpoint", str(checkpoint), "--prepared", str(prepared_dir), "--out", str(out),
            "--designs", "2", "--steps", "3", "--rounds", "2", "--finetune-epochs", "1", "--device", "cpu"]
    assert main(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"rounds", "training_best_efficiency", "out"} and len(last["rounds"]) == 2
    r0, r1 = last["rounds"]
    assert r0["checkpoint"] == str(Path(checkpoint).resolve())
    assert r1["checkpoint"] == str((out / "round_0" / "model" / "best.pt").resolve())  # fine-tuned in between
    for r in (r0, r1):
        assert [set(d) for d in r["designs"]] == [{"index", "predicted_efficiency", "simulated_efficiency",
                                                   "min_feature_px"}] * 2
        sim = [d["simulated_efficiency"] for d in r["designs"]]
        assert r["gap"] == pytest.approx(max(abs(d["predicted_efficiency"] - d["simulated_efficiency"])
                                             for d in r["designs"]), abs=1e-6)
        counted = [s for s, d in zip(sim, r["designs"]) if d["min_feature_px"] >= 4]
        assert r["best_simulated"] == (max(counted) if counted else None)
    # round k's shard: the raw format, simulated, next to the record of the model that designed it
    structures = np.load(out / "round_1" / "binary_dataset_128_3.npy")
    spectra = np.load(out / "round_1" / "spectra_latest_3.npy")
    assert structures.shape == (2, 1, 128, 128) and spectra.shape == (2, 3, 301) and (spectra <= 0).all()
    record = json.loads((out / "round_1" / "designs.json").read_text())
    assert record["record"]["designed_by"] == r1["checkpoint"] and record["checkpoint"] == r1["checkpoint"]
    # both design shards prepared (with their checks) into OUT's own store; the user's store is untouched
    assert sorted(load_prepared(out / "prepared").versions) == [2, 3]
    assert sorted(load_prepared(prepared_dir).versions) == [0, 1]
    assert r0["gap_after"] is not None and r1["gap_after"] is None
    # round 1 refined round 0's designs at the final sharpness; the fine-tuning trained on every design row
    settings = record["settings"]
    assert settings["beta_start"] == settings["beta_end"] and settings["lr"] == pytest.approx(0.01)
    tuned = json.loads((out / "round_0" / "model" / "config.json").read_text())
    assert tuned["data"]["train_all"] == ["2"] and tuned["data"]["oversample"] == {"2": 10}
    assert main(args) == 2  # the same OUT again: refused, the first loop's files left as they are
    assert "already exists (an earlier loop)" in capsys.readouterr().err
    assert sorted(load_prepared(out / "prepared").versions) == [2, 3]


@pytest.mark.slow
def test_cli_rounds_stop_on_failed_verification(checkpoint, raw_dir, tmp_path, capsys):
    """No simulator record: the loop stops with one line before writing anything."""
    from crrecon_pipeline.data.prepare import preprocess

    raw = tmp_path / "raw"
    shutil.copytree(raw_dir, raw)
    (raw / "simulation.json").unlink()
    preprocess(raw, tmp_path / "prepared")
    out = tmp_path / "loop"
    assert main(["design", "--checkpoint", str(checkpoint), "--prepared", str(tmp_path / "prepared"), "--out",
                 str(out), "--designs", "2", "--steps", "2", "--rounds", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "verification failed, nothing added" in err[-1] and "simulation.json: not found" in err[-1]
    assert not out.exists() or not any(out.rglob("*.npy"))


# ---------------------------------------------------------------------------------------------------- Dagster

def dagster_setup(tmp_path):
    from crrecon_pipeline.defs.resources import (
        CrreconPaths,
        FilterSettings,
        ModelChecks,
        SimulatorResource,
        TrainingDevice,
    )

    return {"paths": CrreconPaths(home=str(tmp_path)), "simulator": SimulatorResource(rows_per_shard=120, seed=4),
            "filtering": FilterSettings(), "device": TrainingDevice(device="cpu"), "model_checks": ModelChecks()}


def prepare(instance, resources, partition):
    from crrecon_pipeline.defs.assets.prepared import filtered_bayer, rotated_bayer
    from crrecon_pipeline.defs.assets.raw import raw_shard

    return dg.materialize([raw_shard, filtered_bayer, rotated_bayer], partition_key=partition, instance=instance,
                          resources=resources)


ROUND = {"designs": 2, "steps": 3, "rounds": 2, "finetune_epochs": 1, "min_feature_px": 4}


@pytest.mark.slow
def test_design_loop_in_dagster(checkpoint, tmp_path):
    """Round 0 adds exactly one design-made shard partition whose lineage names the model that designed it; the
    sensor then prepares it, fine-tunes from that model on old + new shards, and starts round 1 from round 0's
    best; after round 1 (of 2) the loop is finished."""
    from crrecon_pipeline.defs.assets.design_loop import design_round
    from crrecon_pipeline.defs.assets.training import trained_model
    from crrecon_pipeline.defs.lineage import shard_lineage
    from crrecon_pipeline.defs.partitions import shards
    from crrecon_pipeline.defs.sensors import next_loop_step

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, ["0"])
    resources = dagster_setup(tmp_path)
    assert prepare(instance, resources, "0").success
    ckpt = checkpoint  # a tiny model of the same physics (trained on the session's data)
    instance.report_runless_asset_event(dg.AssetMaterialization("trained_model", metadata={
        "checkpoint": dg.MetadataValue.path(str(ckpt))}))
    assert isinstance(next_loop_step(instance), dg.SkipReason)

    result = dg.materialize([design_round], instance=instance, resources=resources,
                            run_config={"ops": {"design_round": {"config": ROUND}}})
    meta = result.asset_materializations_for_node("design_round")[0].metadata
    assert sorted(instance.get_dynamic_partitions(shards.name)) == ["0", "1"]  # exactly one partition added
    assert meta["shard"].value == 1 and meta["rows_added"].value == 2 and meta["designed_by"].value == str(ckpt)
    assert "| round |" in meta["design_rounds"].value and meta["loop_id"].value == result.run_id
    folder = tmp_path / "design_shards" / "shard_1"
    made = json.loads((folder / "design_made.json").read_text())
    assert made["checkpoint"] == str(ckpt) and made["design_run_id"] == result.run_id
    assert not (tmp_path / "raw" / "binary_dataset_128_1.npy").exists()  # the raw folder is not written

    step = next_loop_step(instance)  # 1. prepare the new partition like any shard
    assert step.job_name == "prepare_data_job" and step.partition_key == "1"
    prepared = prepare(instance, resources, "1")
    raw_meta = prepared.asset_materializations_for_node("raw_shard")[0].metadata
    assert raw_meta["source"].value == "design-made" and raw_meta["designed_by"].value == str(ckpt)
    assert shard_lineage(instance, "1", augment_180=True)[0] is not None  # its checks passed

    step = next_loop_step(instance)  # 2. fine-tune from the designing checkpoint, on old + new shards
    assert step.job_name == "design_finetune_job"
    cfg = step.run_config["ops"]["trained_model"]["config"]
    assert cfg["training"]["init_from"] == str(ckpt) and cfg["training"]["epochs"] == 1
    assert cfg["data"]["train_all"] == ["1"]  # every design row trains
    tuned = dg.materialize([trained_model], instance=instance, resources=resources, run_config=step.run_config)
    assert set(tuned.asset_materializations_for_node("trained_model")[0].metadata["training_set"].value) == {"0", "1"}

    step = next_loop_step(instance)  # 3. the next round, from round 0's best
    assert step.job_name == "design_loop_job" and step.run_config["ops"]["design_round"]["config"]["round"] == 1
    second = dg.materialize([design_round], instance=instance, resources=resources, run_config=step.run_config)
    meta = second.asset_materializations_for_node("design_round")[0].metadata
    assert meta["round"].value == 1 and meta["shard"].value == 2 and meta["previous_round_gap_after"].value >= 0
    assert meta["design_rounds"].value.count("\n") == 3  # header, rule, two rounds
    refined = json.loads((tmp_path / "design_shards" / "shard_2" / "designs.json").read_text())["settings"]
    assert refined["beta_start"] == refined["beta_end"] and refined["lr"] == pytest.approx(0.01)  # refines round 0
    assert prepare(instance, resources, "2").success
    assert "finished" in next_loop_step(instance).skip_message


@pytest.mark.slow
def test_design_round_failed_verification_adds_nothing(checkpoint, tmp_path):
    from crrecon_pipeline.defs.assets.design_loop import design_round
    from crrecon_pipeline.defs.partitions import shards

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, ["0"])
    resources = dagster_setup(tmp_path)
    assert prepare(instance, resources, "0").success
    instance.report_runless_asset_event(dg.AssetMaterialization("trained_model", metadata={
        "checkpoint": dg.MetadataValue.path(str(checkpoint))}))
    record = json.loads((tmp_path / "raw" / "simulation.json").read_text())
    record["physics"]["depth_um"] = 1.0  # a record that no longer reproduces the training spectra
    (tmp_path / "raw" / "simulation.json").write_text(json.dumps(record))
    result = dg.materialize([design_round], instance=instance, resources=resources, raise_on_error=False,
                            run_config={"ops": {"design_round": {"config": ROUND}}})
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    message = failure.step_failure_data.user_failure_data.description
    assert "verification failed, nothing added" in message and "do not reproduce" in message
    assert "\n" not in message
    assert instance.get_dynamic_partitions(shards.name) == ["0"] and not (tmp_path / "design_shards").exists()
