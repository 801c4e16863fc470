"""The dataset profile (the research code's analyze_data.py): sizes, ranges, per-pixel spectra, fill fractions,
pictures; and the preview picture of one prepared shard version."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from crrecon_pipeline.data.prepared import Prepared
from crrecon_pipeline.data.shardrecord import COUNTS, ShardRecord
from crrecon_pipeline.data.store import ShardVersion
from crrecon_pipeline.data.transforms import PrepareSettings, unpack_structures
from crrecon_pipeline.plots import PIXELS, _save, draw_structure, plot_predictions


@dataclass(frozen=True)
class PixelStats:
    mean: float
    std: float
    min: float
    max: float


@dataclass(frozen=True)
class DatasetProfile:
    """The data training sees, all shards together; `per_shard` the record of each version used, by shard."""

    raw_rows: int
    kept_rows: int
    dropped_unfinished: int
    dropped_nonfinite: int
    per_shard: dict[int, tuple[str, ShardRecord]]  # shard -> (version, its record)
    rotated_rows: int
    bayer_min: float
    bayer_max: float
    per_pixel: dict[str, PixelStats]  # R, G1, G2, B
    fill_mean: float
    fill_std: float
    diagonal_symmetric_fraction: float
    wavelengths_nm: tuple[float, float]  # first and last bin centre

    @property
    def shards(self) -> int:
        return len(self.per_shard)

    def to_json(self) -> dict:
        out = asdict(self) | {"shards": self.shards, "wavelengths_nm": list(self.wavelengths_nm)}
        out["per_shard"] = [{"shard": k, "version": v, **r.counts()} for k, (v, r) in self.per_shard.items()]
        return out


def profile_dataset(prepared: Prepared, picture: str | Path, sample: int = 2048) -> DatasetProfile:
    """Numbers over the whole Bayer array; fill fractions over an even sample of structures (bounded memory)."""
    bayer = prepared.bayer
    pick = np.linspace(0, len(prepared) - 1, min(sample, len(prepared))).astype(int)
    structures = prepared.structures[pick]
    fill = structures.reshape(len(pick), -1).mean(axis=1)
    symmetric = float((structures == structures.transpose(0, 2, 1)).all(axis=(1, 2)).mean())
    per_pixel = {name: PixelStats(float(bayer[:, a, b].mean()), float(bayer[:, a, b].std()),
                                  float(bayer[:, a, b].min()), float(bayer[:, a, b].max()))
                 for name, (a, b), _ in PIXELS}
    counts = {key: sum(getattr(v.record, key) for v in prepared.versions.values()) for key in COUNTS}
    raw_rows = counts["raw_rows"]

    fig, axes = plt.subplots(2, 4, figsize=(11, 5))
    for ax, i in zip(axes[0], pick[np.linspace(0, len(pick) - 1, 4).astype(int)]):
        draw_structure(ax, prepared.structures[int(i)])  # x, y in µm and the four pixels named
        ax.set_title(f"row {prepared.source_rows[int(i)]} (black: material)", fontsize=9)
    lam = prepared.wavelengths_nm
    ax = axes[1, 0]
    for name, (a, b), color in PIXELS:
        m, s = bayer[:, a, b].mean(0), bayer[:, a, b].std(0)
        ax.plot(lam, m, color=color, label=name)
        ax.fill_between(lam, m - s, m + s, color=color, alpha=0.15)
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("fraction of incident power")
    ax.set_title("mean +- std per pixel", fontsize=9)
    ax.legend(fontsize=7)
    axes[1, 1].hist(fill, bins=30, color="gray")
    axes[1, 1].set_title("fill fraction", fontsize=9)
    axes[1, 1].set_xlabel("material fraction of the cell")
    axes[1, 1].set_ylabel("structures")
    axes[1, 2].hist(bayer.reshape(-1)[:: max(1, bayer.size // 200_000)], bins=50, color="tab:purple")
    axes[1, 2].set_title("Bayer values", fontsize=9)
    axes[1, 2].set_xlabel("fraction of incident power")
    axes[1, 2].set_ylabel("values")
    rb = (bayer[:, 0, 0] - bayer[:, 1, 1]).mean(1)
    axes[1, 3].hist(rb, bins=40, color="tab:orange")
    axes[1, 3].set_title("mean R - B per structure", fontsize=9)
    axes[1, 3].set_xlabel("mean over bins of R - B")
    axes[1, 3].set_ylabel("structures")
    fig.suptitle(f"Dataset: {len(prepared)} kept of {raw_rows} raw rows in {len(prepared.shards)} shards")
    fig.tight_layout()
    _save(fig, picture)
    return DatasetProfile(
        **(counts | {"kept_rows": len(prepared)}),
        per_shard={k: (v.version, v.record) for k, v in prepared.versions.items()},
        rotated_rows=0 if prepared.rotated_bayer is None else len(prepared.rotated_bayer),
        bayer_min=float(bayer.min()),
        bayer_max=float(bayer.max()),
        per_pixel=per_pixel,
        fill_mean=float(fill.mean()),
        fill_std=float(fill.std()),
        diagonal_symmetric_fraction=symmetric,
        wavelengths_nm=(float(lam[0]), float(lam[-1])),
    )


def rotation_preview(version: ShardVersion, wavelengths_nm: np.ndarray) -> Path:
    """Two rows of a rotated version: the stored structure and its 180-degree twin with their Bayer spectra (the
    twin's R and B swap places, the greens too), drawn once beside the version's folder."""
    path = version.path.parent / f"preview_{version.version}.png"
    if not path.exists():
        pick = np.linspace(0, version.rows - 1, min(2, version.rows)).astype(int)
        structures, bayer = [], []
        for suffix in ("", "_rotated"):
            packed = np.load(version.file(f"structures{suffix}.npy"), mmap_mode="r")
            structures.append(unpack_structures(np.asarray(packed[pick])))
            bayer.append(np.asarray(np.load(version.file(f"bayer{suffix}.npy"), mmap_mode="r")[pick]))
        order = [(k, t) for k in range(len(pick)) for t in range(2)]
        plot_predictions(np.stack([structures[t][k] for k, t in order]), np.stack([bayer[t][k] for k, t in order]),
                         None, wavelengths_nm, path, title=f"Shard {version.shard}: structures and their 180° twins",
                         labels=[f"row {pick[k]}{' turned 180°' if t else ''}" for k, t in order])
    return path


def shard_preview(version: ShardVersion, settings: PrepareSettings) -> Path:
    """A few kept structures of a version and their Bayer spectra, drawn once, beside the version's folder (the
    version itself stays as committed)."""
    path = version.path.parent / f"preview_{version.version}.png"
    if not path.exists():
        bayer = np.load(version.file("bayer.npy"), mmap_mode="r")
        packed = np.load(version.file("structures.npy"), mmap_mode="r")
        pick = np.linspace(0, version.rows - 1, min(3, version.rows)).astype(int)
        plot_predictions(unpack_structures(np.asarray(packed[pick])), np.asarray(bayer[pick]), None,
                         settings.bin_centers_nm(), path,
                         title=f"Shard {version.shard}: kept structures and their Bayer spectra")
    return path
