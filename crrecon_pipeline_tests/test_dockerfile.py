"""What can be checked of the Dockerfile without building it (no image registry here): the files it copies
exist, the extras it installs are pyproject's, the install is non-editable, and it serves the code location's
module, the one the Helm chart names."""

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(keyword: str) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)  # continued lines joined
    return [line[len(keyword):].strip() for line in text.splitlines() if line.startswith(keyword + " ")]


def test_the_files_it_copies_exist_and_are_no_links():
    """COPY keeps a symbolic link as a link: configs/'s links into the package would point nowhere in the image."""
    copies = instructions("COPY")
    assert copies
    for copy in copies:
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source
            inside = [ROOT / source, *(ROOT / source).rglob("*")]
            assert not [p for p in inside if p.is_symlink()], f"{source} holds symbolic links"


def test_it_installs_the_k8s_extra_non_editable_on_a_cuda_torch_base():
    assert re.match(r"pytorch/pytorch:\S+-cuda\d", instructions("FROM")[0])
    installs = [run for run in instructions("RUN") if "pip install" in run]
    assert installs and not any(" -e " in run or "--editable" in run for run in installs)
    extras = {extra for run in installs for group in re.findall(r"\[([\w,]+)\]", run) for extra in group.split(",")}
    assert extras == {"k8s"} and extras <= set(PYPROJECT["project"]["optional-dependencies"])
    assert "presets/*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["crrecon_pipeline"]


def test_it_serves_the_code_location_the_chart_names():
    module = PYPROJECT["tool"]["dagster"]["module_name"]
    command = instructions("CMD")[-1]
    assert '"dagster", "api", "grpc"' in command and f'"--module-name", "{module}"' in command
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    assert f'"{deployment["port"]}"' in command
