"""Markdown tables and short texts that the assets show in the UI, built from plain data (a shard record, the
simulator settings, a design summary, a dataset profile, a run comparison). No Dagster import: the assets only
wrap these strings as MetadataValue.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crrecon_pipeline.data.shardrecord import COUNTS, ShardRecord
from crrecon_pipeline.numbers import fmt, rounded
from crrecon_pipeline.physics.shards import SimulationSettings

if TYPE_CHECKING:  # the profile's module draws with matplotlib: not imported for a type
    from crrecon_pipeline.report.profile import DatasetProfile, PixelStats


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def channel_table(record: ShardRecord) -> str:
    """The kept spectra per raw channel (power fraction, ~4 significant figures) of a filtered shard's record."""
    rows = [[name, fmt(rounded(m)), fmt(rounded(lo)), fmt(rounded(hi))]
            for name, m, lo, hi in zip("RGB", record.bayer_mean, record.bayer_min, record.bayer_max)]
    return markdown_table(["channel", "mean", "min", "max"], rows) + "\n"


def settings_table(settings: SimulationSettings) -> str:
    """The simulator settings (the raw assets' and pretrained_model's metadata)."""
    p = settings.physics
    rows = [("fidelity", p.fidelity), ("seed", settings.seed), ("cell period L", f"{p.period_um} µm"),
            ("pillar height h", f"{p.height_um} µm"), ("detector depth z", f"{p.depth_um} µm"),
            ("substrate index n_s", p.n_substrate), ("pillar index", f"{p.cauchy_a} + {p.cauchy_b} / λ² (λ in µm)"),
            ("background index", p.n_low),
            ("wavelengths", f"{p.wavelength_min_nm:g}–{p.wavelength_max_nm:g} nm, {p.n_wavelengths} samples")]
    if p.fidelity == "multislice":
        rows += [("slices", p.multislice_slices),
                 ("layer solved every", f"{p.multislice_step_nm:g} nm (spline between)"),
                 ("layer grid", f"{p.multislice_grid} × {p.multislice_grid}")]
    if p.fidelity == "rcwa":
        rows += [("Fourier orders per axis", f"−{p.rcwa_orders} … {p.rcwa_orders}"),
                 ("layer solved every", f"{p.rcwa_step_nm:g} nm (spline between)")]
    rows.append(("unfinished fraction", settings.structures.unfinished_fraction))
    return markdown_table(["setting", "value"], [list(r) for r in rows])


def design_table(designs: list) -> str:
    """Each design's surrogate efficiency at the start and the end, the simulator's, the min-band metric, its
    solid / void length scales (and whether it counts), and its fill. `designs`: a design run's DesignRecords
    (design/summary.py; read as attributes)."""
    def number(x):
        return "-" if x is None else format(x, ".4f")

    rows = [[d.index, number(d.initial_predicted_efficiency), number(d.predicted_efficiency),
             number(d.simulated_efficiency), number(d.predicted_min_band), number(d.simulated_min_band),
             f"{d.solid_px} / {d.void_px}" + ("" if d.counted else " (not counted)"), f"{d.fill:.3f}"]
            for d in designs]
    return markdown_table(["design", "start (predicted)", "predicted", "simulated", "min band (predicted)",
                           "min band (simulated)", "solid / void px", "fill"], rows)


def shard_rows_table(profile: DatasetProfile, excluded: dict[str, str]) -> str:
    """Rows kept and dropped by reason per shard and in total (dataset_profile), and the shards left out."""
    rows = [[k, f"`{version}`", *(f"{n:,}" for n in r.counts().values())]
            for k, (version, r) in profile.per_shard.items()]
    rows.append([f"**all {profile.shards}**", "", *(f"**{getattr(profile, k):,}**" for k in COUNTS)])
    table = markdown_table(["shard", "version", "raw rows", "kept", "dropped: unfinished (all-zero spectra)",
                            "dropped: NaN/Inf"], rows) + "\n"
    left_out = "".join(f"\n- shard {k}: {reason}" for k, reason in excluded.items())
    return table + (f"\nLeft out (lineage):{left_out}\n" if left_out else "")


def pixel_table(per_pixel: dict[str, PixelStats]) -> str:
    rows = [[k, *(f"{x:.4g}" for x in (v.mean, v.std, v.min, v.max))] for k, v in per_pixel.items()]
    return markdown_table(["pixel", "mean", "std", "min", "max"], rows)


def setting_effects(effects: dict[str, dict]) -> str:
    """run_comparison: the mean val MSE (as % of the baseline's) of the runs with each value of a setting."""
    if not effects:
        return "only one value of each setting seen so far"
    lines = "\n".join(f"- **{k}**: " + ", ".join(f"{v} → {100 * r:.3g} %" for v, r in d.items())
                      for k, d in effects.items())
    return "Mean val MSE as % of the mean-spectrum baseline's (lower is better), by setting:\n\n" + lines


def launchpad_yaml(op: str, config_yaml: str) -> str:
    """A run config as the launchpad takes it (ops: <op>: config: ...), in a YAML code block."""
    body = "".join(f"      {line}\n" for line in config_yaml.splitlines())
    return f"```yaml\nops:\n  {op}:\n    config:\n{body}```"


def design_rounds_table(rounds: list[dict]) -> str:
    """The design loop round by round (design_round's `design_rounds`): the designing checkpoint, best and mean
    simulated efficiency of the designs that count, the surrogate's largest gap on the round's designs before and
    after the fine-tuning that follows it, the rows added (the new shard)."""
    def number(x):
        return "-" if x is None else f"{x:.4f}"

    rows = [[r["round"], f"`{r['checkpoint']}`", r["shard"], f"{r['counted_designs']} / {r['rows_added']}",
             number(r["best_simulated"]), number(r["mean_simulated"]), number(r["gap"]), number(r.get("gap_after")),
             r["rows_added"]] for r in rounds]
    return markdown_table(["round", "designed by", "shard", "counted", "best simulated", "mean simulated",
                           "gap before", "gap after fine-tuning", "rows added"], rows)
