"""The lineage contract: an immutable versioned store, atomic commits under injected failures, foreign files
left alone, and training on exactly the shard versions whose checks passed."""

import json
import os
import threading

import dagster as dg
import numpy as np
import pytest

from crrecon_pipeline.data.prepare import prepare_shard, preprocess
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.defs.assets.analysis import run_comparison, training_log_analysis
from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model
from crrecon_pipeline.defs.resources import ModelChecks
from crrecon_pipeline.errors import DataError
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset

from .dagster_helpers import DATA_ASSETS, check_results, new_instance, resources
from .helpers import run_cli, tiny_config, write_raw_pair


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """The same two shards simulated with two seeds: a re-preparation that changes every version."""
    a, b = tmp_path_factory.mktemp("raw_a"), tmp_path_factory.mktemp("raw_b")
    write_dataset(a, rows=240, shards=2, settings=SimulationSettings(seed=11))
    write_dataset(b, rows=240, shards=2, settings=SimulationSettings(seed=12))
    return a, b


def loaded(out) -> tuple[dict, np.ndarray]:
    p = load_prepared(out)
    return p.training_set(), np.asarray(p.bayer)


@pytest.mark.parametrize("name", ["replace", "rename"])
def test_failure_at_every_commit_step_keeps_the_previous_version(tmp_path, two_datasets, monkeypatch, name):
    """os.replace / os.rename raise at their n-th call, for every n of a re-preparation: what load_prepared
    returns is the previous data until the re-preparation succeeds, and no staging folder is left over."""
    a, b = two_datasets
    out = tmp_path / "prepared"
    preprocess(a, out)
    before_set, before_bayer = loaded(out)
    real = getattr(os, name)
    n = 0
    while True:
        n += 1
        calls = {"count": 0}

        def failing(*args, _n=n, **kwargs):
            calls["count"] += 1
            if calls["count"] == _n:
                raise OSError(28, "injected failure")
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, failing)
        try:
            preprocess(b, out)
        except OSError:
            monkeypatch.setattr(os, name, real)
            now_set, now_bayer = loaded(out)
            assert now_set == before_set, f"failure at call {n} changed the loaded set"
            np.testing.assert_array_equal(now_bayer, before_bayer)
            continue
        finally:
            monkeypatch.setattr(os, name, real)
        break
    assert n - 1 >= 4, "a failure was injected at each of the calls a successful re-preparation makes"
    after_set, _ = loaded(out)
    assert after_set != before_set and set(after_set) == {"0", "1"}
    PreparedStore(out).clean_staging()
    assert not list((out / ".staging").iterdir())


def test_foreign_files_survive(tmp_path, two_datasets):
    a, b = two_datasets
    out = tmp_path / "prepared"
    out.mkdir()
    foreign = {out / "bayer_reference.npy": b"mine", out / "shard_notes.json": b"{}",
               out / "structures_0.npy": b"old flat layout", out / "rotated_0.json": b"{}"}
    for path, data in foreign.items():
        path.write_bytes(data)
    for raw in (a, b, a):
        preprocess(raw, out)
    for path, data in foreign.items():
        assert path.read_bytes() == data
    assert set(loaded(out)[0]) == {"0", "1"}  # shard_notes.json does not disturb loading


def test_pruning_keeps_the_last_few_and_never_a_foreign_file(tmp_path):
    raw = tmp_path / "raw"
    out = tmp_path / "prepared"
    first = None
    for seed in range(6):  # six different inputs for shard 0 (random rows: the physics does not matter here)
        rng = np.random.default_rng(seed)
        write_raw_pair(raw, 0, (rng.random((20, 1, 128, 128)) < 0.3).astype(np.uint8),
                       -rng.random((20, 3, 301), np.float32))
        v = prepare_shard(raw, 0, out)
        if first is None:
            first = v
            (v.path / "notes.txt").write_text("a user's note inside a version folder")
    store = PreparedStore(out)
    versions = store.versions(0)
    assert len(versions) == 3 and store.latest(0).version == versions[-1].version
    assert first.version not in {v.version for v in versions}
    assert (first.path / "notes.txt").exists() and not (first.path / "bayer.npy").exists()


def test_concurrent_preparations_leave_one_complete_version(tmp_path, two_datasets):
    a, _ = two_datasets
    out = tmp_path / "prepared"
    results, errors = [], []

    def work():
        try:
            results.append(prepare_shard(a, 0, out))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({v.version for v in results}) == 1
    store = PreparedStore(out)
    assert [v.version for v in store.versions(0)] == [results[0].version]
    assert not list((out / ".staging").iterdir())
    assert load_prepared(out, {0: results[0].version}).bayer.shape[0] == results[0].rows


def test_inconsistent_version_is_refused_by_name(tmp_path, two_datasets):
    a, _ = two_datasets
    out = tmp_path / "prepared"
    preprocess(a, out)
    v = PreparedStore(out).latest(1)
    bayer = v.file("bayer.npy")
    bayer.unlink()  # a hard link: the filtered version's file is untouched
    np.save(bayer, np.zeros((3, 2, 2, 30), np.float32))
    with pytest.raises(DataError, match=f"shard 1|{v.version}"):
        load_prepared(out)
    with pytest.raises(DataError, match="not a version name"):
        load_prepared(out, {0: "../../etc"})


def test_cli_applies_the_same_checks_and_refuses_bad_names(tmp_path, raw_dir):
    flipped = tmp_path / "flipped"
    write_raw_pair(flipped, 0, np.load(raw_dir / "binary_dataset_128_0.npy"),
                   -np.load(raw_dir / "spectra_latest_0.npy"))
    res = run_cli("preprocess", "--raw", flipped, "--out", tmp_path / "out")
    assert res.returncode == 2 and "check_sign_convention" in res.stderr and "spectra_latest_0.npy" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

    padded = tmp_path / "padded"
    write_raw_pair(padded, 0, np.load(raw_dir / "binary_dataset_128_0.npy")[:50],
                   np.load(raw_dir / "spectra_latest_0.npy")[:50])
    for f in padded.iterdir():
        f.rename(f.with_name(f.name.replace("_0.npy", "_007.npy")))
    ok = run_cli("preprocess", "--raw", padded, "--out", tmp_path / "out7")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["versions"].keys() == {"7"}

    np.save(padded / "binary_dataset_128_7.npy", np.zeros((2, 1, 128, 128), np.uint8))
    np.save(padded / "spectra_latest_7.npy", np.zeros((2, 3, 301), np.float32))
    amb = run_cli("preprocess", "--raw", padded, "--out", tmp_path / "out7")
    assert amb.returncode == 2 and "ambiguous" in amb.stderr and "binary_dataset_128_007.npy" in amb.stderr

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "binary_dataset_128_0.npy").mkdir()
    np.save(odd / "spectra_latest_0.npy", np.zeros((2, 3, 301), np.float32))
    res = run_cli("preprocess", "--raw", odd, "--out", tmp_path / "o")
    assert res.returncode == 2 and "not a regular file" in res.stderr

    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "binary_dataset_128_0.npy").symlink_to(loop / "binary_dataset_128_0.npy")
    np.save(loop / "spectra_latest_0.npy", np.zeros((2, 3, 301), np.float32))
    res = run_cli("preprocess", "--raw", loop, "--out", tmp_path / "o")
    assert res.returncode == 2 and "cannot open" in res.stderr and "Traceback" not in res.stderr

    negative = tmp_path / "negative"
    write_raw_pair(negative, 0, np.zeros((2, 1, 128, 128), np.uint8), np.zeros((2, 3, 301), np.float32))
    path = negative / "spectra_latest_0.npy"
    path.write_bytes(path.read_bytes().replace(b"(2, 3, 301)", b"(-1, 3, 301)", 1))
    res = run_cli("preprocess", "--raw", negative, "--out", tmp_path / "o")
    assert res.returncode == 2 and "negative" in res.stderr and "spectra_latest_0.npy" in res.stderr


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, raw_dir):
    """Shard 0 good, shard 1 with its spectra multiplied by -1 (positive), shard 2 registered but never prepared."""
    home = tmp_path_factory.mktemp("home")
    raw = tmp_path_factory.mktemp("raw_lineage")
    for k in (0, 1):
        sp = np.load(raw_dir / f"spectra_latest_{k}.npy")
        write_raw_pair(raw, k, np.load(raw_dir / f"binary_dataset_128_{k}.npy"), sp if k == 0 else -sp)
    instance = new_instance(["0", "1", "2"])
    data = {k: dg.materialize(DATA_ASSETS, partition_key=k, instance=instance, raise_on_error=False,
                              resources=resources(home, raw)) for k in ("0", "1")}
    return {"home": home, "raw": raw, "instance": instance, "data": data}


def train(lineage, *sets, max_ratio=0.5, assets=(trained_model,)):
    cfg = TrainedModelConfig(**tiny_config(*sets).to_dict())
    res = resources(lineage["home"], lineage["raw"]) | {"model_checks": ModelChecks(max_mse_ratio=max_ratio)}
    return dg.materialize(list(assets), instance=lineage["instance"], resources=res, raise_on_error=False,
                          run_config=dg.RunConfig({"trained_model": cfg}))


@pytest.mark.parametrize("augment", [True, False])
@pytest.mark.slow
def test_sign_flipped_shard_is_excluded_and_named(lineage, augment):
    assert check_results(lineage["data"]["1"])["check_sign_convention"] is False
    assert not lineage["data"]["1"].asset_materializations_for_node("filtered_bayer")
    result = train(lineage, "training.epochs=1", f"data.augment_180={str(augment).lower()}")
    assert result.success
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    training_set = meta["training_set"].value
    store = PreparedStore(lineage["home"] / "prepared")
    assert list(training_set) == ["0"]
    assert training_set["0"]["version"] == (store.latest(0).version if augment else store.latest(0).manifest["parent"])
    excluded = meta["excluded_shards"].value
    assert "check_sign_convention" in excluded["1"] and "never prepared" in excluded["2"]
    assert meta["train_samples"].value + meta["val_samples"].value <= 2 * training_set["0"]["rows"]


def test_nothing_to_train_on_fails_in_one_line(tmp_path):
    instance = new_instance(["abc"])
    cfg = TrainedModelConfig(**tiny_config("training.epochs=1").to_dict())
    result = dg.materialize([trained_model], instance=instance, resources=resources(tmp_path),
                            run_config=dg.RunConfig({"trained_model": cfg}), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert ("nothing to train on" in message and "abc" in message and "not a shard index" in message
            and "\n" not in message)


@pytest.mark.slow
def test_baseline_check_judges_its_own_run(lineage):
    """A model trained for one step at a tiny lr is no better than the mean spectrum: its check fails, with the
    ratio of its own materialization, and run_comparison names no best run."""
    result = train(lineage, "training.epochs=1", "training.lr=1e-9", max_ratio=0.5,
                   assets=(trained_model, training_log_analysis, run_comparison))
    meta = result.asset_materializations_for_node("trained_model")[0].metadata
    evaluation = next(e.asset_check_evaluation_data for e in result.all_events
                      if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert evaluation.check_name == "check_beats_baseline" and evaluation.passed is False
    ratio = meta["val_mse"].value / meta["baseline_val_mse"].value
    assert evaluation.metadata["ratio"].value == pytest.approx(ratio, rel=1e-3) and ratio > 0.5
    comparison = result.asset_materializations_for_node("run_comparison")[0].metadata
    run_dir = os.path.basename(meta["run_dir"].value)
    assert comparison["best_run"].value != run_dir
