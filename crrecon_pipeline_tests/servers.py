"""Dagster's servers started as processes for the end-to-end tests: a free port, a GraphQL client for the webserver
(launch runs, wait for them, read observations), and `stop`, which ends a process and its group by pid."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

LOCATION = {"repositoryLocationName": "crrecon_pipeline", "repositoryName": "__repository__"}
OBSERVATIONS = ("""query { assetOrError(assetKey: {path: ["trained_model"]}) { ... on Asset { """
                """assetObservations(limit: 100) {
    runId metadataEntries { label __typename ... on FloatMetadataEntry { floatValue } """
                """... on IntMetadataEntry { intValue }
    ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr } } } } } }""")
NEWEST = ("""query { assetOrError(assetKey: {path: ["trained_model"]}) { ... on Asset { """
          """assetObservations(limit: 1) { runId metadataEntries { label ... on IntMetadataEntry { intValue }
    ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr } } } } } }""")


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
        req = urllib.request.Request(f"{self.url}/graphql",
                                     data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
        out = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert "errors" not in out, out["errors"]
        return out["data"]

    def location_loaded(self) -> bool:
        """The webserver answers before the code location has loaded; mutations on it are refused until then
        (as UnauthorizedError). A location that failed to load fails the test with its error."""
        entries = self.gql("""{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
            locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
        entry = next((e for e in entries["workspaceOrError"]["locationEntries"]
                      if e["name"] == LOCATION["repositoryLocationName"]), None)
        if entry is None or entry["loadStatus"] != "LOADED" or entry["locationOrLoadError"] is None:
            return False
        error = entry["locationOrLoadError"]
        assert error["__typename"] == "RepositoryLocation", error.get("message")
        return True

    def launch(self, job: str, run_config: dict | None = None, partition: str | None = None) -> str:
        params = {"selector": {**LOCATION, "jobName": job}, "runConfigData": run_config or {},
                  "executionMetadata": {
                      "tags": [{"key": "dagster/partition", "value": partition}] if partition else []}}
        res = self.gql("""mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
            ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
            ... on RunConfigValidationInvalid { errors { message } } } }""", {"p": params})["launchRun"]
        assert res["__typename"] == "LaunchRunSuccess", res
        return res["run"]["runId"]

    def status(self, run_id: str) -> str:
        return self.gql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                        {"id": run_id})["runOrError"]["status"]

    def wait(self, run_id: str, timeout: float = 600) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = self.status(run_id)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        return "TIMEOUT"

    def observations(self, run_id: str) -> list[dict]:
        """trained_model's observations of one run, each as {label: value}."""
        out = []
        for obs in self.gql(OBSERVATIONS)["assetOrError"]["assetObservations"]:
            if obs["runId"] == run_id:
                out.append({e["label"]: next((e[k] for k in ("floatValue", "intValue", "text", "mdStr") if k in e),
                                             None)
                            for e in obs["metadataEntries"]})
        return out

    def newest_observation(self) -> dict | None:
        """trained_model's newest observation (what the asset page's Overview shows), as {label: value, "runId"}."""
        found = self.gql(NEWEST)["assetOrError"]["assetObservations"]
        if not found:
            return None
        return {"runId": found[0]["runId"]} | {e["label"]: next((e[k] for k in ("intValue", "text", "mdStr") if k in e),
                                                                 None) for e in found[0]["metadataEntries"]}

    def watch_live(self, run_id: str, timeout: float = 900) -> tuple[dict | None, dict[int, dict]]:
        """Poll while the run runs: (the first observation of `run_id` with progress and an ETA seen while it was
        still running, or None; {epoch: the newest observation as it was while that epoch was the newest}). Each
        observation is read first, the run's status after it."""
        deadline, live, newest = time.time() + timeout, None, {}
        while time.time() < deadline:
            if live is None:
                seen = [o for o in self.observations(run_id) if o.get("eta_s") is not None and o.get("progress")]
            latest = self.newest_observation()
            status = self.status(run_id)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                break
            if status == "STARTED":
                if live is None and seen:
                    live = seen[0] | {"status": status}
                if latest and latest["runId"] == run_id and latest.get("epoch"):
                    newest.setdefault(latest["epoch"], latest)
            time.sleep(0.3)
        return live, newest
