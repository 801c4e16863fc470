"""The Dagster layer through dg.materialize with temporary instances and resources: metadata, checks (and that
blocking checks block), training with progress events, analyses, the sensor and the schedule."""

import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.definitions import defs
from crrecon_pipeline.defs.assets.analysis import dataset_profile, run_comparison, training_log_analysis
from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.resources import FilterSettings, ModelChecks, SimulatorResource
from crrecon_pipeline.defs.schedules import weekly_retraining
from crrecon_pipeline.defs.sensors import new_shard_sensor

from .dagster_helpers import DATA_ASSETS, check_results, new_instance, resources
from .helpers import tiny_config, write_raw_pair


def test_definitions_load():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"raw_structures", "raw_spectra", "filtered_bayer", "rotated_bayer", "trained_model",
            "training_log_analysis", "run_comparison", "dataset_profile"} <= keys
    spec = repo.assets_defs_by_key[dg.AssetKey("trained_model")]
    assert spec.op.pool == "gpu" and "nvidia.com/gpu" in str(spec.op.tags)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Both simulated shards prepared, then a tiny training and the analyses, in one temporary instance."""
    home = tmp_path_factory.mktemp("home")
    instance = new_instance()
    data = [dg.materialize(DATA_ASSETS, partition_key=k, instance=instance, resources=resources(home))
            for k in ("0", "1")]
    cfg = TrainedModelConfig(**tiny_config("training.epochs=3").to_dict())
    train = dg.materialize([trained_model, training_log_analysis, run_comparison, dataset_profile],
                           instance=instance, resources=resources(home),
                           run_config=dg.RunConfig({"trained_model": cfg}),
                           selection=None)
    return {"home": home, "instance": instance, "data": data, "train": train}


def test_data_assets_metadata_and_checks(pipeline):
    result = pipeline["data"][1]
    assert result.success
    meta = result.asset_materializations_for_node("filtered_bayer")[0].metadata
    raw_rows, kept = meta["raw_rows"].value, meta["kept_rows"].value
    assert raw_rows == 300
    assert kept + meta["dropped_unfinished"].value + meta["dropped_nonfinite"].value == raw_rows
    assert 0.3 < kept / raw_rows < 0.75 and meta["dropped_nonfinite"].value == 0
    assert "data:image/png;base64" in meta["preview"].value
    raw_meta = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("raw_shard")}
    assert len(raw_meta["raw_structures"]["digest"].value) == 64 and raw_meta["raw_spectra"]["rows"].value == 300
    assert raw_meta["raw_spectra"]["digest_algorithm"].value == "blake3"
    assert raw_meta["raw_spectra"]["simulation_settings"].value["seed"] == 3
    checks = check_results(result)
    assert checks == {"check_binary_structures": True, "check_finite_spectra": True, "check_sign_convention": True,
                      "check_raw_data_passed": True, "check_row_counts": True, "check_no_bad_rows": True,
                      "check_greens_equal": True,
                      "check_kept_fraction": True, "check_rotation_exact": True}
    assert (pipeline["home"] / "raw" / "binary_dataset_128_1.npy").exists()


def test_trained_model_metadata_progress_and_analysis(pipeline):
    result, instance = pipeline["train"], pipeline["instance"]
    assert result.success
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    for key in ("val_mse", "baseline_val_mse", "val_pearson", "n_params", "samples_per_s"):
        assert key in meta
    assert meta["epochs_completed"].value == 3
    assert "data:image/png;base64" in meta["loss_curves"].value and "data:image/png;base64" in meta["predictions"].value
    assert os.path.exists(meta["checkpoint"].value)
    observations = instance.fetch_observations(dg.AssetKey("trained_model"), limit=50).records
    assert sorted(r.asset_observation.metadata["epoch"].value for r in observations) == [1, 2, 3]
    assert "check_beats_baseline" in check_results(result)
    analysis = result.asset_materializations_for_node("training_log_analysis")[0].metadata
    assert analysis["epochs_completed"].value == 3
    comparison = result.asset_materializations_for_node("run_comparison")[0].metadata
    assert comparison["runs"].value == 1 and "trained_model:" in comparison["next_run_config"].value
    profile = result.asset_materializations_for_node("dataset_profile")[0].metadata
    assert profile["shards"].value == 2 and profile["diagonal_symmetric_pct"].value == 100.0
    assert (pipeline["home"] / "reports" / "next_run.yaml").exists()


def test_handoff_reads_the_latest_materializations_as_typed_records(pipeline):
    from crrecon_pipeline.defs.handoff import latest_prepared_version, latest_pretrained_model, latest_trained_model

    instance, home = pipeline["instance"], pipeline["home"]
    model = latest_trained_model(instance)
    assert model.checkpoint.is_file() and model.run_dir.is_dir() and model.run_dir.parent == home / "runs"
    store = PreparedStore(home / "prepared")
    assert model.versions() == {0: store.latest(0).version, 1: store.latest(1).version}
    assert latest_pretrained_model(instance) is None
    rotated = latest_prepared_version(instance, "rotated_bayer", "1")
    assert rotated.version == store.latest(1).version and rotated.run_id == pipeline["data"][1].run_id
    assert latest_prepared_version(instance, "rotated_bayer", "7") is None


def test_every_check_is_built_from_its_one_definition():
    """The code location's check specs are the registries' entries (name, asset, description, blocking), the data
    checks partitioned by shard; the lineage's blocking list is derived from the same registry."""
    from crrecon_pipeline.data.checks import DATA_CHECKS, RECORDED_NAMES
    from crrecon_pipeline.defs.checks import ASSET_KEYS
    from crrecon_pipeline.defs.lineage import BLOCKING_CHECKS
    from crrecon_pipeline.design.verify import DESIGN_CHECKS
    from crrecon_pipeline.train.metrics import MODEL_CHECKS

    repo = defs.get_repository_def()
    specs = {spec.name: spec for assets_def in set(repo.assets_defs_by_key.values()) for spec in assets_def.check_specs}
    groups = [checks for registry in (DATA_CHECKS, MODEL_CHECKS, DESIGN_CHECKS) for checks in registry.values()]
    registry = {c.name: c for checks in groups for c in checks}
    assert set(specs) == set(registry) and len(registry) == 11
    for name, spec in specs.items():
        check = registry[name]
        assert spec.asset_key.to_user_string() == ASSET_KEYS[check.stage]
        assert (spec.description, spec.blocking) == (check.description, check.blocking)
        assert (spec.partitions_def is shards) == (check.stage in DATA_CHECKS)
    # a manifest's check record names the asset that reports it ("asset"), as stored manifests always did
    assert all(ASSET_KEYS[stage] == name for stage, name in RECORDED_NAMES.items())
    assert BLOCKING_CHECKS == {
        "raw_structures": ["check_binary_structures"],
        "raw_spectra": ["check_sign_convention"],
        "filtered_bayer": ["check_raw_data_passed", "check_row_counts", "check_no_bad_rows", "check_greens_equal",
                           "check_kept_fraction"],
        "rotated_bayer": ["check_rotation_exact"],
    }


def test_settings_are_generated_from_the_core_settings_classes():
    """Each resource and config field generated from a core settings class carries its default and its description;
    the CLI's flags parse to the core defaults; the names and defaults users rely on stay."""
    from crrecon_pipeline.cli import build_parser
    from crrecon_pipeline.data.checks import CheckLimits
    from crrecon_pipeline.data.transforms import PrepareSettings
    from crrecon_pipeline.defs.assets.design import DesignConfig
    from crrecon_pipeline.defs.assets.pretrain import PretrainSimulator
    from crrecon_pipeline.design.optimize import DesignSettings
    from crrecon_pipeline.physics.params import PhysicsParams
    from crrecon_pipeline.physics.shards import SimulationSettings
    from crrecon_pipeline.physics.structures import StructureParams
    from crrecon_pipeline.settings import field_specs, from_flags
    from crrecon_pipeline.train.metrics import ModelCheckLimits

    for settings, cores in ((SimulatorResource(), (PhysicsParams, StructureParams, SimulationSettings)),
                            (FilterSettings(), (PrepareSettings, CheckLimits)), (ModelChecks(), (ModelCheckLimits,)),
                            (DesignConfig(), (DesignSettings,))):
        fields = type(settings).model_fields
        generated = [f for core in cores for f in field_specs(core) if f.name in fields]
        assert generated
        for f in generated:
            assert getattr(settings, f.name) == f.default and fields[f.name].description == f.description, f.name
            assert f.description and fields[f.name].annotation == f.annotation, f.name
    assert SimulatorResource().settings() == SimulationSettings()
    assert FilterSettings().prepare_settings() == PrepareSettings() and FilterSettings().check_limits() == CheckLimits()
    assert DesignConfig().settings() == DesignSettings()
    assert (SimulatorResource().unfinished_fraction, SimulatorResource().fidelity, FilterSettings().n_bins,
            ModelChecks().max_mse_ratio, DesignConfig().tolerance) == (0.47, "thin", 30, 0.5, 0.05)
    assert PretrainSimulator().period_um is None and PretrainSimulator().fidelity == "multislice"

    parser = build_parser()
    args = parser.parse_args(["simulate", "--out", "x"])
    assert from_flags(args, PhysicsParams) == PhysicsParams() and args.unfinished_fraction == 0.47 and args.seed == 0
    args = parser.parse_args(["preprocess", "--raw", "r", "--out", "o", "--bins", "301"])
    assert from_flags(args, PrepareSettings) == PrepareSettings(n_bins=301)
    args = parser.parse_args(["design", "--checkpoint", "c", "--prepared", "p", "--out", "o", "--steps", "5"])
    assert from_flags(args, DesignSettings) == DesignSettings(steps=5) and args.band_edges == "400,500,600,700"


def test_blocking_check_stops_the_rotated_set(tmp_path):
    """An impossible kept-fraction window fails a blocking check: rotated_bayer must not run in that run."""
    instance = new_instance(["0"])
    result = dg.materialize(DATA_ASSETS, partition_key="0", instance=instance, raise_on_error=False,
                            resources=resources(tmp_path, kept_fraction_min=0.95))
    assert check_results(result)["check_kept_fraction"] is False
    assert not result.asset_materializations_for_node("rotated_bayer")
    store = PreparedStore(tmp_path / "prepared")
    assert [v.kind for v in store.versions(0)] == ["filtered"] and store.latest(0) is None  # committed, not LATEST


def test_bad_raw_shard_fails_with_one_clear_line(tmp_path):
    raw = tmp_path / "raw"
    st = np.zeros((5, 1, 128, 128), np.uint8)
    write_raw_pair(raw, 0, st, -np.ones((4, 3, 301), np.float32))
    instance = new_instance(["0"])
    result = dg.materialize(DATA_ASSETS, partition_key="0", instance=instance, raise_on_error=False,
                            resources=resources(tmp_path / "home", raw_dir=raw))
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "spectra_latest_0.npy" in message and "4 rows" in message and "\n" not in message


def test_sensor_fires_once_per_complete_shard(tmp_path):
    raw = tmp_path / "raw"
    instance = new_instance([])
    res = resources(tmp_path / "home", raw_dir=raw)
    st = np.zeros((4, 1, 128, 128), np.uint8)
    sp = -np.full((4, 3, 301), 0.1, np.float32)
    write_raw_pair(raw, 0, st, sp)
    old = time.time() - 60
    for p in raw.iterdir():
        os.utime(p, (old, old))

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=res) as ctx:
            out = new_shard_sensor(ctx)
        return out

    first = tick(None)
    assert [r.partition_key for r in first.run_requests] == ["0"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["0"]
    instance.add_dynamic_partitions(shards.name, ["0"])
    second = tick(first.cursor)
    assert isinstance(second, dg.SkipReason)

    # a half-written shard (spectra still copying: shorter than its header says) is not picked up
    np.save(raw / "binary_dataset_128_1.npy", st)
    np.save(raw / "spectra_latest_1.npy", sp)
    data = (raw / "spectra_latest_1.npy").read_bytes()
    (raw / "spectra_latest_1.npy").write_bytes(data[: len(data) // 2])
    for p in raw.glob("*_1.npy"):
        os.utime(p, (old, old))
    third = tick(first.cursor)
    assert isinstance(third, dg.SkipReason)
    # nor a complete one that is still being touched
    (raw / "spectra_latest_1.npy").write_bytes(data)
    assert isinstance(tick(first.cursor), dg.SkipReason)
    os.utime(raw / "spectra_latest_1.npy", (old, old))
    fourth = tick(first.cursor)
    assert [r.partition_key for r in fourth.run_requests] == ["1"]
    assert isinstance(tick(fourth.cursor), dg.SkipReason)


def test_schedule_targets_training_with_the_default_preset():
    assert weekly_retraining.job_name == "train_job"
    job = defs.resolve_job_def("train_job")
    targeted = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"trained_model", "training_log_analysis"} <= targeted
    with dg.build_schedule_context() as ctx:
        request = next(iter(weekly_retraining.evaluate_tick(ctx).run_requests))
    config = request.run_config["ops"]["trained_model"]["config"]
    assert config["model"]["name"] == "crrecon_xattn" and config["training"]["epochs"] == 100
    assert weekly_retraining.cron_schedule == "0 3 * * 1"
    from crrecon_pipeline.train.config import load_config

    epochs = load_config("default").training.epochs
    assert f"'default' preset ({epochs} epochs" in weekly_retraining.description


def test_tiny_overrides_are_valid_run_config():
    cfg = TrainedModelConfig(**tiny_config().to_dict())
    assert cfg.model.params["channels"] == [8, 8, 8] and cfg.model.params["fields"] == 8 and cfg.training.epochs == 3


def test_dagster_definitions_validate(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    env = os.environ | {"DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    res = subprocess.run([str(dagster), "definitions", "validate", "-m", "crrecon_pipeline.definitions"],
                         capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "All code locations passed validation" in res.stderr + res.stdout


@pytest.mark.slow
def test_resume_from_latest_continues_the_earlier_run_with_a_changed_weight(pipeline):
    """training.resume_from: 'latest': a new run continues the latest trained_model's checkpoint with a
    changed loss weight, recorded in its model card; a run id that has no checkpoint is one line."""
    res = resources(pipeline["home"])
    earlier = pipeline["train"].asset_materializations_for_node("trained_model")[0].metadata
    cfg = TrainedModelConfig(**tiny_config("training.epochs=4", "training.resume_from=latest",
                                           "loss.params.w_mse=3.0").to_dict())
    result = dg.materialize([trained_model], instance=pipeline["instance"], resources=res,
                            run_config=dg.RunConfig({"trained_model": cfg}))
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    assert meta["epochs_completed"].value == 4 and meta["run_dir"].value != earlier["run_dir"].value
    assert "`loss.params.w_mse` 1.0 → 3.0" in meta["model_card"].value
    state = torch.load(Path(meta["run_dir"].value) / "last.pt", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3, 4]
    assert state["config"]["training"]["resume_from"] == str(Path(earlier["run_dir"].value) / "last.pt")
    bad = TrainedModelConfig(**tiny_config("training.resume_from=no-such-run").to_dict())
    failed = dg.materialize([trained_model], instance=pipeline["instance"], resources=res, raise_on_error=False,
                            run_config=dg.RunConfig({"trained_model": bad}))
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "training.resume_from: 'no-such-run': no checkpoint" in failure.step_failure_data.error.message


def test_sensor_simulates_on_a_fresh_instance_only_when_asked(tmp_path):
    """With the built-in simulator the sensor starts nothing by itself (a fresh `make dev` runs no simulation);
    sensor_simulates (CRRECON_SIM_SENSOR=1) registers the initial shards and asks for their preparation."""
    instance = new_instance([])

    def tick(simulator):
        res = resources(tmp_path / "home") | {"simulator": simulator}
        with dg.build_sensor_context(instance=instance, resources=res) as ctx:
            return new_shard_sensor(ctx)

    quiet = tick(SimulatorResource(rows_per_shard=300, initial_shards=2, seed=3))
    assert isinstance(quiet, dg.SkipReason) and "CRRECON_SIM_SENSOR=1" in quiet.skip_message
    asked = tick(SimulatorResource(rows_per_shard=300, initial_shards=2, seed=3, sensor_simulates=True))
    assert [r.partition_key for r in asked.run_requests] == ["0", "1"]
