"""training_log_analysis, run_comparison and dataset_profile: the research code's log analysis and data report as
assets."""


import json

import dagster as dg

from crrecon_pipeline.data.npyio import write_text_atomic
from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.assets.training import trained_model
from crrecon_pipeline.defs.handoff import required_trained_model
from crrecon_pipeline.defs.lineage import training_versions
from crrecon_pipeline.defs.resources import CrreconPaths, ModelChecks
from crrecon_pipeline.numbers import percent, rounded
from crrecon_pipeline.plots import markdown_image
from crrecon_pipeline.report.analysis import analyze_run, report_markdown
from crrecon_pipeline.report.diagnosis import EXPLAIN
from crrecon_pipeline.report.leaderboard import compare_runs
from crrecon_pipeline.report.profile import profile_dataset
from crrecon_pipeline.report.tables import launchpad_yaml, pixel_table, setting_effects, shard_rows_table


@dg.asset(deps=[trained_model], group_name="analysis", kinds={"python"},
          description="The latest run's log: metrics, diagnosis (" + ", ".join(EXPLAIN) + "), suggestions.")
def training_log_analysis(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    run_dir = required_trained_model(context.instance).run_dir
    if run_dir is None:
        raise dg.Failure(description="trained_model's latest materialization names no run_dir", allow_retries=False)
    with bad_input_fails_step():
        result = analyze_run(run_dir)  # its metrics.jsonl; the text log (output.log_file) for older runs
    write_text_atomic(run_dir / "analysis.json", json.dumps(result.to_json(), indent=2) + "\n")
    m = result.trends
    figure = (result.final.loss_curves if result.final else None) or run_dir / "loss_curves.png"
    report = f"{report_markdown(result)}\n{markdown_image(figure, 'loss curves')}"
    return dg.MaterializeResult(metadata={
        "diagnosis": ", ".join(result.diagnosis) or "none",
        "epochs_completed": m.epochs_completed,
        "best_val_loss": rounded(m.best_val),
        "best_val_loss_epoch": m.best_epoch,
        "val_loss_improvement_last_5_epochs_pct": percent(m.window_improvement),
        "generalization_gap_pct": percent(m.generalization_gap),  # (val - train) / train at the last epoch
        "val_mse_pct_of_baseline": percent(m.mse_vs_baseline),
        "report": dg.MetadataValue.md(report),
    })


@dg.asset(deps=[training_log_analysis], group_name="analysis", kinds={"pandas"},
          description="Every run's config and results side by side, which settings helped, and a recommended next "
                      "run config from the best run that passed check_beats_baseline (YAML for the launchpad, also in "
                      "CRRECON_HOME/reports/next_run.yaml).")
def run_comparison(context: dg.AssetExecutionContext, paths: CrreconPaths,
                   model_checks: ModelChecks) -> dg.MaterializeResult:
    result = compare_runs(paths.runs_path(), max_ratio=model_checks.max_mse_ratio)
    if not result.runs:
        raise dg.Failure(description=f"{paths.runs_path()}: no finished runs to compare")
    write_text_atomic(paths.reports_path() / "next_run.yaml", result.next_config_yaml)
    return dg.MaterializeResult(metadata={
        "runs": result.runs,
        "best_run": result.best_run,
        "best_pct_of_baseline": percent(result.best_mse_vs_baseline),
        "leaderboard": dg.MetadataValue.md(result.markdown),  # the key columns; every column one click away:
        "leaderboard_full": dg.MetadataValue.md(result.markdown_full),
        "setting_effects": dg.MetadataValue.md(setting_effects(result.effects)),
        "next_run_config": dg.MetadataValue.md(launchpad_yaml("trained_model", result.next_config_yaml)),
    })


@dg.asset(deps=["rotated_bayer"], group_name="analysis", kinds={"numpy"},
          description="The data training sees (the lineage's shard versions), all shards together: rows kept and "
                      "dropped by reason per shard and in total, value ranges, per-pixel spectra, fill fractions, "
                      "pictures.")
def dataset_profile(context: dg.AssetExecutionContext, paths: CrreconPaths) -> dg.MaterializeResult:
    chosen, excluded = training_versions(context.instance, augment_180=True)
    if not chosen:
        raise dg.Failure(description=f"no prepared shard passed its checks ({len(excluded)} left out)")
    with bad_input_fails_step():
        prepared = load_prepared(paths.prepared_path(), chosen)
    picture = paths.reports_path() / "dataset_profile.png"
    prof = profile_dataset(prepared, picture)
    write_text_atomic(paths.reports_path() / "dataset_profile.json", json.dumps(prof.to_json(), indent=2) + "\n")
    return dg.MaterializeResult(metadata={
        "shards": prof.shards, "raw_rows": prof.raw_rows, "kept_rows": prof.kept_rows,
        "dropped_unfinished": prof.dropped_unfinished, "dropped_nonfinite": prof.dropped_nonfinite,
        "kept_fraction_pct": percent(prof.kept_rows / max(prof.raw_rows, 1)),
        "rotated_rows": prof.rotated_rows, "fill_mean": rounded(prof.fill_mean),
        "fill_std": rounded(prof.fill_std),
        "diagonal_symmetric_pct": percent(prof.diagonal_symmetric_fraction),
        "rows_by_shard": dg.MetadataValue.md(shard_rows_table(prof, excluded)),
        "excluded_shards": dg.MetadataValue.json(excluded),
        "per_pixel": dg.MetadataValue.md(pixel_table(prof.per_pixel)),
        "profile": dg.MetadataValue.md(markdown_image(picture, "dataset profile")),
    })
