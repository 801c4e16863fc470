"""A team's instance, run for real: a throwaway PostgreSQL cluster holds Dagster's storage (dagster-postgres, the
driver named: `postgresql+psycopg2`), the QueuedRunCoordinator queues runs and the daemon launches them, and the
code location is served by `dagster api grpc` as its own process (the Helm chart's topology: runs are the code
server's children, not the daemon's). Against that instance: new_shard_sensor ticks, registers the simulator's
two shards and prepares them (raw -> filtered -> rotated) in two runs at once, in separate processes on one
CRRECON_HOME, each committing its version; two train_job runs (trained_model and the analyses) submitted
together train one after the other, because trained_model sits in the `gpu` pool whose limit is 1 (one step waits,
"blocked by limit for pool gpu", and their step times do not overlap); the daemon is stopped and started again
while they run, and both still succeed, with the sensor's cursor kept (each shard is prepared once); the retraining
schedule, switched on, ticks and launches its run (cancelled: it would train for minutes). Skipped, with
the reason, where no PostgreSQL server is installed (`.ci/run` installs Debian's `postgresql`)."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from crrecon_pipeline.data.store import PreparedStore
from crrecon_pipeline.defs.resources import CrreconPaths
from crrecon_pipeline_tests.servers import Server, free_port, stop

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY_TRAINING = {"execution": {"config": {"in_process": {}}}, "ops": {"trained_model": {"config": {
    "training": {"epochs": 2, "save_every": 1}, "data": {"batch_size": 32, "train_ratio": 0.8},
    "model": {"name": "cnn_field", "params": {"channels": [8, 8, 8], "fields": 8, "in_pool": 2}}}}}}
RUNS = """query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId jobName status
    stepStats { stepKey status startTime endTime } } } } }"""
SCHEDULE = {"repositoryLocationName": "crrecon_pipeline", "repositoryName": "__repository__",
            "scheduleName": "weekly_retraining"}
TICKS = """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) { ... on Schedule { scheduleState {
    ticks(limit: 5) { status runIds timestamp } } } } }"""
ROTATED = """{ assetOrError(assetKey: {path: ["rotated_bayer"]}) { ... on Asset {
    assetMaterializations(limit: 10) { partition tags { key value } } } } }"""
EVENTS = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename
    ... on MessageEvent { message stepKey } } } } }"""


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return Path(shutil.which("initdb")).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster in a temporary folder, on a free port of 127.0.0.1, trust authentication; stopped with
    pg_ctl and removed afterwards. PostgreSQL refuses to run as root: as root it runs as the `postgres` user."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server (initdb, pg_ctl) on this machine: apt-get install postgresql")
    as_user = []
    folder = Path(tempfile.mkdtemp(prefix="crrecon-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("running as root and there is no `postgres` user for PostgreSQL to run as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = free_port(), folder / "data"
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "120"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "crrecon", "--auth=trust", "-E",
                    "UTF8"], check=True, capture_output=True, cwd=folder)
    try:
        subprocess.run([*pg_ctl, "-l", str(folder / "postgres.log"), "-o",
                        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, cwd=folder)
        yield {"hostname": "127.0.0.1", "port": port, "username": "crrecon", "db_name": "postgres"}
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


def instance_yaml(postgres: dict) -> dict:
    """The repository's dagster.yaml (its run and pool limits) with Postgres storage and the queued coordinator."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config.pop("load_from", None)
    config["storage"] = {"postgres": {"postgres_db": {**postgres, "password": "", "scheme": "postgresql+psycopg2"}}}
    config["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    return config


class Deployment:
    """The processes of the deployment, each in its own session, stopped by pid: the code server, the webserver,
    the daemon (which `restart_daemon` stops and starts again)."""

    def __init__(self, tmp: Path, env: dict):
        self.tmp, self.env, self.procs, self.logs = tmp, env, {}, {}

    def start(self, name: str, *command: str) -> None:
        if name in self.logs:
            self.logs[name].close()  # a restart appends to the same log
        self.logs[name] = open(self.tmp / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=REPO, env=self.env,
                                            stdout=self.logs[name], stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-3000:]

    def start_daemon(self) -> None:
        self.start("daemon", "dagster-daemon", "run", "-w", str(self.tmp / "workspace.yaml"))
        time.sleep(5)
        if self.procs["daemon"].poll() is not None:
            pytest.fail("the Dagster daemon exited:\n" + self.log("daemon"))

    def restart_daemon(self) -> None:
        stop(self.procs.pop("daemon"))
        self.start_daemon()

    def stop_all(self) -> None:
        for name in ("daemon", "webserver", "code_server"):
            if name in self.procs:
                stop(self.procs[name])
        for f in self.logs.values():
            f.close()


def wait_listening(port: int, deployment: Deployment, timeout: float = 240) -> None:
    """The code server takes its port once the definitions have loaded; the webserver must not look before."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.time() > deadline or deployment.procs["code_server"].poll() is not None:
                pytest.fail("the code server did not start:\n" + deployment.log("code_server"))
            time.sleep(1)


def wait_loaded(srv: Server, deployment: Deployment, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if srv.location_loaded():
                return
        except OSError:
            pass
        if time.time() > deadline or any(p.poll() is not None for p in deployment.procs.values()):
            pytest.fail("the code location did not load:\n" + deployment.log("webserver")
                        + deployment.log("code_server"))
        time.sleep(1)


@pytest.fixture(scope="module")
def deployment(postgres, tmp_path_factory):
    """The instance (Postgres storage, the repository's limits), then the code server, the webserver once the code
    server listens, the daemon once the location has loaded; the simulator's two shards, the schedule every minute."""
    tmp = tmp_path_factory.mktemp("team")
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_yaml(postgres)))
    code_port, web_port = free_port(), free_port()
    (tmp / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
        "host": "127.0.0.1", "port": code_port, "location_name": "crrecon_pipeline"}}]}))
    env = os.environ | {"DAGSTER_HOME": str(home), "CRRECON_HOME": str(tmp / "data"), "CRRECON_DEVICE": "cpu",
                        "CRRECON_SIM_ROWS_PER_SHARD": "300", "CRRECON_SIM_SHARDS": "2", "CRRECON_SIM_SENSOR": "1",
                        "CRRECON_RETRAIN_CRON": "* * * * *", "CRRECON_RETRAIN_PRESET": "quick"}
    for name in ("CRRECON_RAW_DIR", "CRRECON_EXECUTOR"):
        env.pop(name, None)
    team = Deployment(tmp, env)
    try:
        # the pool's limit set as a platform engineer would; this first use of the database creates its schema
        subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", "1"], env=env, check=True,
                       capture_output=True, timeout=120)
        team.start("code_server", "dagster", "api", "grpc", "-h", "127.0.0.1", "-p", str(code_port),
                   "--module-name", "crrecon_pipeline.definitions", "--location-name", "crrecon_pipeline")
        wait_listening(code_port, team)
        team.start("webserver", "dagster-webserver", "-h", "127.0.0.1", "-p", str(web_port),
                   "-w", str(tmp / "workspace.yaml"))
        srv = Server(f"http://127.0.0.1:{web_port}")
        wait_loaded(srv, team)
        team.start_daemon()
        team.srv = srv
        yield team
    finally:
        team.stop_all()


def runs(srv: Server, job: str) -> list[dict]:
    return srv.gql(RUNS, {"f": {"pipelineName": job}})["runsOrError"]["results"]


def wait_for_runs(srv: Server, job: str, count: int, timeout: float) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = runs(srv, job)
        if len(found) >= count:
            return [r["runId"] for r in found]
        time.sleep(2)
    pytest.fail(f"fewer than {count} {job} runs within {timeout:.0f} s")


@pytest.fixture(scope="module")
def trained(deployment):
    """The sensor prepares shards 0 and 1 (two runs at once); then two training runs at once, the daemon restarted
    while they run."""
    srv = deployment.srv
    for prepare in wait_for_runs(srv, "prepare_data_job", 2, timeout=120):  # the sensor's first tick (every 30 s)
        assert srv.wait(prepare, timeout=400) == "SUCCESS", deployment.log("daemon")
    first, second = (srv.launch("train_job", run_config=TINY_TRAINING) for _ in range(2))
    deadline = time.time() + 120
    while "STARTED" not in {srv.status(first), srv.status(second)} and time.time() < deadline:
        time.sleep(1)
    at_restart = {srv.status(first), srv.status(second)}
    deployment.restart_daemon()
    statuses = [srv.wait(first, timeout=400), srv.wait(second, timeout=400)]
    return {"srv": srv, "runs": [first, second], "statuses": statuses, "deployment": deployment,
            "at_restart": at_restart}


@pytest.fixture(scope="module")
def scheduled(trained):
    """The retraining schedule switched on (every minute here) ticks against the same instance; its run is then
    cancelled and the schedule switched off (the preset trains for minutes)."""
    srv = trained["srv"]
    started = srv.gql("""mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename
        ... on ScheduleStateResult { scheduleState { id status } } ... on PythonError { message } } }""",
                      {"s": SCHEDULE})["startSchedule"]
    assert started["__typename"] == "ScheduleStateResult", started
    deadline, ticks = time.time() + 150, []
    while time.time() < deadline:
        ticks = srv.gql(TICKS, {"s": SCHEDULE})["scheduleOrError"]["scheduleState"]["ticks"]
        if any(t["status"] == "SUCCESS" and t["runIds"] for t in ticks):
            break
        time.sleep(3)
    srv.gql("mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }",
            {"id": started["scheduleState"]["id"]})
    for run_id in {r for t in ticks for r in t["runIds"]}:
        srv.gql("mutation($r: String!) { terminateRun(runId: $r) { __typename } }", {"r": run_id})
    return ticks


def test_the_schedule_ticks_against_the_same_instance(scheduled, trained):
    launched = [t for t in scheduled if t["status"] == "SUCCESS" and t["runIds"]]
    assert launched, f"no tick of weekly_retraining launched a run: {scheduled}"
    assert launched[0]["runIds"][0] in {r["runId"] for r in runs(trained["srv"], "train_job")}


def test_both_training_runs_succeed_through_a_daemon_restart(trained):
    assert "STARTED" in trained["at_restart"], trained["at_restart"]
    assert trained["statuses"] == ["SUCCESS", "SUCCESS"], trained["deployment"].log("daemon")
    done = {r["runId"]: r for r in runs(trained["srv"], "train_job")}
    for run_id in trained["runs"]:
        steps = {s["stepKey"]: s["status"] for s in done[run_id]["stepStats"]}
        assert steps["trained_model"] == "SUCCESS" and steps["training_log_analysis"] == "SUCCESS", steps


def test_the_gpu_pool_trains_one_run_after_the_other(trained):
    done = {r["runId"]: r for r in runs(trained["srv"], "train_job")}
    spans = sorted((s["startTime"], s["endTime"]) for run_id in trained["runs"]
                   for s in done[run_id]["stepStats"] if s["stepKey"] == "trained_model")
    assert len(spans) == 2 and all(start and end for start, end in spans), spans
    (start_a, end_a), (start_b, end_b) = spans
    when = [datetime.fromtimestamp(t).isoformat(timespec="seconds") for t in (start_a, end_a, start_b, end_b)]
    assert end_a <= start_b, f"trained_model steps overlapped: {when}"
    blocked = [e for run_id in trained["runs"]
               for e in trained["srv"].gql(EVENTS, {"id": run_id})["logsForRun"]["events"]
               if e.get("stepKey") == "trained_model" and "blocked by limit for pool gpu" in (e.get("message") or "")]
    assert blocked, "neither trained_model step waited for the gpu pool"


def test_the_sensor_prepared_each_shard_once_on_the_shared_instance(trained):
    prepared = runs(trained["srv"], "prepare_data_job")
    assert [r["status"] for r in prepared] == ["SUCCESS"] * 2, "the sensor's cursor or run key was lost in the restart"
    for run in prepared:
        assert {"raw_shard", "filtered_bayer", "rotated_bayer"} <= {s["stepKey"] for s in run["stepStats"]}


def test_two_shards_prepared_at_once_each_commit_its_version(trained):
    """Two runs, their steps in separate processes (the multiprocess executor, as pods would be), on one
    CRRECON_HOME at the same time; each shard's rotated version is committed and opens from the store."""
    prepared = runs(trained["srv"], "prepare_data_job")
    spans = [(min(s["startTime"] for s in r["stepStats"]), max(s["endTime"] for s in r["stepStats"]))
             for r in prepared]
    assert max(start for start, _ in spans) < min(end for _, end in spans), f"the two runs did not overlap: {spans}"
    found = trained["srv"].gql(ROTATED)["assetOrError"]["assetMaterializations"]
    versions = {m["partition"]: next(t["value"] for t in m["tags"] if t["key"] == "dagster/data_version")
                for m in found}
    assert set(versions) == {"0", "1"} and len(set(versions.values())) == 2, versions
    store = PreparedStore(CrreconPaths(home=trained["deployment"].env["CRRECON_HOME"]).prepared_path())
    for partition, version in versions.items():
        assert store.open(int(partition), version).rows > 0 and store.open(int(partition), version).refusal() is None
