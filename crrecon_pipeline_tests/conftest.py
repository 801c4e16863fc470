import os
from pathlib import Path

import numpy as np
import pytest

from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset
from crrecon_pipeline.physics.simulate import simulate_spectra

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """A small simulated dataset in the seed's raw format: 2 shards, 600 rows, ~47% unfinished."""
    out = tmp_path_factory.mktemp("raw")
    write_dataset(out, rows=600, shards=2, settings=SimulationSettings(seed=7))
    return out


@pytest.fixture(scope="session")
def prepared_dir(raw_dir, tmp_path_factory) -> Path:
    from crrecon_pipeline.data.prepare import preprocess

    out = tmp_path_factory.mktemp("prepared")
    preprocess(raw_dir, out)
    return out


def write_raw_pair(folder: Path, shard: int, structures: np.ndarray, spectra: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"binary_dataset_128_{shard}.npy", structures)
    np.save(folder / f"spectra_latest_{shard}.npy", spectra)


def assert_turn_swaps_red_and_blue(structures: np.ndarray, params, atol: float) -> None:
    """A 180-degree turn of the cell swaps the R and B pixels and keeps G, to `atol`, for structures that are
    not symmetric (their R and B differ by > 1e-2, so the swap is a real test)."""
    a = -simulate_spectra(structures, params)
    b = -simulate_spectra(structures[:, ::-1, ::-1].copy(), params)
    np.testing.assert_allclose(b[:, 0], a[:, 2], atol=atol)
    np.testing.assert_allclose(b[:, 2], a[:, 0], atol=atol)
    np.testing.assert_allclose(b[:, 1], a[:, 1], atol=atol)
    assert np.abs(a[:, 0] - a[:, 2]).max() > 1e-2
