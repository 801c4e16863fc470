"""Log analysis on hand-made logs with a known answer for each diagnosis, a healthy run, and a real short run."""

import dataclasses
import json
import subprocess
import sys

import pytest

from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.models import MODELS
from crrecon_pipeline.report.advice import model_sizes, neighbour_model
from crrecon_pipeline.report.analysis import analyze_log, analyze_run, format_report, report_markdown
from crrecon_pipeline.report.diagnosis import DIAGNOSES
from crrecon_pipeline.report.leaderboard import compare_runs
from crrecon_pipeline.report.next_config import apply_suggestions
from crrecon_pipeline.train import records
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.loop import train
from crrecon_pipeline.train.sinks import JsonlSink
from crrecon_pipeline.train.trainlog import log_line, parse_train_log

from .helpers import tiny_config


def write_log(path, train, val, total=None, lr=1e-3, extra=""):
    total = total or len(train)
    best = float("inf")
    lines = []
    for i, (t, v) in enumerate(zip(train, val), 1):
        best = min(best, v) if v == v else best
        lines.append(log_line(i, total, t, v, best, lr))
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def diagnosis(tmp_path, train, val, **kw):
    return analyze_log(write_log(tmp_path / "train_log.txt", train, val, **kw)).diagnosis


def test_still_improving(tmp_path):
    v = [1.0 * 0.85**i for i in range(12)]
    assert diagnosis(tmp_path, [x * 0.9 for x in v], v) == ["still_improving"]


def test_plateau(tmp_path):
    v = [1.0, 0.5, 0.3, 0.2] + [0.2 * (1 - 0.0005 * i) for i in range(10)]
    assert diagnosis(tmp_path, [x * 0.95 for x in v], v) == ["plateau"]


def test_overfitting(tmp_path):
    train = [1.0 * 0.8**i for i in range(14)]
    val = [1.0, 0.7, 0.5, 0.4, 0.35, 0.34, 0.36, 0.39, 0.42, 0.46, 0.5, 0.55, 0.6, 0.66]
    assert diagnosis(tmp_path, train, val) == ["overfitting"]


def test_divergence_nan(tmp_path):
    train = [1.0, 0.6, 0.5, float("nan"), float("nan")]
    val = [1.0, 0.7, 0.6, float("nan"), float("nan")]
    result = analyze_log(write_log(tmp_path / "train_log.txt", train, val))
    assert result.diagnosis == ["divergence"]
    assert result.trends.best_val == pytest.approx(0.6) and result.trends.best_epoch == 3
    assert any(s.parameter == "training.lr" and s.action.startswith("decrease") for s in result.suggestions)


def test_divergence_blowup(tmp_path):
    assert diagnosis(tmp_path, [1.0, 0.5, 0.4, 3.0, 9.0], [1.0, 0.5, 0.4, 4.0, 12.0]) == ["divergence"]


def test_healthy_converged_run_gets_no_wrong_diagnosis(tmp_path):
    v = [1.0 * 0.7**i for i in range(10)] + [0.7**9 * (1 - 0.02 * i) for i in range(1, 6)]
    d = diagnosis(tmp_path, [x * 0.97 for x in v], v)
    assert "overfitting" not in d and "divergence" not in d and "plateau" not in d


def test_parser_survives_real_logs(tmp_path):
    log = tmp_path / "train_log.txt"
    log.write_text(
        "starting training...\n"
        + log_line(1, 10, 0.9, 1.0, 1.0, 1e-3) + "\n"
        + log_line(2, 10, 0.8, 0.9, 0.9, 1e-3) + "\n"
        + "Traceback (most recent call last): junk\n"
        + log_line(3, 10, 0.7, 0.8, 0.8, 1e-3) + "\n"
        + "resumed from last.pt\n"
        + log_line(3, 10, 0.65, 0.75, 0.75, 1e-3) + "\n"  # a resumed run repeats epoch 3: the later wins
        + "[EPOCH] 4/10 train_loss=nan val_loss=nan best_val=0.75 lr=1e-3\n"
        + "[EPOCH] 5/10 train_loss=0.6 val_lo")  # truncated last line
    records = parse_train_log(log)
    assert [r.epoch for r in records] == [1, 2, 3, 4]
    assert records[2].val_loss == 0.75
    assert records[3].val_loss != records[3].val_loss  # NaN kept as NaN


def test_suggestions_reason_from_config_and_apply(tmp_path):
    cfg = load_config("configs/test_cnn_gru.yaml")
    v = [1.0, 0.5, 0.3, 0.2] + [0.2] * 8
    result = analyze_log(write_log(tmp_path / "train_log.txt", [x * 0.9 for x in v], v), cfg)

    larger = neighbour_model("crrecon_gru", +1)  # by size among the registered models
    params = {s.parameter: s.action for s in result.suggestions}
    assert larger and params["model.name"] == f"switch to {larger}"
    assert params["training.lr"].startswith("decrease to 0.0005")
    values = {s.parameter: s.value for s in result.suggestions}
    assert values["model.name"] == larger and values["training.lr"] == pytest.approx(5e-4)
    # the next config is built from the values: rewording the prose changes nothing
    reworded = [dataclasses.replace(s, action="see the value", reason="?") for s in result.suggestions]
    nxt = apply_suggestions(cfg, reworded)
    assert nxt == apply_suggestions(cfg, result.suggestions)
    assert nxt.model.name == larger and "gru_layers" not in nxt.model.params
    assert nxt.training.lr == pytest.approx(5e-4) and nxt.data.batch_size == 200
    assert load_config_dict_is_valid(nxt)


def load_config_dict_is_valid(config):
    from crrecon_pipeline.train.config import validate

    return validate(config, "next run") == config


@pytest.mark.slow
def test_cli_json_and_text(tmp_path):
    v = [1.0 * 0.85**i for i in range(12)]
    log = write_log(tmp_path / "train_log.txt", v, v)
    res = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "analyze", "--log", str(log), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["epochs_completed"] == 12 and out["best_epoch"] == 12 and out["diagnosis"] == ["still_improving"]
    assert all(set(s) == {"parameter", "action", "value", "reason"} for s in out["suggestions"])
    text = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "analyze", "--log", str(log)],
                          capture_output=True, text=True)
    assert "Diagnosis: still_improving" in text.stdout
    nan_log = write_log(tmp_path / "nan_log.txt", [1.0, float("nan")], [1.0, float("nan")])
    res = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "analyze", "--log", str(nan_log), "--json"],
                         capture_output=True, text=True)
    strict = json.loads(res.stdout.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert strict["diagnosis"] == ["divergence"] and strict["history"][1]["val_loss"] is None
    missing = subprocess.run([sys.executable, "-m", "crrecon_pipeline.cli", "analyze",
                              "--log", str(tmp_path / "nope.txt")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "nope.txt" in missing.stderr


@pytest.mark.slow
def test_real_short_training_and_comparison(prepared_dir, tmp_path):
    p = load_prepared(prepared_dir)
    train(tiny_config("training.epochs=4"), p, tmp_path / "runs" / "a", device="cpu", log=lambda m: None)
    train(tiny_config("training.epochs=2", "training.lr=0.0005"), p, tmp_path / "runs" / "b", device="cpu",
          log=lambda m: None)
    result = analyze_log(tmp_path / "runs" / "a" / "train_log.txt")
    assert result.trends.epochs_completed == 4 and result.trends.best_val > 0
    structured = analyze_run(tmp_path / "runs" / "a")  # from metrics.jsonl: the same epochs, at full precision
    assert [h.epoch for h in structured.history] == [1, 2, 3, 4]
    assert structured.trends.best_epoch == result.trends.best_epoch
    if structured.trends.mse_vs_baseline > 0.9:  # only the structured log knows the ratio to baseline
        assert "not_learning" in structured.diagnosis and "still_improving" not in structured.diagnosis
    else:
        assert structured.diagnosis == result.diagnosis
    assert structured.trends.best_val == pytest.approx(result.trends.best_val, abs=1e-6)
    assert structured.final.val_mse > 0
    assert set(result.diagnosis) <= set(DIAGNOSES) and "too_short" in result.diagnosis  # 4 epochs < 5
    comparison = compare_runs(tmp_path / "runs")
    assert comparison.runs == 2 and "lr" in comparison.effects and "epochs" in comparison.effects
    assert comparison.next_config.model.name in MODELS
    assert "training:" in comparison.next_config_yaml


def test_old_runs_are_read_from_their_configured_text_log(tmp_path):
    """A run folder from before metrics.jsonl: the analysis reads output.log_file, not a hard-coded name."""
    run = tmp_path / "old"
    (run / "logs").mkdir(parents=True)
    cfg = load_config("quick", ["output.log_file=logs/seed.txt"])
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    v = [1.0 * 0.85**i for i in range(12)]
    write_log(run / "logs" / "seed.txt", v, v)
    result = analyze_run(run)
    assert result.log == str(run / "logs" / "seed.txt") and result.trends.epochs_completed == 12
    assert result.final is None


def test_a_short_run_that_barely_moved_is_too_short_and_not_learning(tmp_path):
    """The issue's 3-epoch run (0.0086 -> 0.0083) must not read 'none ... epochs: keep'."""
    result = analyze_log(write_log(tmp_path / "train_log.txt", [0.009, 0.0087, 0.0085], [0.0086, 0.0084, 0.0083]))
    assert result.diagnosis == ["too_short", "not_learning"]
    params = {s.parameter: s for s in result.suggestions}
    assert (params["training.lr"].value == pytest.approx(3e-3)
            and "moved only 3.49 %" in params["training.lr"].reason)
    assert params["training.epochs"].value == 10 and params["training.epochs"].action == "increase to 10"
    fast = analyze_log(write_log(tmp_path / "fast.txt", [1.0, 0.5, 0.3], [1.0, 0.55, 0.35]))
    assert fast.diagnosis == ["still_improving", "too_short"]  # learning fast, but too early to call


def finished_run_metrics(numbers: dict) -> dict:
    """A final record with the given numbers and placeholder bookkeeping (paths, counts) around them."""
    return {"val_mae": 0.1, "epochs_completed": 1, "best_epoch": 1, "best_val": 0.01, "best_checkpoint": "best.pt",
            "n_params": 10, "device": "cpu", "train_samples": 8, "val_samples": 2, "samples_per_s": 1.0,
            "seconds_per_epoch": 1.0, "model": "cnn_field", "loss": "mse", "run_dir": ".", "log": "train_log.txt",
            "metrics_log": "metrics.jsonl", "loss_curves": "a.png", "predictions": "b.png",
            "predictions_train": "c.png"} | numbers


def structured_run(folder, val, baseline_ratio):
    lines = [{"kind": "epoch", "epoch": e, "epochs": len(val), "train_loss": v * 0.9, "val_loss": v,
              "best_val": min(val[:e]), "lr": 1e-3, "samples_per_s": 800.0, "seconds": 1.0}
             for e, v in enumerate(val, 1)]
    final = {"kind": "final", "val_mse": 0.01 * baseline_ratio, "baseline_val_mse": 0.01, "val_pearson": 0.5}
    with JsonlSink(folder / records.FILENAME) as log:
        for record in lines + [finished_run_metrics(final)]:
            log.write(records.parse_record(record))
    return folder / records.FILENAME


def test_not_learning_when_the_model_stays_near_the_baseline(tmp_path):
    val = [1.0 * 0.8**i for i in range(12)]  # the loss falls well, yet the val MSE is 95 % of the mean predictor's
    (tmp_path / "near").mkdir()
    (tmp_path / "good").mkdir()
    near = analyze_log(structured_run(tmp_path / "near", val, 0.95))
    assert near.diagnosis == ["not_learning"] and near.trends.mse_vs_baseline == pytest.approx(0.95)
    assert "95 % of the mean-spectrum baseline" in near.suggestions[0].reason
    assert analyze_log(structured_run(tmp_path / "good", val, 0.3)).diagnosis == ["still_improving"]


def test_reports_keep_their_lines_and_name_the_metric(tmp_path):
    result = analyze_log(write_log(tmp_path / "train_log.txt", [0.009, 0.0087, 0.0085], [0.0086, 0.0084, 0.0083]))
    md = report_markdown(result)
    assert md.startswith("**Diagnosis:** **too_short** (fewer than 5 epochs")
    assert "- Best val loss: 0.0083 at epoch 3\n- Final train / val loss:" in md
    assert "(generalization gap -2.4%: val above train)" in md
    assert "| `training.lr` | increase to 0.003 | 0.003 |" in md
    assert "Diagnosis: too_short, not_learning" in format_report(result)


@pytest.mark.slow
def test_leaderboard_key_columns_first_with_run_links(prepared_dir, tmp_path):
    p = load_prepared(prepared_dir)
    run_id = "0f1e2d3c-aaaa-4bbb-8ccc-123456789abc"  # a Dagster run's folder is named by its run id
    train(tiny_config("training.epochs=2"), p, tmp_path / run_id, device="cpu", log=lambda m: None)
    train(tiny_config("training.epochs=1"), p, tmp_path / "by-hand", device="cpu", log=lambda m: None)
    lines = compare_runs(tmp_path).markdown.splitlines()
    assert lines[0].startswith("| run | val MSE | % of baseline | model | loss | epochs |")
    cells = {line.split(" | ")[0][2:]: line.split(" | ") for line in lines[2:]}
    assert set(cells) == {f"[0f1e2d3c](/runs/{run_id})", "by-hand"}
    row = cells[f"[0f1e2d3c](/runs/{run_id})"]
    assert row[2].endswith(" %") and row[3] == tiny_config().model.name and row[5].removesuffix(" |") == "2"
    assert float(row[1]) > 0 and len(row[1].replace(".", "").lstrip("0")) <= 4, "~4 significant figures"
    assert lines[0].count(" | ") == 5, "the short leaderboard: the six key columns"
    full = compare_runs(tmp_path).markdown_full.splitlines()
    assert full[0].startswith(lines[0][:-2]) and "samples/s" in full[0] and len(full) == len(lines)


def test_suggestions_take_models_from_the_registry_and_defaults_from_the_schema(tmp_path):
    """Model switches go between registered models by size (cnn_field included); a log without a config reasons
    from RunConfig()'s defaults."""
    from crrecon_pipeline.train.config import RunConfig

    assert set(model_sizes()) == set(MODELS)
    by_size = sorted(MODELS, key=model_sizes().__getitem__)
    assert neighbour_model(by_size[0], -1) is None and neighbour_model(by_size[-1], +1) is None
    v = [1.0, 0.5, 0.3, 0.2] + [0.2] * 8  # a plateau
    field = analyze_log(write_log(tmp_path / "train_log.txt", [x * 0.9 for x in v], v), load_config("quick"))
    switch = {s.parameter: s.value for s in field.suggestions}
    assert field.diagnosis == ["plateau"] and switch["model.name"] == neighbour_model("cnn_field", +1)
    assert switch["training.lr"] == pytest.approx(load_config("quick").training.lr * 0.5)
    (tmp_path / "bare").mkdir()  # no config.json beside the log
    defaults = analyze_log(write_log(tmp_path / "bare" / "train_log.txt", [x * 0.9 for x in v], v))
    values = {s.parameter: s.value for s in defaults.suggestions}
    assert values["training.lr"] == pytest.approx(RunConfig().training.lr * 0.5)
    assert values["data.batch_size"] == RunConfig().data.batch_size // 2
    nxt = apply_suggestions(load_config("quick"), field.suggestions)
    assert nxt.model.name == switch["model.name"] and set(nxt.model.params) <= set(load_config("quick").model.params)
