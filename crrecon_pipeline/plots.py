"""PNG figures for the UI and the run folder: loss curves, true vs predicted spectra, dataset samples."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PIXELS = [("R", (0, 0), "tab:red"), ("G1", (0, 1), "tab:green"), ("G2", (1, 0), "olive"), ("B", (1, 1), "tab:blue")]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_loss_curves(history: list[dict], path: str | Path) -> Path:
    latest = {h["epoch"]: h for h in history}  # a resumed run may repeat epochs: the later wins
    epochs = sorted(latest)
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax.plot(epochs, [latest[e]["train_loss"] for e in epochs], label="train")
    ax.plot(epochs, [latest[e]["val_loss"] for e in epochs], label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    ax_lr.plot(epochs, [latest[e]["lr"] for e in epochs], color="gray")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    ax_lr.grid(alpha=0.3)
    fig.suptitle("Training curves")
    return _save(fig, path)


def plot_predictions(structures: np.ndarray, true: np.ndarray, pred: np.ndarray | None, wavelengths_nm: np.ndarray,
                     path: str | Path, title: str = "Validation structures: true (solid) vs predicted (dashed)",
                     labels: list[str] | None = None) -> Path:
    """structures (n, 128, 128), true/pred (n, 2, 2, L); labels: an optional title per row."""
    n = len(structures)
    fig, axes = plt.subplots(n, 2, figsize=(8, (2.3 if labels is None else 2.7) * n), gridspec_kw={"width_ratios": [1, 2.6]}, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(structures[i].T, cmap="gray_r", origin="lower", extent=(0, 2, 0, 2))
        axes[i, 0].axhline(1, color="tab:orange", lw=0.8)
        axes[i, 0].axvline(1, color="tab:orange", lw=0.8)
        axes[i, 0].set_xlabel("x (um)")
        ax = axes[i, 1]
        for name, (a, b), color in PIXELS:
            ax.plot(wavelengths_nm, true[i, a, b], color=color, label=name)
            if pred is not None:
                ax.plot(wavelengths_nm, pred[i, a, b], color=color, ls="--")
        ax.set_ylabel("power fraction")
        ax.grid(alpha=0.3)
        if labels is not None:
            ax.set_title(labels[i], fontsize=9)
    axes[-1, 1].set_xlabel("wavelength (nm)")
    axes[0, 1].legend(ncol=4, fontsize=8)
    if labels is not None:
        fig.subplots_adjust(hspace=0.5)  # room for the row titles
    fig.suptitle(title)
    return _save(fig, path)


def plot_design_progress(history: list[dict], path: str | Path, reference: float | None = None) -> Path:
    """Surrogate efficiency of the (projected) designs per optimization step, with the tanh sharpness beta."""
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(steps, [h["mean_efficiency"] for h in history], label="mean over designs")
    ax.plot(steps, [h["max_efficiency"] for h in history], label="best design")
    if reference is not None:
        ax.axhline(reference, color="gray", ls=":", label="best training structure (true)")
    ax.set_xlabel("step")
    ax.set_ylabel("routing efficiency (surrogate)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax_beta = ax.twinx()
    ax_beta.plot(steps, [h["beta"] for h in history], color="gray", lw=0.8)
    ax_beta.set_yscale("log")
    ax_beta.set_ylabel("projection sharpness beta", color="gray")
    fig.suptitle("Inverse design through the surrogate")
    return _save(fig, path)


def markdown_image(path: str | Path, alt: str = "plot") -> str:
    """A PNG embedded in markdown metadata, so the Dagster UI shows it without a file server."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"

