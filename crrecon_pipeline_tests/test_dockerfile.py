"""What can be checked of the image and the chart without building or deploying them (no container runtime, no
registry, no cluster here): the files the Dockerfile copies exist, the extras it installs are pyproject's and bring
dagster-postgres, the install is non-editable, its torch is the version the tests run and a CUDA build (asserted in
the build), it runs as a non-root user, it serves the code location's module, the one the Helm chart names; the
chart's version is pyproject's Dagster, the values and the volume claim parse and agree (the claim, the mount,
CRRECON_HOME, the user), and trained_model's pod tag parses with dagster-k8s: a GPU with CPU and memory requests
beside it and a RAM-backed /dev/shm."""

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VALUES = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
PVC = yaml.safe_load((ROOT / "deploy" / "k8s" / "pvc.yaml").read_text())
DEPLOYMENT = VALUES["dagster-user-deployments"]["deployments"][0]


def instructions(keyword: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)  # continued lines joined
    return [line[len(keyword):].strip() for line in text.splitlines() if line.startswith(keyword + " ")]


def pin(name: str) -> str:
    """The version pyproject pins `name` to (name==version in the dependencies or an extra)."""
    deps = PYPROJECT["project"]["dependencies"] + sum(PYPROJECT["project"]["optional-dependencies"].values(), [])
    return next(d.split("==")[1] for d in deps if d.split("==")[0].strip() == name)


def test_the_files_it_copies_exist_and_are_no_links():
    """COPY keeps a symbolic link as a link: configs/'s links into the package would point nowhere in the image."""
    copies = instructions("COPY")
    assert copies
    for copy in copies:
        for source in [word for word in copy.split()[:-1] if not word.startswith("--")]:
            assert (ROOT / source).exists(), source
            inside = [ROOT / source, *(ROOT / source).rglob("*")]
            assert not [p for p in inside if p.is_symlink()], f"{source} holds symbolic links"


def test_it_installs_the_k8s_extra_with_the_postgres_storage_non_editable():
    installs = [run for run in instructions("RUN") if "pip install" in run]
    assert installs and not any(" -e " in run or "--editable" in run for run in installs)
    groups = [group for run in installs for group in re.findall(r'pip install "[^"]*\[([\w,]+)\]"', run)]
    extras = {extra for group in groups for extra in group.split(",")}
    assert extras == {"k8s"} and extras <= set(PYPROJECT["project"]["optional-dependencies"])
    k8s = PYPROJECT["project"]["optional-dependencies"]["k8s"]
    assert f"dagster-postgres=={pin('dagster-postgres')}" in k8s and f"dagster-k8s=={pin('dagster-k8s')}" in k8s
    assert pin("dagster-postgres") == pin("dagster-k8s")
    assert pin("dagster-k8s").split(".")[2] == pin("dagster").split(".")[2]  # the libraries' 0.x.N is dagster's 1.y.N
    assert "presets/*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["crrecon_pipeline"]


def test_its_torch_is_the_tested_version_and_a_cuda_build():
    makefile = (ROOT / "Makefile").read_text()
    tested = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", makefile, re.M).group(1)
    assert f"TORCH_VERSION={tested}" in instructions("ARG")
    installs = " ".join(instructions("RUN"))
    assert 'pip install "torch==${TORCH_VERSION}"' in installs and "assert torch.version.cuda" in installs
    python = re.match(r"python:(3\.\d+)-slim$", instructions("FROM")[0]).group(1)
    assert tuple(map(int, python.split("."))) >= tuple(map(int, PYPROJECT["project"]["requires-python"][2:].split(".")))


def test_it_runs_as_a_non_root_user_the_chart_names():
    user = instructions("USER")[-1]
    assert user.isdigit() and int(user) != 0
    for security in (DEPLOYMENT["podSecurityContext"],
                     VALUES["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"]
                     ["securityContext"]):
        assert security["runAsNonRoot"] and security["runAsUser"] == int(user) == security["fsGroup"]


def test_it_serves_the_code_location_the_chart_names():
    module = PYPROJECT["tool"]["dagster"]["module_name"]
    assert PYPROJECT["tool"]["dg"]["project"]["code_location_target_module"] == module
    command = instructions("CMD")[-1]
    assert '"dagster", "api", "grpc"' in command and f'"--module-name", "{module}"' in command
    assert DEPLOYMENT["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert f'"{DEPLOYMENT["port"]}"' in command


def test_the_chart_version_is_pyprojects_dagster():
    for text in ((ROOT / "deploy" / "k8s" / "values.yaml").read_text(), (ROOT / "docs" / "scaling.md").read_text()):
        versions = re.findall(r"helm upgrade --install dagster dagster/dagster --version (\S+)", text)
        assert versions and set(versions) == {pin("dagster")}


def test_the_volume_claim_is_shared_and_holds_crrecon_home():
    assert PVC["kind"] == "PersistentVolumeClaim" and PVC["spec"]["accessModes"] == ["ReadWriteMany"]
    env = {e["name"]: e["value"] for e in DEPLOYMENT["env"]}
    image_home = re.search(r"CRRECON_HOME=(\S+)", " ".join(instructions("ENV"))).group(1)
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    for spec in (DEPLOYMENT, launcher):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
        assert set(claims.values()) == {PVC["metadata"]["name"]}
        mount = mounts[next(iter(claims))]
        assert env["CRRECON_HOME"] == image_home and env["CRRECON_HOME"].startswith(mount.rstrip("/") + "/")


def test_the_training_pod_asks_for_a_gpu_with_cpu_memory_and_a_sized_shm():
    """trained_model's dagster-k8s tag, parsed into Kubernetes models by dagster-k8s itself."""
    k8s = pytest.importorskip("dagster_k8s")
    from dagster_k8s.models import k8s_model_from_dict
    from kubernetes.client import V1Container, V1PodSpec

    from crrecon_pipeline.defs.launch import GPU_TAGS

    config = k8s.job.UserDefinedDagsterK8sConfig.from_dict(GPU_TAGS["dagster-k8s/config"])
    container = k8s_model_from_dict(V1Container, {"name": "step", **config.container_config})
    pod = k8s_model_from_dict(V1PodSpec, {"containers": [{"name": "step"}], **config.pod_spec_config})
    requests = container.resources.requests
    assert requests["nvidia.com/gpu"] == container.resources.limits["nvidia.com/gpu"] == "1"
    assert {"cpu", "memory"} <= set(requests)
    shm = next(m for m in container.volume_mounts if m.mount_path == "/dev/shm")
    volume = next(v for v in pod.volumes if v.name == shm.name)
    assert volume.empty_dir.medium == "Memory" and volume.empty_dir.size_limit
