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
TRUE_STYLE = {"lw": 3.2, "alpha": 0.35}  # the truth as a wide pale band, the prediction as a thin line over it
PRED_STYLE = {"lw": 1.1}


def _pixel_ls(name: str) -> str:
    return "--" if name == "G2" else "-"  # G2 dashed: it overlaps G1 for symmetric cells


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
    ax.legend(fontsize=8, loc="upper right")  # the curves fall from the upper left: their tails stay clear
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
    """structures (n, 128, 128), true/pred (n, 2, 2, L). True spectra as wide pale bands, predictions as thin
    lines over them, G2 dashed in both (it overlaps G1 for symmetric cells); the legend beside the first row; each
    row names its MSE, or carries its own label."""
    n = len(structures)
    fig, axes = plt.subplots(n, 2, figsize=(9, 2.6 * n + 0.6), gridspec_kw={"width_ratios": [1, 2.8]}, squeeze=False,
                             constrained_layout=True)
    for i in range(n):
        draw_structure(axes[i, 0], structures[i])
        ax = axes[i, 1]
        for name, (a, b), color in PIXELS:
            ax.plot(wavelengths_nm, true[i, a, b], color=color, ls=_pixel_ls(name), label=f"{name} true",
                    **(TRUE_STYLE if pred is not None else PRED_STYLE))
            if pred is not None:
                ax.plot(wavelengths_nm, pred[i, a, b], color=color, ls=_pixel_ls(name), label=f"{name} predicted",
                        **PRED_STYLE)
        if pred is not None:
            mse = float(np.mean((pred[i] - true[i]) ** 2))
            ax.set_title(f"example {i + 1}: MSE {mse:.3g}", fontsize=9)
        ax.set_ylabel("fraction of incident power")
        ax.set_xlabel("wavelength (nm)")
        ax.grid(alpha=0.3)
        if labels is not None:
            ax.set_title(labels[i] + (f" · MSE {mse:.3g}" if pred is not None else ""), fontsize=9)
    # beside the first row, off the curves' tails
    axes[0, 1].legend(ncol=1, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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



# ------------------------------------------------------------------------------------------------ the dashboard

class Dashboard:
    """One small figure per epoch, everything a researcher glances at: train and validation loss with the lr, each
    loss term's share of the validation loss (solid) and of the training loss (dotted), and true vs predicted
    spectra with |error| of a few fixed validation and training structures; titled with its epoch.

    Why a class: drawing must stay cheap on a loaded machine (target 0.5 s; benchmarks/bench_dashboard.py), so the
    figure, its axes, lines and legends are made once on matplotlib's Agg canvas (no pyplot, no layout engine, no
    tight bbox) and each epoch only moves data into them (`set_data`) and writes a small PNG."""

    def __init__(self, wavelengths_nm: np.ndarray, labels: list[str], dpi: int = 64):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.wl, self.labels, self.dpi, self.terms = np.asarray(wavelengths_nm), list(labels), dpi, None
        n = len(labels)
        self.fig = Figure(figsize=(3.0 * max(n, 2), 6.4), dpi=dpi)
        self.true, self.background, self.dynamic = None, None, []
        FigureCanvasAgg(self.fig)
        grid = self.fig.add_gridspec(2, max(n, 2) * 2, left=0.06, right=0.87, bottom=0.08, top=0.88, hspace=0.4,
                                     wspace=1.3)
        half = max(n, 2)
        self.ax_loss = self.fig.add_subplot(grid[0, :half - 1])
        self.ax_lr = self.ax_loss.twinx()
        self.ax_share = self.fig.add_subplot(grid[0, half:])
        self.title = self.fig.suptitle("", fontsize=11)
        self._loss_axes()
        self.spectra = [self._spectrum_axes(self.fig.add_subplot(grid[1, 2 * i:2 * i + 2]), i) for i in range(n)]
        self._spectra_legend()

    @staticmethod
    def _few_ticks(ax, nx: int = 5, ny: int = 4) -> None:
        """Text and tick marks are most of a draw's cost: a few major ticks, no minor ones."""
        ax.xaxis.set_major_locator(ticker.MaxNLocator(nx, integer=True))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        if ax.get_yscale() == "log":  # two digits: within a decade the locator falls back to linear steps
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=ny + 1))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.1e}".replace("e-0", "e-")))
        else:
            ax.yaxis.set_major_locator(ticker.MaxNLocator(ny))
        ax.yaxis.set_minor_locator(ticker.NullLocator())

    def _loss_axes(self) -> None:
        ax = self.ax_loss
        (self.l_train,) = ax.plot([], [], marker=".", color="tab:blue", label="train")
        (self.l_val,) = ax.plot([], [], marker=".", color="tab:orange", label="validation")
        (self.l_lr,) = self.ax_lr.plot([], [], color="gray", lw=0.8, ls=":", label="lr (right)")
        _log_axis(ax)
        _log_axis(self.ax_lr)  # plain 1-2-5 labels: mathtext ("6×10⁻⁴") costs a tenth of a second a draw
        self.ax_lr.tick_params(labelsize=7, colors="gray")
        ax.set_xlabel("epoch", fontsize=8)
        ax.text(0.0, 1.03, "loss (log) and lr", fontsize=9, transform=ax.transAxes)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        self._few_ticks(ax)
        self._few_ticks(self.ax_lr, ny=3)
        ax.legend(handles=[self.l_train, self.l_val, self.l_lr], fontsize=7, loc="upper right", framealpha=0.6)
        share = self.ax_share
        share.set_ylim(0, 1.05)  # a lone term's share, 1, stays clear of the frame
        share.text(0.0, 1.03, "each loss term's share (val solid, train dotted)", fontsize=9,
                   transform=share.transAxes)
        share.set_xlabel("epoch", fontsize=8)
        share.tick_params(labelsize=7)
        share.grid(alpha=0.3)
        self._few_ticks(share, ny=5)

    def _spectrum_axes(self, ax, i: int) -> dict:
        lines = {"true": [], "pred": []}
        for name, _, color in PIXELS:
            lines["true"].append(ax.plot(self.wl, np.zeros_like(self.wl), color=color, ls=_pixel_ls(name),
                                         **TRUE_STYLE)[0])
            lines["pred"].append(ax.plot(self.wl, np.zeros_like(self.wl), color=color, ls=_pixel_ls(name),
                                         **PRED_STYLE)[0])
        (err,) = ax.plot(self.wl, np.zeros_like(self.wl), color="black", lw=0.8)
        ax.set_xlim(self.wl[0], self.wl[-1])
        ax.set_xlabel("wavelength (nm)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        self._few_ticks(ax, nx=4, ny=3)
        return {"ax": ax, "lines": lines, "err": err,
                "title": ax.text(0.0, 1.03, self.labels[i], fontsize=8, transform=ax.transAxes)}

    def _spectra_legend(self) -> None:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=c, ls=_pixel_ls(n), lw=1.5, label=n) for n, _, c in PIXELS]
        handles += [Line2D([], [], color="gray", **TRUE_STYLE, label="true (wide)"),
                    Line2D([], [], color="gray", **PRED_STYLE, label="predicted (thin)"),
                    Line2D([], [], color="black", lw=0.8, label="|error|, mean of\nthe 4 pixels")]
        self.fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.875, 0.08), fontsize=7, frameon=False)

    def _share_lines(self, terms: list[str]) -> None:
        """One solid (val) and one dotted (train) line per term; rebuilt only when the loss's terms change."""
        ax = self.ax_share
        for line in list(ax.lines):
            line.remove()
        self.terms, self.share = terms, {}
        for k, name in enumerate(terms):
            color = f"C{k % 10}"
            self.share[name] = (ax.plot([], [], color=color, label=name)[0],
                                ax.plot([], [], color=color, ls=":")[0])
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

    def draw(self, history: list, true: np.ndarray, pred: np.ndarray, path: str | Path, epochs: int) -> Path:
        """`history`: records.EpochRecord up to this epoch (read as attributes; a repeated epoch: the later wins);
        true/pred (n, 2, 2, L) of the structures named by `labels`. Writes the PNG atomically."""
        latest = {h.epoch: h for h in history}
        hist = [latest[e] for e in sorted(latest)]
        x = np.array([h.epoch for h in hist], dtype=float)
        self._draw_losses(hist, x)
        self._draw_shares(hist, x)
        if self.true is None or not np.array_equal(self.true, true):
            self._freeze(np.array(true, copy=True))
        for i, panel in enumerate(self.spectra):
            for k, (_, (a, b), _) in enumerate(PIXELS):
                panel["lines"]["pred"][k].set_ydata(pred[i, a, b])
            panel["err"].set_ydata(np.abs(pred[i] - true[i]).mean(axis=(0, 1)))
            mse = float(np.mean((pred[i] - true[i]) ** 2))
            panel["title"].set_text(f"{self.labels[i]} · MSE {mse:.2g}")
        last = hist[-1] if hist else None
        self.title.set_text(f"epoch {last.epoch}/{epochs} · train {last.train_loss:.4g} · val {last.val_loss:.4g} "
                            f"(best {min(h.val_loss for h in hist):.4g})" if last else "no epoch yet")
        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        for artist in self.dynamic:
            self.fig.draw_artist(artist)
        return self._write_png(np.asarray(canvas.buffer_rgba()), Path(path))

    def _freeze(self, true: np.ndarray) -> None:
        """Render what does not change between epochs once (blitting): the spectra panels with their fixed y range
        (from the truth: a wild early prediction is clipped), ticks, truth bands and the legends. Each draw then
        restores that image and draws only the loss panels, the predictions, |error| and the titles."""
        self.true = true
        for i, panel in enumerate(self.spectra):
            for k, (_, (a, b), _) in enumerate(PIXELS):
                panel["lines"]["true"][k].set_ydata(true[i, a, b])
            panel["ax"].set_ylim(min(0.0, float(np.nanmin(true[i]))), 1.15 * max(float(np.nanmax(true[i])), 1e-6))
        self.dynamic = [self.title, self.ax_loss, self.ax_lr, self.ax_share]
        self.dynamic += [a for p in self.spectra for a in (*p["lines"]["pred"], p["err"], p["title"])]
        for artist in self.dynamic:
            artist.set_animated(True)
        self.fig.canvas.draw()
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def _write_png(self, rgba: np.ndarray, path: Path) -> Path:
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        Image.fromarray(rgba[..., :3]).save(tmp, format="png", compress_level=3)
        tmp.replace(path)
        return path

    def _draw_losses(self, hist: list, x: np.ndarray) -> None:
        def values(key):
            return np.array([np.nan if getattr(h, key) is None else getattr(h, key) for h in hist], dtype=float)

        self.l_train.set_data(x, values("train_loss"))
        self.l_val.set_data(x, values("val_loss"))
        self.l_lr.set_data(x, values("lr"))
        for ax in (self.ax_loss, self.ax_lr):
            ax.relim()
            ax.autoscale_view()
        self.ax_loss.set_xlim(0.5, max(x[-1] if len(x) else 1, 2) + 0.5)

    def _draw_shares(self, hist: list, x: np.ndarray) -> None:
        terms = list(hist[-1].val_terms) if hist else []
        if terms != self.terms:
            self._share_lines(terms)
        for name, (val_line, train_line) in self.share.items():
            for line, split, total in ((val_line, "val_terms", "val_loss"), (train_line, "train_terms", "train_loss")):
                share = [(getattr(h, split).get(name) or np.nan) / getattr(h, total)
                         if getattr(h, total) else np.nan for h in hist]
                line.set_data(x, np.array(share, dtype=float))
        self.ax_share.set_xlim(0.5, max(x[-1] if len(x) else 1, 2) + 0.5)
