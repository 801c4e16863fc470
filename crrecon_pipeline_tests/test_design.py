"""Inverse design: the efficiency by hand, binary / symmetric / deterministic designs, the objective rising,
verification with the recorded simulator settings, the CLI and the Dagster asset with its check."""

import json
import shutil

import dagster as dg
import numpy as np
import pytest
import torch

from crrecon_pipeline.cli import main
from crrecon_pipeline.data.prepare import preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.transforms import PrepareSettings, bin_spectra, to_bayer
from crrecon_pipeline.design.optimize import DesignSettings, initial_latent, optimize, optimize_through_simulator
from crrecon_pipeline.design.run import run_design
from crrecon_pipeline.design.verify import recorded_simulation, training_best
from crrecon_pipeline.physics.bands import band_efficiencies, bayer_bands, routing_efficiency
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.physics.simulate import simulate_spectra
from crrecon_pipeline.train.inference import load_model
from crrecon_pipeline.train.loop import train

from .helpers import tiny_config

FEW = DesignSettings(designs=3, steps=15, seed=5)


@pytest.fixture(scope="module")
def checkpoint(prepared_dir, tmp_path_factory):
    """A tiny surrogate trained for 2 epochs on the simulated session data."""
    run = tmp_path_factory.mktemp("design_run")
    metrics = train(tiny_config("training.epochs=2"), load_prepared(prepared_dir), run, device="cpu",
                    log=lambda m: None)
    return metrics.best_checkpoint


def bayer_of(raw: np.ndarray) -> np.ndarray:
    """Raw negative spectra -> Bayer bins, as the preprocessing does (default settings)."""
    return to_bayer(bin_spectra(-raw, PrepareSettings()))


# ---------------------------------------------------------------------------------------------------- efficiency

def test_efficiency_by_hand():
    lam = np.array([450.0, 550.0, 650.0])
    bayer = np.zeros((1, 2, 2, 3))
    bayer[0, 0, 0] = [0.9, 0.9, 0.30]  # R: only 650 nm counts
    bayer[0, 0, 1] = [0.9, 0.20, 0.9]  # G1 + G2 at 550 nm
    bayer[0, 1, 0] = [0.9, 0.15, 0.9]
    bayer[0, 1, 1] = [0.40, 0.9, 0.9]  # B at 450 nm
    assert band_efficiencies(bayer, lam)[0] == pytest.approx([0.40, 0.35, 0.30])
    assert routing_efficiency(bayer, lam)[0] == pytest.approx((0.40 + 0.35 + 0.30) / 3)
    assert routing_efficiency(bayer, lam, bayer_bands(weights=(0, 0, 1)))[0] == pytest.approx(0.30)
    assert routing_efficiency(bayer, lam, bayer_bands(weights=(1, 3, 0)))[0] == pytest.approx((0.40 + 3 * 0.35) / 4)
    # torch in, torch out, the same number, differentiable
    t = torch.tensor(bayer, requires_grad=True)
    e = routing_efficiency(t, lam)
    e.sum().backward()
    assert float(e[0].detach()) == pytest.approx(routing_efficiency(bayer, lam)[0])
    assert float(t.grad[0, 1, 1, 0]) == pytest.approx(1 / 3) and float(t.grad[0, 0, 0, 0]) == 0.0


def test_efficiency_band_means_and_uniform_pattern():
    lam = PrepareSettings().bin_centers_nm()  # 30 bins, 10 per band
    rng = np.random.default_rng(0)
    bayer = rng.random((4, 2, 2, 30))
    expected = (bayer[:, 1, 1, :10].mean(1) + (bayer[:, 0, 1, 10:20] + bayer[:, 1, 0, 10:20]).mean(1)
                + bayer[:, 0, 0, 20:].mean(1)) / 3
    assert routing_efficiency(bayer, lam) == pytest.approx(expected)
    # a uniform pattern sends 1/4 of the light to every pixel: (1/4 + 1/2 + 1/4) / 3
    uniform = bayer_of(simulate_spectra(np.zeros((1, 128, 128), np.uint8)))
    assert routing_efficiency(uniform, lam)[0] == pytest.approx(1 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="holds no wavelength"):
        routing_efficiency(bayer, lam, bayer_bands((400, 401, 402, 700)))
    with pytest.raises(ValueError, match="increasing"):
        bayer_bands((400, 600, 500, 700))


# ---------------------------------------------------------------------------------------------------- optimizer

@pytest.mark.slow
def test_designs_binary_symmetric_deterministic_and_improving(checkpoint, prepared_dir):
    model, config = load_model(checkpoint, "cpu")
    lam = load_prepared(prepared_dir).wavelengths_nm
    a = optimize(model, config, lam, FEW)
    b = optimize(model, config, lam, FEW)
    c = optimize(model, config, lam, DesignSettings(designs=3, steps=15, seed=6))
    s = a.structures
    assert s.shape == (3, 128, 128) and s.dtype == np.uint8 and set(np.unique(s)) <= {0, 1}
    assert np.array_equal(s, s.transpose(0, 2, 1))  # diagonal-symmetric, so G1 = G2
    assert 0 < s.mean() < 1
    assert np.array_equal(s, b.structures) and np.array_equal(a.predicted_efficiency, b.predicted_efficiency)
    assert not np.array_equal(s, c.structures)
    # the surrogate's objective rises over the steps, and the final binary designs beat their binary starts
    assert a.history[-1]["mean_efficiency"] > a.history[0]["mean_efficiency"] + 1e-3
    assert a.predicted_efficiency.mean() > a.initial_efficiency.mean()
    assert a.predicted_efficiency == pytest.approx(routing_efficiency(a.predicted, lam))
    assert [h["beta"] for h in a.history] == sorted(h["beta"] for h in a.history)  # rising sharpness


@pytest.mark.slow
def test_designing_through_the_simulator_climbs_the_true_efficiency():
    """The physics reference: the simulator's own gradient in the surrogate's place. Its designs are binary and
    symmetric, beat their starts and the blank cell in the simulator, and its last steps score what the final
    structures simulate to (the projection is nearly binary by then)."""
    settings = DesignSettings(designs=2, steps=60, seed=3, min_feature_px=0)
    structures, history = optimize_through_simulator(PhysicsParams(), settings)
    assert structures.shape == (2, 128, 128) and set(np.unique(structures)) <= {0, 1}
    assert np.array_equal(structures, structures.transpose(0, 2, 1))
    lam = PhysicsParams().wavelengths_um() * 1000

    def simulated(s):
        raw = -simulate_spectra(s)  # (N, 3, W): R, G, B
        return routing_efficiency(np.stack([raw[:, [0, 1]], raw[:, [1, 2]]], 1), lam)

    starts = (initial_latent(2, 3) > 0).astype(np.uint8)
    final, begun = simulated(structures), simulated(starts)
    assert (final > begun + 0.05).all() and (final > 1 / 3 + 0.03).all()
    assert history[-1]["max_efficiency"] == pytest.approx(final.max(), abs=0.01)
    assert [h["beta"] for h in history] == sorted(h["beta"] for h in history)


# ---------------------------------------------------------------------------------------------------- verification

@pytest.mark.slow
def test_run_design_simulates_with_recorded_settings(checkpoint, raw_dir, prepared_dir, tmp_path):
    out = tmp_path / "designs"
    summary = run_design(checkpoint, prepared_dir, out, FEW, device="cpu")
    assert summary.verified and summary.reproduction_error <= 1e-4
    structures = np.load(out / "binary_dataset_128_0.npy")
    spectra = np.load(out / "spectra_latest_0.npy")
    assert structures.shape == (3, 1, 128, 128) and structures.dtype == np.uint8
    assert spectra.shape == (3, 3, 301) and spectra.dtype == np.float32 and (spectra <= 0).all()
    # exactly a direct simulator call with the settings in simulation.json
    physics = PhysicsParams(**json.loads((raw_dir / "simulation.json").read_text())["physics"])
    direct = simulate_spectra(structures, physics)
    np.testing.assert_allclose(spectra, direct, atol=1e-7)
    lam = load_prepared(prepared_dir).wavelengths_nm
    sim = summary.simulated()
    assert sim == pytest.approx(routing_efficiency(bayer_of(direct), lam), abs=1e-6)
    best, _ = training_best(load_prepared(prepared_dir))
    prepared = load_prepared(prepared_dir)
    everything = np.concatenate([prepared.bayer, prepared.rotated_bayer])
    assert summary.training_best_efficiency == pytest.approx(routing_efficiency(everything, lam).max(), abs=1e-6)
    assert best == pytest.approx(summary.training_best_efficiency, abs=1e-6)
    assert (out / "designs.png").stat().st_size > 1000 and (out / "design_progress.png").exists()
    on_disk = json.loads((out / "designs.json").read_text())
    assert on_disk == json.loads(json.dumps(summary.to_json()))
    assert summary.structures_file.endswith("binary_dataset_128_0.npy")
    assert summary.spectra_file.endswith("spectra_latest_0.npy")
    # a second run picks the next shard index; an explicit collision is refused
    assert run_design(checkpoint, prepared_dir, out, DesignSettings(designs=1, steps=2),
                      device="cpu").shard_index == 1
    with pytest.raises(ValueError, match="already exists"):
        run_design(checkpoint, prepared_dir, out, FEW, shard_index=0, device="cpu")


@pytest.mark.slow
def test_verification_follows_the_recorded_settings(checkpoint, prepared_dir, tmp_path):
    """Data simulated with a different detector depth: the designs are simulated at that depth, so their
    numbers equal a direct call at depth 3.0 and differ from the default depth's."""
    raw = tmp_path / "raw"
    write_dataset(raw, rows=60, shards=1, settings=SimulationSettings(seed=2, physics=PhysicsParams(depth_um=3.0)))
    preprocess(raw, tmp_path / "prepared")
    recorded = recorded_simulation(load_prepared(tmp_path / "prepared"))
    assert recorded.settings.physics.depth_um == 3.0 and recorded.source == str(raw / "simulation.json")
    summary = run_design(checkpoint, tmp_path / "prepared", tmp_path / "out", FEW, device="cpu")
    structures = np.load(tmp_path / "out" / "binary_dataset_128_0.npy")
    lam = PrepareSettings().bin_centers_nm()
    sim = np.array(summary.simulated())
    at_3 = routing_efficiency(bayer_of(simulate_spectra(structures, PhysicsParams(depth_um=3.0))), lam)
    at_default = routing_efficiency(bayer_of(simulate_spectra(structures)), lam)
    assert sim == pytest.approx(at_3, abs=1e-6)
    assert np.abs(sim - at_default).max() > 1e-3

    # a record edited after the fact no longer reproduces the training spectra: nothing is simulated
    record = json.loads((raw / "simulation.json").read_text())
    record["physics"]["depth_um"] = 2.0
    (raw / "simulation.json").write_text(json.dumps(record))
    recorded = recorded_simulation(load_prepared(tmp_path / "prepared"))
    assert recorded.settings is None and "do not reproduce" in recorded.reason and recorded.reproduction_error > 1e-3

    # no record (e.g. the user's FDTD data): structures only, simulated_efficiency null
    (raw / "simulation.json").unlink()
    summary = run_design(checkpoint, tmp_path / "prepared", tmp_path / "out2", FEW, device="cpu")
    assert not summary.verified and "not found" in summary.verification
    assert all(d.simulated_efficiency is None for d in summary.designs) and summary.spectra_file is None
    assert "simulated_bands" not in json.loads((tmp_path / "out2" / "designs.json").read_text())["designs"][0]
    assert (tmp_path / "out2" / "binary_dataset_128_0.npy").exists()
    assert not (tmp_path / "out2" / "spectra_latest_0.npy").exists()


# ---------------------------------------------------------------------------------------------------- CLI + Dagster

@pytest.mark.slow
def test_cli_design(checkpoint, prepared_dir, tmp_path, capsys):
    args = ["design", "--checkpoint", str(checkpoint), "--prepared", str(prepared_dir), "--out", str(tmp_path / "o"),
            "--designs", "2", "--steps", "5", "--seed", "1", "--device", "cpu"]
    assert main(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"designs", "training_best_efficiency", "out"}
    assert [set(d) for d in last["designs"]] == [{"index", "predicted_efficiency", "simulated_efficiency"}] * 2
    assert all(isinstance(d["simulated_efficiency"], float) for d in last["designs"])
    # bad input: exit 2 with one line naming the problem, nothing written
    assert main(args[:2] + [str(tmp_path / "missing.pt")] + args[3:]) == 2
    assert main(args + ["--shard-index", "0"]) == 2
    assert main(args + ["--band-weights", "1,x,1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "missing.pt: checkpoint not found" in err[-3] and "already exists" in err[-2] and "--band-weights" in err[-1]
    assert (sorted(p.name for p in (tmp_path / "o").glob("*.npy"))
            == ["binary_dataset_128_0.npy", "spectra_latest_0.npy"])


@pytest.mark.slow
def test_designed_structures_asset_and_check(checkpoint, prepared_dir, tmp_path):
    from crrecon_pipeline.definitions import defs
    from crrecon_pipeline.defs.assets.design import designed_structures
    from crrecon_pipeline.defs.resources import CrreconPaths, TrainingDevice

    repo = defs.get_repository_def()
    assert dg.AssetKey("designed_structures") in repo.assets_defs_by_key
    assert "designed_structures" in str(defs.resolve_job_def("design_job").asset_layer.executable_asset_keys)

    shutil.copytree(prepared_dir, tmp_path / "prepared")
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(dg.AssetMaterialization("trained_model", metadata={
        "checkpoint": dg.MetadataValue.path(str(checkpoint))}))
    resources = {"paths": CrreconPaths(home=str(tmp_path)), "device": TrainingDevice(device="cpu")}

    def run(tolerance):
        config = {"ops": {"designed_structures": {"config": {"designs": 2, "steps": 5, "tolerance": tolerance}}}}
        result = dg.materialize([designed_structures], instance=instance, resources=resources, run_config=config)
        meta = result.asset_materializations_for_node("designed_structures")[0].metadata
        check = result.get_asset_check_evaluations()[0]
        return meta, check

    meta, check = run(1.0)
    assert meta["verified"].value and "data:image/png;base64," in meta["designs_picture"].value
    assert check.check_name == "check_design_verified" and check.passed
    gap = meta["max_abs_gap"].value
    assert check.metadata["max_abs_gap"].value == pytest.approx(gap)
    meta, check = run(gap / 2)  # same seed, same designs, a tolerance below the gap: the check fails
    assert meta["max_abs_gap"].value == pytest.approx(gap) and not check.passed


def test_simulator_backed_raw_asset_records_its_settings(tmp_path):
    """The Dagster raw asset writes simulation.json beside its shards, so designs made on data prepared by the
    asset graph are verified with the simulator resource's settings."""
    from crrecon_pipeline.defs.assets.prepared import filtered_bayer
    from crrecon_pipeline.defs.assets.raw import raw_shard
    from crrecon_pipeline.defs.partitions import shards
    from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, SimulatorResource

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, ["0"])
    simulator = SimulatorResource(rows_per_shard=80, seed=4, depth_um=2.0)
    result = dg.materialize([raw_shard, filtered_bayer], partition_key="0", instance=instance, resources={
        "paths": CrreconPaths(home=str(tmp_path)), "simulator": simulator, "filtering": FilterSettings()})
    assert result.success
    recorded = recorded_simulation(load_prepared(tmp_path / "prepared"))
    assert recorded.settings == simulator.settings() and recorded.source == str(tmp_path / "raw" / "simulation.json")
