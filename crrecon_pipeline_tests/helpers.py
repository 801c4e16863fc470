"""Plain helpers shared by the test modules: the tiny training config, the CLI in a subprocess, raw shard pairs
written by hand, the 180° symmetry assertion. Fixtures live in conftest.py; a test module imports helpers from here
(or dagster_helpers.py), never from another test module or from conftest.py."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from crrecon_pipeline.physics.simulate import simulate_spectra
from crrecon_pipeline.train.config import load_config

TINY = ["model.params.channels=[8, 8, 8]", "model.params.fields=8", "model.params.in_pool=2",
        "data.batch_size=32", "data.train_ratio=0.8", "training.epochs=3", "training.save_every=2",
        "data.augment_shifts=false"]  # 4x shorter epochs; test_training_is_deterministic... trains with the shifts

SMALL = {"crrecon_xattn": {"d_model": 32, "nhead": 4, "channels": (8, 8, 16, 16, 16)},  # per model, for unit tests
         "crrecon_gru": {"d_model": 32, "channels": (8, 8, 16, 16, 16)},
         "cnn_field": {"fields": 8, "channels": (8, 16, 16)},
         # the research architectures: their CNN trunk has fixed widths, only the heads shrink
         "cnn_xattn": {"d_model": 32, "nhead": 4, "dec_layers": 1},
         "cnn_gru": {"d_model": 16},
         "cnn_diffraction": {"out_len": 30, "d_model": 64, "nhead": 4, "dec_layers": 1},
         "se_disco": {"out_len": 30, "width": 8, "fno_blocks": 1, "fno_modes": 4, "z_dim": 16, "siren_hidden": 16,
                      "siren_layers": 2}}
# Research architectures that break the position clause of the contract, kept because they are the group's own
# (their checkpoints must load): at random initialisation their output does not change when a block moves from above
# the R pixel to above the B pixel. se_disco: max |Δ| = 0; cnn_gru: its trunk's global average pool after circular
# padding is invariant to circular shifts by multiples of its 32 px stride, and R -> B is a 64 px shift.
POSITION_BLIND = {"se_disco", "cnn_gru"}


def tiny_config(*extra):
    """configs/quick.yaml with the TINY overrides, then `extra` (later values win)."""
    return load_config("configs/quick.yaml", TINY + list(extra))


def run_cli(*args) -> subprocess.CompletedProcess:
    """`crrecon ARGS` in a subprocess (this interpreter), output captured as text."""
    return subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", *map(str, args)],
                          capture_output=True, text=True)


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
