"""PNG figures for the UI and the run folder: loss curves, true vs predicted spectra, dataset samples."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import numpy as np  # noqa: E402

# Bayer pixel (a, b) of the [[R, G1], [G2, B]] layout is quadrant E_ab of the cell: x in half a, y in half b.
PIXELS = [("R", (0, 0), "tab:red"), ("G1", (0, 1), "tab:green"), ("G2", (1, 0), "olive"), ("B", (1, 1), "tab:blue")]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _log_axis(ax) -> None:
    """Log scale whose ticks can be read at any range: 1-2-5 ticks labelled, e.g. 1.5e-4 stays legible."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.0e}".replace("e-0", "e-")))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def plot_loss_curves(history: list, path: str | Path, title: str = "Training curves") -> Path:
    """Loss per epoch (log scale, final values in the legend) and the learning rate; x is the epoch, never time.
    `history`: records.EpochRecord (read as attributes)."""
    latest = {h.epoch: h for h in history}  # a resumed run may repeat epochs: the later wins
    epochs = sorted(latest)
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
    train = [latest[e].train_loss for e in epochs]
    val = [latest[e].val_loss for e in epochs]
    ax.plot(epochs, train, marker=".", label=f"train (last {train[-1]:.3g})" if train else "train")
    ax.plot(epochs, val, marker=".",
            label=f"validation (last {val[-1]:.3g}, best {min(val):.3g})" if val else "validation")
    _log_axis(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax_lr.plot(epochs, [float("nan") if latest[e].lr is None else latest[e].lr for e in epochs], color="gray",
               marker=".")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate (end of epoch)")
    ax_lr.set_title("learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax_lr.grid(alpha=0.3)
    for a in (ax, ax_lr):
        a.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    fig.suptitle(title)
    return _save(fig, path)


def draw_structure(ax, structure: np.ndarray, period_um: float = 2.0) -> None:
    """The cell as seen from above (x right, y up) with its four pixels marked R, G1, G2, B."""
    ax.imshow(structure.T, cmap="gray_r", origin="lower", extent=(0, period_um, 0, period_um), vmin=0, vmax=1)
    half = period_um / 2
    ax.axhline(half, color="tab:orange", lw=0.8)
    ax.axvline(half, color="tab:orange", lw=0.8)
    for name, (a, b), color in PIXELS:  # pixel (a, b) is the quadrant x in half a, y in half b
        ax.text(half * (a + 0.5), half * (b + 0.5), name, color=color, ha="center", va="center", fontsize=9,
                fontweight="bold", bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")


def plot_predictions(structures: np.ndarray, true: np.ndarray, pred: np.ndarray | None, wavelengths_nm: np.ndarray,
                     path: str | Path, title: str = "Validation structures: true vs predicted spectra",
                     labels: list[str] | None = None) -> Path:
    """structures (n, 128, 128), true/pred (n, 2, 2, L). True spectra solid (G2 dashed: it overlaps G1 for
    symmetric cells), predictions dotted; each row names its MSE, or carries its own label."""
    n = len(structures)
    fig, axes = plt.subplots(n, 2, figsize=(9, 2.6 * n + 0.6), gridspec_kw={"width_ratios": [1, 2.8]}, squeeze=False,
                             constrained_layout=True)
    for i in range(n):
        draw_structure(axes[i, 0], structures[i])
        ax = axes[i, 1]
        for name, (a, b), color in PIXELS:
            ax.plot(wavelengths_nm, true[i, a, b], color=color, ls="--" if name == "G2" else "-", label=f"{name} true")
            if pred is not None:
                ax.plot(wavelengths_nm, pred[i, a, b], color=color, ls=":", lw=2, label=f"{name} predicted")
        if pred is not None:
            mse = float(np.mean((pred[i] - true[i]) ** 2))
            ax.set_title(f"example {i + 1}: MSE {mse:.3g}", fontsize=9)
        ax.set_ylabel("fraction of incident power")
        ax.set_xlabel("wavelength (nm)")
        ax.grid(alpha=0.3)
        if labels is not None:
            ax.set_title(labels[i] + (f" · MSE {mse:.3g}" if pred is not None else ""), fontsize=9)
    axes[0, 1].legend(ncol=4 if pred is None else 2, fontsize=7, loc="best")
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

