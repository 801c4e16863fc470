"""Fixtures shared by the test modules (a small simulated raw dataset and its prepared store, once per session);
plain helpers are in helpers.py and dagster_helpers.py."""

import os
from pathlib import Path

import pytest

from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """A small simulated dataset in the research code's raw format: 2 shards, 600 rows, ~47% unfinished."""
    out = tmp_path_factory.mktemp("raw")
    write_dataset(out, rows=600, shards=2, settings=SimulationSettings(seed=7))
    return out


@pytest.fixture(scope="session")
def prepared_dir(raw_dir, tmp_path_factory) -> Path:
    from crrecon_pipeline.data.prepare import preprocess

    out = tmp_path_factory.mktemp("prepared")
    preprocess(raw_dir, out)
    return out
