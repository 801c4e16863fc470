"""End to end through a real Dagster webserver + daemon in a temporary instance: add a shard partition and launch
runs over GraphQL; while the training run is still running, its progress observation (with an ETA) must be
visible; afterwards check metadata (model card, rounded numbers, figures), check results and observations, then
load asset pages in headless Chromium and save screenshots (to CRRECON_SCREENSHOT_DIR when set: the README's
pictures). Every process the test starts is stopped by its pid (and its process group). Timeouts are generous
for a loaded 2-core machine, and bounded."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crrecon_pipeline_tests.servers import LOCATION, Server, free_port, stop

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
EPOCHS = 10  # long enough that the run is still going when its first epochs are observed
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = os.environ | {"DAGSTER_HOME": str(home), "CRRECON_HOME": str(tmp / "data"),
                        "CRRECON_SIM_ROWS_PER_SHARD": "300", "CRRECON_SIM_SHARDS": "0", "CRRECON_DEVICE": "cpu"}
    env.pop("CRRECON_RAW_DIR", None)
    port = free_port()
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("webserver", "daemon")}
    # The webserver first: it creates the fresh instance's storage. Started together, the webserver and the
    # daemon can both try to create it ("table alembic_version already exists") and the daemon dies.
    procs = [subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                               "-w", str(REPO / "workspace.yaml")],
                              cwd=REPO, env=env, stdout=logs["webserver"], stderr=subprocess.STDOUT,
                              start_new_session=True)]
    srv = Server(f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 180
        while True:
            try:
                if srv.location_loaded():
                    break
            except OSError:
                pass
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("Dagster webserver did not start:\n" + (tmp / "webserver.log").read_text()[-3000:])
            time.sleep(1)
        procs.append(subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
                                      cwd=REPO, env=env, stdout=logs["daemon"], stderr=subprocess.STDOUT,
                                      start_new_session=True))
        time.sleep(10)
        if procs[-1].poll() is not None:
            pytest.fail("Dagster daemon exited:\n" + (tmp / "daemon.log").read_text()[-3000:])
        srv.tmp = tmp
        yield srv
    finally:
        for p in procs:
            stop(p)
        for f in logs.values():
            f.close()


@pytest.fixture(scope="module")
def materialized(server):
    res = server.gql("""mutation($r: RepositorySelector!, $k: String!) { addDynamicPartition(repositorySelector: $r,
        partitionsDefName: "shards", partitionKey: $k) { __typename } }""", {"r": LOCATION, "k": "0"})
    assert res["addDynamicPartition"]["__typename"] == "AddDynamicPartitionSuccess"
    data_run = server.launch("prepare_data_job", partition="0")
    assert server.wait(data_run) == "SUCCESS"
    config = {"ops": {"trained_model": {"config": {
        "training": {"epochs": EPOCHS, "save_every": 5}, "data": {"batch_size": 32, "train_ratio": 0.8},
        "loss": {"name": "crrecon_mse_pearson", "params": {"w_mse": 1.0, "w_corr": 0.2}},  # two terms to watch
        "model": {"name": "crrecon_xattn", "params": {"channels": [8, 8, 8, 8, 8], "d_model": 16, "nhead": 2,
                                                   "dec_layers": 1, "in_pool": 2, "blocks_per_stage": 1}}}}}}
    train_run = server.launch("train_job", run_config=config)
    server.live, server.newest = server.watch_live(train_run)
    assert server.wait(train_run) == "SUCCESS"
    server.train_run = train_run
    return server


def test_progress_with_an_eta_is_visible_while_training_runs(materialized):
    live = materialized.live
    assert live is not None, "no progress observation with an ETA was visible while the training run was running"
    assert live["status"] == "STARTED" and 1 <= live["epoch"] < EPOCHS
    assert live["progress"].startswith("run ") and f" % · epoch {live['epoch']}/{EPOCHS}" in live["progress"]
    assert "ETA" in live["progress"] and live["eta_s"] > 0
    assert live["eta"].endswith(" s") and live["eta"] in live["progress"]  # "1 min 07 s", not raw seconds
    assert {"train_loss", "val_loss", "lr", "samples_per_s"} <= set(live) and "n_params" not in live  # curves only


def test_the_newest_observation_carries_the_dashboard_of_its_epoch(materialized):
    """While the run trains, the newest trained_model observation (the asset page's Overview) carries the dashboard
    figure of its own epoch, for at least 3 consecutive epochs; and every epoch's observation has one."""
    newest = materialized.newest
    good = sorted(e for e, o in newest.items()
                  if (o.get("dashboard") or "").startswith(f"![dashboard, epoch {e}/{EPOCHS}](data:image/png;base64,"))
    runs = [good[i:i + 3] for i in range(len(good) - 2) if good[i + 2] - good[i] == 2]
    assert runs, f"the newest observation showed its epoch's dashboard at epochs {good} (seen: {sorted(newest)})"
    every = materialized.observations(materialized.train_run)
    assert sorted(o["epoch"] for o in every if f"epoch {o['epoch']}/{EPOCHS}" in (o.get("dashboard") or "")) \
        == list(range(1, EPOCHS + 1))


def test_live_observation_shows_both_sample_sets_and_every_loss_term(materialized):
    """While the run is live: the fixed validation and training samples drawn as true vs predicted spectra, and
    each weighted loss term, summing to the loss."""
    live = materialized.live
    assert live is not None
    # the figures come after the first epoch and then at the loss-curve pace: the first epoch's observation, made
    # while the run went on (epoch 1 of EPOCHS), carries them whichever epoch the poll above happened to catch
    first = next(o for o in materialized.observations(materialized.train_run) if o.get("epoch") == 1)
    for split in ("val", "train"):
        assert "data:image/png;base64" in (first.get(f"samples_{split}") or ""), f"no live {split} sample figure"
        terms = {k: v for k, v in live.items() if k.startswith(f"{split}_loss_")}
        assert set(terms) == {f"{split}_loss_mse", f"{split}_loss_corr"}, terms
        assert abs(sum(terms.values()) - live[f"{split}_loss"]) <= 1e-3 * live[f"{split}_loss"]


def test_model_card_rounded_numbers_and_figures_after_the_run(materialized):
    s = materialized
    model = s.gql("""{ assetOrError(assetKey: {path: ["trained_model"]}) { ... on Asset {
        assetMaterializations(limit: 1) { runId metadataEntries { label __typename """
                  """... on FloatMetadataEntry { floatValue }
            ... on IntMetadataEntry { intValue } ... on MarkdownMetadataEntry { mdStr } } } } } }""")["assetOrError"]
    mat = model["assetMaterializations"][0]
    assert mat["runId"] == s.train_run
    meta = {e["label"]: e for e in mat["metadataEntries"]}
    card = meta["model_card"]["mdStr"]
    for part in ("parameters", "**Loss** `crrecon_mse_pearson`", "**Split**", "**Architecture**", "**Training data**",
                 "**Hyper-parameters**", "`training.lr`", "`model.params.d_model` | 16"):
        assert part in card, f"model card lacks {part!r}"
    for key in ("val_mse", "baseline_val_mse", "val_pearson", "samples_per_s", "val_mse_pct_of_baseline"):
        value = meta[key]["floatValue"]
        assert value == float(f"{value:.4g}"), f"{key} = {value!r} is not rounded to ~4 significant figures"
    ratio = 100 * meta["val_mse"]["floatValue"] / meta["baseline_val_mse"]["floatValue"]
    assert abs(meta["val_mse_pct_of_baseline"]["floatValue"] - ratio) <= 0.01 * ratio
    assert meta["best_val_loss_epoch"]["intValue"] in range(1, EPOCHS + 1) and meta["n_params"]["intValue"] > 0
    for figure in ("loss_curves", "predictions"):
        assert (meta[figure]["__typename"] == "MarkdownMetadataEntry"
                and "data:image/png;base64" in meta[figure]["mdStr"])
    live_figures = [o for o in s.observations(s.train_run) if "loss_curves" in o]
    assert live_figures and all("data:image/png;base64" in o["loss_curves"] for o in live_figures), \
        "the loss-curve figure is refreshed during the run (every 5 epochs)"
    analysis = s.gql("""{ assetOrError(assetKey: {path: ["training_log_analysis"]}) { ... on Asset {
        assetMaterializations(limit: 1) { metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } } } }"""
                     )["assetOrError"]
    report = {e["label"]: e for e in analysis["assetMaterializations"][0]["metadataEntries"]}
    assert "generalization_gap_pct" in report and "best_val_loss_epoch" in report
    assert report["report"]["mdStr"].startswith("**Diagnosis:**") and "\n- Best val loss: " in report["report"]["mdStr"]


def test_metadata_checks_and_observations_over_graphql(materialized):
    s = materialized
    asset = s.gql("""{ assetOrError(assetKey: {path: ["filtered_bayer"]}) { ... on Asset { """
                  """assetMaterializations(limit: 1) {
        partition metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }""")["assetOrError"]
    mat = asset["assetMaterializations"][0]
    values = {e["label"]: e.get("intValue") for e in mat["metadataEntries"]}
    assert mat["partition"] == "0" and values["raw_rows"] == 300
    assert values["kept_rows"] + values["dropped_unfinished"] + values["dropped_nonfinite"] == 300

    for asset_name, check in (("filtered_bayer", "check_row_counts"), ("filtered_bayer", "check_greens_equal"),
                              ("rotated_bayer", "check_rotation_exact"), ("trained_model", "check_beats_baseline")):
        runs = s.gql("""query($a: AssetKeyInput!, $c: String!) { """
                     """assetCheckExecutions(assetKey: $a, checkName: $c, limit: 1) {
            status evaluation { success } } }""", {"a": {"path": [asset_name]}, "c": check})["assetCheckExecutions"]
        assert runs and runs[0]["evaluation"]["success"] in (True, False), (asset_name, check, runs)
        if check != "check_beats_baseline":  # a 3-epoch toy model may or may not beat the baseline
            assert runs[0]["evaluation"]["success"] is True

    model = s.gql("""{ assetOrError(assetKey: {path: ["trained_model"]}) { ... on Asset {
        assetMaterializations(limit: 1) { metadataEntries { label __typename ... on FloatMetadataEntry { floatValue }
                                                           ... on MarkdownMetadataEntry { mdStr } } }
        assetObservations(limit: 100) { metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""
                  )["assetOrError"]
    meta = {e["label"]: e for e in model["assetMaterializations"][0]["metadataEntries"]}
    assert meta["val_mse"]["floatValue"] > 0 and meta["baseline_val_mse"]["floatValue"] > 0
    assert 0 < meta["val_pearson"]["floatValue"] <= 1
    assert "data:image/png;base64" in meta["loss_curves"]["mdStr"]
    epochs = sorted(e["intValue"] for o in model["assetObservations"] for e in o["metadataEntries"]
                    if e["label"] == "epoch")
    assert epochs == list(range(1, EPOCHS + 1)), "one observation per epoch: the live curves"


@pytest.mark.skipif(CHROMIUM is None,
                    reason="Chromium is not installed (apt-get install chromium); browser test skipped")
def test_asset_page_in_headless_chromium(materialized):
    s = materialized
    out_dir = Path(os.environ.get("CRRECON_SCREENSHOT_DIR", s.tmp))
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = {}
    for name, path in (("trained_model", "assets/trained_model"),
                       ("trained_model_events", "assets/trained_model?view=events"),
                       ("training_log_analysis", "assets/training_log_analysis"),
                       ("asset_graph", "assets/run_comparison?view=lineage&lineageScope=upstream&lineageDepth=8")):
        png = out_dir / f"{name}.png"
        png.unlink(missing_ok=True)
        proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", f"--user-data-dir={s.tmp / ('chromium-' + name)}",
                                 "--window-size=1500,1000", "--virtual-time-budget=25000", f"--screenshot={png}",
                                 f"{s.url}/{path}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop(proc)
        assert png.exists() and png.stat().st_size > 20_000, f"no screenshot of {path}"
        import matplotlib.image

        pixels = matplotlib.image.imread(png)
        assert pixels.std() > 0.05, f"the screenshot of {path} is blank"
        shots[name] = png
    assert set(shots) == {"trained_model", "trained_model_events", "training_log_analysis", "asset_graph"}


def test_terminate_is_a_cancellation_that_resumes(materialized):
    """Terminate while training: the run reads CANCELED, the step is not retried and ends in one line, the newest
    observation says where the run stopped and which checkpoint resumes it; re-executed,
    the run resumes and ends with the val MSE of an uninterrupted run of the same config (CPU, deterministic).
    Runs last: its epoch observations would join the finished run's."""
    s = materialized
    config = {"ops": {"trained_model": {"config": {
        "training": {"epochs": 50}, "data": {"batch_size": 32, "train_ratio": 0.8},
        "model": {"name": "cnn_field", "params": {"channels": [8, 8, 8], "fields": 8, "in_pool": 2}}}}}}
    run = s.launch("train_job", run_config=config)
    deadline = time.time() + 600
    while time.time() < deadline and not any(o.get("epoch") for o in s.observations(run)):
        assert s.status(run) in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED"), s.status(run)
        time.sleep(1)
    res = s.gql("""mutation($id: String!) { terminateRun(runId: $id) { __typename } }""", {"id": run})
    assert res["terminateRun"]["__typename"] == "TerminateRunSuccess", res
    assert s.wait(run, timeout=300) == "CANCELED"  # the step ends interrupted, not failed
    events = s.gql("""query($id: ID!) { logsForRun(runId: $id, limit: 10000) { ... on EventConnection {
        events { __typename } } } }""", {"id": run})["logsForRun"]["events"]
    kinds = {e["__typename"] for e in events}
    assert "ExecutionStepUpForRetryEvent" not in kinds and "ExecutionStepRestartEvent" not in kinds, kinds
    stopped = [o for o in s.observations(run) if "cancelled" in o]
    assert stopped, "no observation says the run was cancelled"
    note = stopped[0]["cancelled"]
    assert note.startswith("cancelled at epoch ") and "last.pt" in note and "resumes" in note
    assert stopped[0]["cancelled_at_epoch"] >= 1 and ", batch " in note  # stopped at a batch boundary
    launchpad = stopped[0]["resume_launchpad_yaml"]  # a new run continues it from this config
    assert "trained_model" in launchpad and "resume_from: " in launchpad and "last.pt" in launchpad
    # the step ended (interrupted, without retry), so the run page's side panel has nothing left "Preparing"
    steps = s.gql("""query($id: ID!) { runOrError(runId: $id) { ... on Run { stepStats { stepKey status } } } }""",
                  {"id": run})["runOrError"]["stepStats"]
    status = {st["stepKey"]: st["status"] for st in steps}
    assert status["trained_model"] == "FAILURE" and "IN_PROGRESS" not in status.values(), steps
    failure = s.gql("""query($id: ID!) { logsForRun(runId: $id, limit: 10000) { ... on EventConnection { events {
        __typename ... on ExecutionStepFailureEvent { stepKey error { message stack } } } } } }""",
                    {"id": run})["logsForRun"]["events"]
    error = next(e["error"] for e in failure if e["__typename"] == "ExecutionStepFailureEvent")
    assert len(error["message"].strip().splitlines()) == 1, error  # one line (a Failure still carries its stack)

    # re-executed, it resumes from last.pt (the root run's folder) and ends where an uninterrupted run ends
    res = s.gql("""mutation($p: ReexecutionParams) { launchRunReexecution(reexecutionParams: $p) { __typename
        ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
                {"p": {"parentRunId": run, "strategy": "ALL_STEPS"}})["launchRunReexecution"]
    assert res["__typename"] == "LaunchRunSuccess", res
    resumed = res["run"]["runId"]
    assert s.wait(resumed, timeout=900) == "SUCCESS"
    whole = s.launch("train_job", run_config=config)
    assert s.wait(whole, timeout=900) == "SUCCESS"
    finals = s.gql("""{ assetOrError(assetKey: {path: ["trained_model"]}) { ... on Asset {
        assetMaterializations(limit: 10) { runId metadataEntries { label ... on FloatMetadataEntry { floatValue }
                                                                    ... on TextMetadataEntry { text } } } } } }""")
    by_run = {m["runId"]: {e["label"]: e.get("floatValue", e.get("text")) for e in m["metadataEntries"]}
              for m in finals["assetOrError"]["assetMaterializations"]}
    assert by_run[resumed]["val_mse"] == by_run[whole]["val_mse"] > 0, (by_run[resumed], by_run[whole])
