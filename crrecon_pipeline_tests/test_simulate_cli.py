"""`crrecon simulate` with geometry flags and user structures; settings round trip; the raw asset's metadata."""

import json

import dagster as dg
import numpy as np
import pytest

from crrecon_pipeline.cli import main
from crrecon_pipeline.defs.assets.raw import raw_shard
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, SimulatorResource
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.physics.simulate import simulate_spectra
from crrecon_pipeline.physics.structures import StructureGenerator, StructureParams

GEOMETRY = ["--period-um", "1.6", "--height-um", "0.6", "--depth-um", "1.2", "--n-substrate", "1.46",
            "--cauchy-a", "2.0", "--cauchy-b", "0.01"]


def structures(n, seed=4):
    s, _ = StructureGenerator(seed=seed).rows(0, n)
    return s


def test_settings_round_trip_and_simulation_json(tmp_path):
    settings = SimulationSettings(seed=5,
                                  physics=PhysicsParams(fidelity="multislice", period_um=1.6, multislice_slices=12),
                                  structures=StructureParams(fill_mean=0.3))
    assert SimulationSettings.from_dict(settings.to_dict()) == settings
    write_dataset(tmp_path, rows=4, shards=1, settings=SimulationSettings(seed=2))
    record = json.loads((tmp_path / "simulation.json").read_text())
    assert (SimulationSettings.from_dict(record) == SimulationSettings(seed=2)
            and record["physics"]["fidelity"] == "thin")
    old = {"seed": 1, "physics": {"period_um": 2.0}}  # a record from before the fidelity setting
    assert SimulationSettings.from_dict(old).physics.fidelity == "thin"
    with pytest.raises(ValueError, match="unknown physics key"):
        SimulationSettings.from_dict({"physics": {"periodum": 2.0}})


@pytest.mark.parametrize("fidelity", ["thin", "multislice"])
def test_simulate_given_structures_into_shard_0(tmp_path, fidelity, capsys):
    s = structures(3)
    np.save(tmp_path / "s.npy", (s * 255).astype(np.uint8))  # (N, 128, 128) in the {0,255} encoding
    out = tmp_path / "raw"
    assert main(["simulate", "--structures", str(tmp_path / "s.npy"), "--out", str(out), "--fidelity", fidelity,
                 "--chunk", "2", *GEOMETRY]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["rows"] == 3 and result["fidelity"] == fidelity
    written = np.load(out / "binary_dataset_128_0.npy")
    assert written.shape == (3, 1, 128, 128) and written.dtype == np.uint8 and np.array_equal(written[:, 0], s)
    record = json.loads((out / "simulation.json").read_text())
    assert record["physics"]["fidelity"] == fidelity
    assert (record["physics"]["period_um"], record["physics"]["depth_um"], record["physics"]["n_substrate"],
            record["physics"]["cauchy_a"], record["physics"]["cauchy_b"]) == (1.6, 1.2, 1.46, 2.0, 0.01)
    assert record["structures_file"].endswith("s.npy") and record["rows"] == 3
    again = simulate_spectra(s, SimulationSettings.from_dict(record).physics)  # re-simulated from the record
    np.testing.assert_allclose(np.load(out / "spectra_latest_0.npy"), again, atol=1e-6)  # chunks of 2 vs one batch


def test_multislice_resolution_flags_are_recorded_and_a_bad_grid_is_one_line(tmp_path, capsys):
    """--slices / --grid / --step-nm: the cheap pretraining settings reach the physics and simulation.json."""
    out = tmp_path / "raw"
    assert main(["simulate", "--out", str(out), "--rows", "4", "--shards", "1", "--fidelity", "multislice",
                 "--slices", "8", "--grid", "32", "--step-nm", "30"]) == 0
    physics = json.loads((out / "simulation.json").read_text())["physics"]
    assert (physics["multislice_slices"], physics["multislice_grid"], physics["multislice_step_nm"]) == (8, 32, 30.0)
    capsys.readouterr()
    assert main(["simulate", "--out", str(tmp_path / "bad"), "--rows", "4", "--fidelity", "multislice",
                 "--grid", "48"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "multislice_grid" in err[0] and not (tmp_path / "bad").exists(), err


@pytest.mark.parametrize("bad, message", [
    (lambda s: np.where(np.arange(5)[:, None, None] == 4, 2 * s, s), "binary"),  # a bad value in the last chunk
    (lambda s: s[:, :64, :64], "shape"),
    (lambda s: np.concatenate([s[:2], 255 * s[2:]]), "mix"),
])
def test_bad_structures_are_one_line_and_leave_nothing(tmp_path, capsys, bad, message):
    path = tmp_path / "bad.npy"
    np.save(path, bad(structures(5)).astype(np.uint8))
    out = tmp_path / "raw"
    assert main(["simulate", "--structures", str(path), "--out", str(out), "--chunk", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and message in err[0], err
    assert not out.exists() or not any(out.iterdir()), "no half-written shard"


def test_rows_or_structures_are_required(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path)]) == 2
    assert "--rows" in capsys.readouterr().err


def test_raw_asset_records_the_simulator_settings(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, ["0"])
    sim = SimulatorResource(rows_per_shard=2, initial_shards=1, seed=3, unfinished_fraction=0.0, fidelity="multislice",
                            multislice_slices=8, period_um=1.6, depth_um=1.2, n_substrate=1.46)
    result = dg.materialize([raw_shard], partition_key="0", instance=instance, resources={
        "paths": CrreconPaths(home=str(tmp_path)), "simulator": sim, "filtering": FilterSettings()})
    assert result.success
    meta = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("raw_shard")}
    spectra = meta["raw_spectra"]
    assert spectra["simulator_fidelity"].value == "multislice"
    assert ("| slices | 8 |" in spectra["simulator"].value
            and "| substrate index n_s | 1.46 |" in spectra["simulator"].value)
    recorded = spectra["simulation_settings"].value
    assert recorded["rows"] == {"start": 0, "stop": 2}
    settings = SimulationSettings.from_dict(recorded)
    assert settings == sim.settings()
    s = np.load(tmp_path / "raw" / "binary_dataset_128_0.npy")
    np.testing.assert_allclose(np.load(tmp_path / "raw" / "spectra_latest_0.npy"),
                               simulate_spectra(s, settings.physics), atol=1e-6)


def test_one_range_one_message_from_python_the_cli_and_a_dagster_resource(tmp_path, capsys):
    """A value outside a setting's range is refused with the same line by the core class, by the flag generated from
    it and by the Dagster resource generated from it (before any row is simulated)."""
    from crrecon_pipeline.errors import ConfigError

    message = "physics.period_um=1e+30: must be in (0, 100]"
    with pytest.raises(ConfigError) as refused:
        PhysicsParams(period_um=1e30)
    assert str(refused.value) == message

    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--out", str(tmp_path / "cli"), "--rows", "4", "--period-um", "1e30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1 and f"argument --period-um: {message} " in err[0], err

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, ["0"])
    result = dg.materialize([raw_shard], partition_key="0", instance=instance, raise_on_error=False, resources={
        "paths": CrreconPaths(home=str(tmp_path / "home")), "simulator": SimulatorResource(period_um=1e30),
        "filtering": FilterSettings()})
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_failure_data.user_failure_data.description == message
    assert not list(tmp_path.rglob("*.npy"))
