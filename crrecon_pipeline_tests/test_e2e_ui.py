"""End to end through a real Dagster webserver + daemon in a temporary instance: add a shard partition and launch
runs over GraphQL, check metadata, check results and observations, then load the asset page in headless
Chromium and save a screenshot. Every process the test starts is stopped by its pid (and its process group)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest


REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCATION = {"repositoryLocationName": "crrecon_pipeline", "repositoryName": "__repository__"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process and its group (code servers, run workers), SIGKILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        for target in (lambda: os.killpg(proc.pid, sig), lambda: os.kill(proc.pid, sig)):
            try:
                target()
            except ProcessLookupError:
                pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers left in the group
    except ProcessLookupError:
        pass


class Server:
    def __init__(self, url: str):
        self.url = url

    def gql(self, query: str, variables: dict | None = None) -> dict:
        req = urllib.request.Request(f"{self.url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
        out = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert "errors" not in out, out["errors"]
        return out["data"]

    def launch(self, job: str, run_config: dict | None = None, partition: str | None = None) -> str:
        params = {"selector": {**LOCATION, "jobName": job}, "runConfigData": run_config or {},
                  "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}] if partition else []}}
        res = self.gql("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
            ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
            ... on RunConfigValidationInvalid { errors { message } } } }""", {"p": params})["launchRun"]
        assert res["__typename"] == "LaunchRunSuccess", res
        return res["run"]["runId"]

    def wait(self, run_id: str, timeout: float = 600) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.gql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id})["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        return "TIMEOUT"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = os.environ | {"DAGSTER_HOME": str(home), "CRRECON_HOME": str(tmp / "data"), "CRRECON_SIM_ROWS_PER_SHARD": "300",
                        "CRRECON_SIM_SHARDS": "0", "CRRECON_DEVICE": "cpu"}
    env.pop("CRRECON_RAW_DIR", None)
    port = free_port()
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("webserver", "daemon")}
    procs = [
        subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
                         cwd=REPO, env=env, stdout=logs["webserver"], stderr=subprocess.STDOUT, start_new_session=True),
        subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
                         cwd=REPO, env=env, stdout=logs["daemon"], stderr=subprocess.STDOUT, start_new_session=True),
    ]
    srv = Server(f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 180
        while True:
            try:
                if srv.gql("{ version }")["version"]:
                    break
            except OSError:
                pass
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("Dagster webserver did not start:\n" + (tmp / "webserver.log").read_text()[-3000:])
            time.sleep(1)
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
        "training": {"epochs": 3, "save_every": 2}, "data": {"batch_size": 32, "train_ratio": 0.8},
        "model": {"name": "cnn_xattn", "params": {"channels": [8, 8, 8, 8, 8], "d_model": 16, "nhead": 2,
                                                   "dec_layers": 1, "in_pool": 2, "blocks_per_stage": 1}}}}}}
    train_run = server.launch("train_job", run_config=config)
    assert server.wait(train_run) == "SUCCESS"
    return server


def test_metadata_checks_and_observations_over_graphql(materialized):
    s = materialized
    asset = s.gql("""{ assetOrError(assetKey: {path: ["filtered_bayer"]}) { ... on Asset { assetMaterializations(limit: 1) {
        partition metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }""")["assetOrError"]
    mat = asset["assetMaterializations"][0]
    values = {e["label"]: e.get("intValue") for e in mat["metadataEntries"]}
    assert mat["partition"] == "0" and values["raw_rows"] == 300
    assert values["kept_rows"] + values["dropped_unfinished"] + values["dropped_nonfinite"] == 300

    for asset_name, check in (("filtered_bayer", "check_row_counts"), ("filtered_bayer", "check_greens_equal"),
                              ("rotated_bayer", "check_rotation_exact"), ("trained_model", "check_beats_baseline")):
        runs = s.gql("""query($a: AssetKeyInput!, $c: String!) { assetCheckExecutions(assetKey: $a, checkName: $c, limit: 1) {
            status evaluation { success } } }""", {"a": {"path": [asset_name]}, "c": check})["assetCheckExecutions"]
        assert runs and runs[0]["evaluation"]["success"] in (True, False), (asset_name, check, runs)
        if check != "check_beats_baseline":  # a 3-epoch toy model may or may not beat the baseline
            assert runs[0]["evaluation"]["success"] is True

    model = s.gql("""{ assetOrError(assetKey: {path: ["trained_model"]}) { ... on Asset {
        assetMaterializations(limit: 1) { metadataEntries { label __typename ... on FloatMetadataEntry { floatValue }
                                                           ... on MarkdownMetadataEntry { mdStr } } }
        assetObservations(limit: 20) { metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }""")["assetOrError"]
    meta = {e["label"]: e for e in model["assetMaterializations"][0]["metadataEntries"]}
    assert meta["val_mse"]["floatValue"] > 0 and meta["baseline_val_mse"]["floatValue"] > 0
    assert 0 < meta["val_pearson"]["floatValue"] <= 1
    assert "data:image/png;base64" in meta["loss_curves"]["mdStr"]
    epochs = sorted(e["intValue"] for o in model["assetObservations"] for e in o["metadataEntries"] if e["label"] == "epoch")
    assert epochs == [1, 2, 3], "one observation per epoch: the live curves"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); browser test skipped")
def test_asset_page_in_headless_chromium(materialized):
    s = materialized
    out_dir = Path(os.environ.get("CRRECON_SCREENSHOT_DIR", s.tmp))
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = {}
    for name, path in (("trained_model", "assets/trained_model"),
                       ("asset_graph", "assets/run_comparison?view=lineage&lineageScope=upstream&lineageDepth=8")):
        png = out_dir / f"{name}.png"
        png.unlink(missing_ok=True)
        proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                 f"--user-data-dir={s.tmp / ('chromium-' + name)}", "--window-size=1500,1000",
                                 "--virtual-time-budget=25000", f"--screenshot={png}", f"{s.url}/{path}"],
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
    assert set(shots) == {"trained_model", "asset_graph"}
