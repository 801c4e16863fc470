"""Fine-tuning across fidelities: data.out_len real (30 / 301 / other bin counts), pretraining data in
its own folder (the pretrained_model asset) and trained_model starting from it."""

import json

import numpy as np
import pytest

from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.rawfiles import spectra_path
from crrecon_pipeline.data.transforms import PrepareSettings, bin_spectra
from crrecon_pipeline.train.checkpoints import load as load_checkpoint
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train

from .helpers import TINY as TRAINING_TINY
from .helpers import run_cli

TINY = TRAINING_TINY + ["training.epochs=2", "training.save_every=0"]  # later --set values win


def test_bin_spectra_301_is_the_samples_and_other_counts_follow_the_mean_rule():
    rng = np.random.default_rng(0)
    spectra = rng.normal(size=(5, 3, 301)).astype(np.float32)
    assert np.array_equal(bin_spectra(spectra, PrepareSettings(n_bins=301)), spectra)
    descending = PrepareSettings(n_bins=301, wavelength_first_nm=700, wavelength_last_nm=400)
    assert np.array_equal(bin_spectra(spectra, descending), spectra[..., ::-1])
    assert np.array_equal(bin_spectra(spectra, PrepareSettings(n_bins=301, binning="subsample")), spectra)
    # 20 bins: floor(k * 300 / 20) = 15 k, the last bin takes samples 285..300 (16 samples)
    by_hand = np.stack([spectra[..., 15 * k:15 * k + 15].mean(-1) for k in range(19)]
                       + [spectra[..., 285:].mean(-1)], -1)
    np.testing.assert_allclose(bin_spectra(spectra, PrepareSettings(n_bins=20)), by_hand, rtol=1e-6, atol=1e-6)
    # 7 bins (300 / 7 is no integer): edges floor(300 k / 7), every sample in exactly one bin
    edges = PrepareSettings(n_bins=7).bin_edges()
    assert list(edges) == [0, 42, 85, 128, 171, 214, 257, 301]
    assert len(PrepareSettings(n_bins=301).bin_centers_nm()) == 301
    for bad in (0, 302):
        with pytest.raises(ValueError, match=r"prepare\.n_bins=(0|302): "):
            PrepareSettings(n_bins=bad)


@pytest.mark.slow
def test_out_len_301_end_to_end_and_a_mismatch_is_one_line(raw_dir, tmp_path):
    out = tmp_path / "p301"
    res = run_cli("preprocess", "--raw", raw_dir, "--out", out, "--bins", 301)
    assert res.returncode == 0, res.stderr
    prepared = load_prepared(out)
    assert prepared.bayer.shape[1:] == (2, 2, 301) and len(prepared.wavelengths_nm) == 301
    raw = np.load(spectra_path(raw_dir, 0))
    row = int(prepared.source_rows[0])
    np.testing.assert_array_equal(prepared.bayer[0, 0, 0], -raw[row, 0])  # no binning: the raw samples (sign flipped)
    np.testing.assert_array_equal(prepared.bayer[0, 1, 1], -raw[row, 2])

    cfg = load_config("configs/quick.yaml", TINY + ["data.out_len=301", "model.params.out_len=301"])
    metrics = train(cfg, prepared, tmp_path / "run301", device="cpu", log=lambda m: None)
    assert np.load(tmp_path / "run301" / "outputs" / "val_predictions.npy").shape[1:] == (2, 2, 301)
    assert np.isfinite(metrics.val_mse) and metrics.baseline_val_mse > 0
    assert load_checkpoint(metrics.best_checkpoint)["model"]["scale.mean"].shape == (2, 2, 301)

    res = run_cli("train", "--config", "configs/quick.yaml", "--prepared", out, "--out", tmp_path / "bad",
                  *[a for s in TINY for a in ("--set", s)])
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].endswith("prepared data has 301 spectral bins, data.out_len is 30")
    assert "Traceback" not in res.stderr
    assert run_cli("preprocess", "--raw", raw_dir, "--out", tmp_path / "p0", "--bins", 0).returncode != 0


@pytest.mark.slow
def test_train_from_raw_bins_by_out_len(raw_dir, tmp_path):
    res = run_cli("train", "--config", "configs/quick.yaml", "--raw", raw_dir, "--out", tmp_path / "r",
                  *[a for s in TINY + ["data.out_len=20", "model.params.out_len=20"] for a in ("--set", s)])
    assert res.returncode == 0, res.stderr
    assert load_prepared(tmp_path / "r" / "prepared").bayer.shape[-1] == 20
    assert json.loads(res.stdout.strip().splitlines()[-1])["val_mse"] > 0


@pytest.mark.slow
def test_pretrained_model_asset_then_trained_model_starts_from_it(tmp_path):
    """pretrained_model simulates its own rows (reused by a second run), trains with out_len 20; trained_model
    with init_from: pretrained_model starts from its checkpoint, the out_len-shaped tensors skipped and listed."""
    import dagster as dg

    from crrecon_pipeline.defs.assets.prepared import filtered_bayer, rotated_bayer
    from crrecon_pipeline.defs.assets.pretrain import PretrainedModelConfig, pretrained_model
    from crrecon_pipeline.defs.assets.raw import raw_shard
    from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model
    from crrecon_pipeline.defs.partitions import shards
    from crrecon_pipeline.defs.resources import (
        CrreconPaths,
        FilterSettings,
        ModelChecks,
        SimulatorResource,
        TrainingDevice,
    )

    home = tmp_path / "home"
    res = {"paths": CrreconPaths(home=str(home)), "filtering": FilterSettings(), "model_checks": ModelChecks(),
           "simulator": SimulatorResource(rows_per_shard=200, initial_shards=1, seed=3, period_um=1.6),
           "device": TrainingDevice(device="cpu")}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, ["0"])

    def cfg(*extra):
        return load_config("configs/quick.yaml", TINY + ["training.epochs=1", *extra])

    fine_tune = TrainedModelConfig(**cfg("training.init_from=pretrained_model").to_dict())
    fine_tune_run_config = dg.RunConfig({"trained_model": fine_tune})
    # no materialization yet: one line, not a traceback
    result = dg.materialize([trained_model], instance=instance, resources=res, raise_on_error=False,
                            run_config=fine_tune_run_config)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "pretrained_model has no materialization" in failure.step_failure_data.error.message

    pre_cfg = PretrainedModelConfig(**cfg("data.out_len=20", "model.params.out_len=20").to_dict(),
                                    simulator={"rows": 120, "seed": 9})
    runs = [dg.materialize([pretrained_model], instance=instance, resources=res,
                           run_config=dg.RunConfig({"pretrained_model": pre_cfg})) for _ in range(2)]
    metas = [r.asset_materializations_for_node("pretrained_model")[0].metadata for r in runs]
    assert [m["rows_reused"].value for m in metas] == [False, True]
    assert metas[0]["pretrain_rows"].value == 120 and "| cell period L | 1.6 µm |" in metas[0]["simulation"].value
    assert metas[0]["pretrain_dir"].value == metas[1]["pretrain_dir"].value
    assert {"val_mse", "baseline_val_mse", "val_pearson", "model_card", "checkpoint"} <= set(metas[0])
    pretrained_ckpt = metas[1]["checkpoint"].value
    assert (str(home / "pretrain") in pretrained_ckpt
            and load_checkpoint(pretrained_ckpt)["model"]["scale.mean"].shape[-1] == 20)

    dg.materialize([raw_shard, filtered_bayer, rotated_bayer], partition_key="0", instance=instance, resources=res)
    result = dg.materialize([trained_model], instance=instance, resources=res,
                            run_config=fine_tune_run_config)
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    assert meta["init_from"].value == pretrained_ckpt
    # the out_len-shaped tensors
    assert set(meta["init_skipped"].value.split(", ")) == {"mix.weight", "mix.bias", "scale.mean"}
    state = load_checkpoint(meta["checkpoint"].value)
    assert state["config"]["training"]["init_from"] == pretrained_ckpt
    assert state["model"]["scale.mean"].shape[-1] == 30


@pytest.mark.slow
def test_pretraining_on_cheap_rows_beats_scratch_on_a_small_expensive_set(tmp_path):
    """The cross-fidelity path pays: the quick preset pretrained on 2,000 cheap rows (a coarse multi-slice
    simulation: 32x32 grid, 8 slices, 30 nm wavelength step, ~7 s), then fine-tuned on 300 rows of a finer one (64x64,
    10 slices, every 10 nm), predicts the finer set's held-out rows clearly better than the same preset trained from
    scratch on them for the same epochs, with the same split and seed. (From thin-element rows the gain is smaller
    in this geometry, where the two physics models barely correlate: docs/benchmarks.md, Fine-tuning.)"""
    from crrecon_pipeline.physics.params import PhysicsParams
    from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
    from crrecon_pipeline.physics.structures import StructureParams

    def simulate(name, rows, seed, grid, slices, step_nm):
        physics = PhysicsParams(fidelity="multislice", multislice_grid=grid, multislice_slices=slices,
                                multislice_step_nm=step_nm)
        write_dataset(tmp_path / name, rows, 1, SimulationSettings(seed=seed, physics=physics,
                                                                   structures=StructureParams(unfinished_fraction=0.0)))
        preprocess(tmp_path / name, tmp_path / f"{name}_prepared")
        return load_prepared(tmp_path / f"{name}_prepared")

    cheap = simulate("cheap", 2000, 1000, 32, 8, 30)
    small = simulate("small", 300, 5, 64, 10, 10)
    common = ["training.save_every=0", "data.train_ratio=0.5"]  # 150 rows to learn from, ~150 to judge on
    pre = train(load_config("quick", common + ["training.epochs=15"]), cheap, tmp_path / "pre", device="cpu",
                log=lambda m: None)
    ratios = {}
    for arm, extra in (("scratch", []), ("fine_tuned", [f"training.init_from={pre.best_checkpoint}"])):
        m = train(load_config("quick", common + ["training.epochs=30", *extra]), small, tmp_path / arm, device="cpu",
                  log=lambda m: None)
        assert m.val_samples >= 100
        ratios[arm] = m.mse_vs_baseline
    assert ratios["fine_tuned"] < 0.8 * ratios["scratch"], ratios  # measured: 0.41 vs 0.75
