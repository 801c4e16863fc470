"""The GPU check: one command for the first minutes a GPU is lent (at most ~5 minutes on one GPU, no network).

    python benchmarks/gpu_check.py [--budget-s 270]        (also: make gpu-check)

On CUDA it checks correctness (CPU and CUDA take the same fp32 steps of the quick and default presets; bf16 autocast
stays finite and near fp32; a checkpoint written on CUDA resumes on CPU and back; the thin, multi-slice and rcwa
simulators agree on both devices; predict and design run on CUDA; the step has no host sync; with >= 2 GPUs a
2-rank NCCL run takes the same steps as one process), then measures training samples/s (default and quick presets,
their batch and the largest that fits, fp32/bf16, with and without torch.compile), peak GPU memory, simulator
(rcwa at its default orders and sub-grid), predict and design throughput. One table on stdout; the same numbers
as JSON in $OUT/gpu_check.json (or --json). Exit 1 when a check fails.

Without CUDA it says so in one line and runs the same code paths once on CPU, tiny, in 10-19 s on a 2-core machine at
load average 2.5-5 (CI mode: the code paths, not the numbers): tiny models and data, one step per measurement, coarse
simulator grids, bf16 left out (autocast is CUDA-only), figures replaced by placeholder PNGs (matplotlib is
host-side, drawn by the training tests).

On a lent GPU machine whose image lacks pydantic and blake3: benchmarks/run_gpu_check.sh (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from crrecon_pipeline.data.prepare import preprocess  # noqa: E402
from crrecon_pipeline.data.prepared import load_prepared  # noqa: E402
from crrecon_pipeline.data.transforms import PrepareSettings  # noqa: E402
from crrecon_pipeline.design.optimize import DesignSettings, optimize  # noqa: E402
from crrecon_pipeline.design.run import run_design  # noqa: E402
from crrecon_pipeline.physics.params import PhysicsParams  # noqa: E402
from crrecon_pipeline.physics.shards import SimulationSettings, write_dataset  # noqa: E402
from crrecon_pipeline.physics.simulate import make_plan, simulate_power  # noqa: E402
from crrecon_pipeline.physics.structures import StructureGenerator  # noqa: E402
from crrecon_pipeline.train import checkpoints, distributed, step  # noqa: E402
from crrecon_pipeline.train.config import load_config  # noqa: E402
from crrecon_pipeline.train.inference import load_model, predict  # noqa: E402
from crrecon_pipeline.train.loop import train  # noqa: E402
from crrecon_pipeline.train.run import setup_run  # noqa: E402

PRESETS = {"default": "crrecon_xattn", "quick": "cnn_field"}
NO_DROPOUT = {"default": ["model.params.cnn_dropout=0.0", "model.params.tr_dropout=0.0",
                          "model.params.head_dropout=0.0"],
              "quick": ["model.params.cnn_dropout=0.0"]}  # dropout masks come from per-device RNGs
TINY = {"default": ["model.params.d_model=32", "model.params.nhead=4", "model.params.dec_layers=1",
                    "model.params.channels=[8, 8, 16, 16, 16]", "data.batch_size=2"],
        "quick": ["model.params.channels=[8, 8, 8]", "model.params.fields=8", "data.batch_size=2"]}
CHECKPOINT_RUN = ["model.params.channels=[8, 8, 8]", "model.params.fields=8", "data.batch_size=32",
                  "data.augment_shifts=false", "training.epochs=1", "training.save_every=0"]


@dataclass(frozen=True)
class Scale:
    """How much each part does: the real sizes on a GPU, a few seconds' worth on CPU."""

    tiny_models: bool
    rows: int  # simulated rows of the prepared set (throughput draws batches from it with replacement)
    check_steps: int
    warmup: int
    steps: int
    max_batch: int
    sim_rows: int
    design_steps: int
    compile_backend: str
    physics: tuple = ()  # PhysicsParams overrides of the simulator checks (the smoke run's coarse grids)
    rcwa_rows: int = 8  # rows of the rcwa throughput (the CPU comparison takes at most 2)
    precisions: tuple = (False, True)  # use_amp values measured (bf16 autocast applies on CUDA only)
    figures: bool = True  # False: matplotlib figures replaced by placeholder PNGs
    compiled: tuple = ("default", "quick")  # presets whose training speed is also measured with torch.compile
    predict_rows: int = 4096
    designs: int = 8  # designs optimized at once in the design measurement
    data_wavelengths: int = 301  # raw samples per spectrum of the simulated data (binned to 30 either way)
    warm_inference: bool = True  # an untimed call before each inference measurement (plans, kernels, caches)
    threads: int = 0  # torch's CPU threads (0: torch's default)


GPU = Scale(tiny_models=False, rows=600, check_steps=3, warmup=3, steps=10, max_batch=4096, sim_rows=128,
            design_steps=50, compile_backend="inductor", rcwa_rows=8)
SMOKE = Scale(tiny_models=True, rows=64, check_steps=1, warmup=0, steps=1, max_batch=2, sim_rows=1,
              design_steps=1, compile_backend="eager",
              physics=(("n_wavelengths", 31), ("multislice_slices", 4), ("multislice_step_nm", 50.0),
                       ("multislice_grid", 32), ("period_um", 1.0), ("rcwa_orders", 2), ("rcwa_step_nm", 100.0)),
              rcwa_rows=1, precisions=(False,), figures=False, compiled=("quick",), predict_rows=4, designs=2,
              data_wavelengths=31, warm_inference=False, threads=1)
LOSSES: dict = {}  # (config, device) -> step losses: on CPU the "other device" is the same one, computed once


class Report:
    """Checks (ok or not, with a detail) and measurements (a value and its unit), printed and saved together."""

    def __init__(self, budget_s: float):
        self.checks, self.measurements, self.t0, self.budget_s = [], [], time.perf_counter(), budget_s

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def check(self, name: str, fn) -> None:
        t = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as exc:  # a check that crashes is a failed check, reported in one line
            ok, detail = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        seconds = round(time.perf_counter() - t, 2)
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail, "seconds": seconds})
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail} ({seconds} s)", file=sys.stderr, flush=True)

    def measure(self, name: str, fn, unit: str, needs_s: float = 0) -> None:
        """Runs fn -> (value, note) unless less than `needs_s` of the time budget is left."""
        if self.left_s() <= needs_s:
            value, note = None, "skipped: time budget spent"
        else:
            try:
                value, note = fn()
            except Exception as exc:
                value, note = None, f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"
        self.measurements.append({"measurement": name, "value": value, "unit": unit, "note": note})
        print(f"  {name}: {fmt(value)} {unit} {note}", file=sys.stderr, flush=True)


def fmt(value) -> str:
    return "-" if value is None else (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def machine() -> dict:
    """nvidia-smi's GPU name and driver, torch / CUDA / cuDNN versions, the host."""
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0, "cpus": os.cpu_count()}
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        info["nvidia_smi"] = out
    return info


def preset(name: str, scale: Scale, *extra: str):
    return load_config(name, (TINY[name] if scale.tiny_models else []) + list(extra))


def make_run(config, prepared, dev: torch.device, folder: Path):
    return setup_run(config, prepared, folder, dev, distributed.from_env(dev))


def fixed_batches(run, steps: int, batch: int, seed: int = 0) -> list[torch.Tensor]:
    """The same sample indices on every device: drawn on the CPU, moved once, before any timing."""
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(run.train_idx), (steps, batch), generator=g)
    return [run.train_idx[p.to(run.dev)] for p in picks]


def step_losses(config, prepared, dev: torch.device, folder: Path, steps: int) -> list[float]:
    """Mean training loss of each of `steps` optimizer steps from the seed's initialization."""
    if dev.type != "cuda":  # bf16 autocast applies on CUDA only
        config = config.model_copy(update={"training": config.training.model_copy(update={"use_amp": False})})
    key = (json.dumps(config.to_dict(), sort_keys=True), str(dev), steps)
    if key not in LOSSES:
        run = make_run(config, prepared, dev, folder)
        LOSSES[key] = [float(step.train_step(run, idx)) / len(idx) for idx in fixed_batches(run, steps, run.batch_size)]
    return LOSSES[key]


def relative_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


def check_devices_agree(name: str, prepared, dev, work: Path, scale: Scale):
    """fp32 (TF32 off) steps on CPU and on `dev` from the same seed: losses within 1e-3 relative (batch 32: the
    CPU side of the full default model must stay seconds)."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        small = [] if scale.tiny_models else ["data.batch_size=32"]
        config = preset(name, scale, "training.use_amp=false", *small, *NO_DROPOUT[name])
        cpu = step_losses(config, prepared, torch.device("cpu"), work / f"{name}-cpu", scale.check_steps)
        gpu = step_losses(config, prepared, dev, work / f"{name}-dev", scale.check_steps)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    gap = relative_gap(gpu, cpu)
    return gap <= 1e-3, f"max relative loss gap {gap:.1e} over {len(cpu)} steps (limit 1e-3)"


def check_bf16(name: str, prepared, dev, work: Path, scale: Scale):
    """bf16 autocast after the same steps: finite and within 5 % of fp32 (bf16 applies on CUDA only)."""
    fp32 = step_losses(preset(name, scale, "training.use_amp=false", *NO_DROPOUT[name]), prepared, dev,
                       work / f"{name}-fp32", scale.check_steps)
    bf16 = step_losses(preset(name, scale, "training.use_amp=true", *NO_DROPOUT[name]), prepared, dev,
                       work / f"{name}-bf16", scale.check_steps)
    gap = abs(bf16[-1] - fp32[-1]) / abs(fp32[-1])
    finite = all(math.isfinite(v) for v in bf16)
    return finite and gap <= 0.05, f"finite={finite}, last loss {bf16[-1]:.4g} vs fp32 {fp32[-1]:.4g} ({gap:.1%})"


def check_no_host_sync(name: str, prepared, dev, work: Path, scale: Scale):
    """One training step under CUDA's sync debug mode set to error: any host synchronisation raises."""
    run = make_run(preset(name, scale), prepared, dev, work / f"{name}-sync")
    first, second = fixed_batches(run, 2, run.batch_size)
    step.train_step(run, first)  # the optimizer state is created on the first step
    sync(dev)
    if dev.type != "cuda":
        step.train_step(run, second)
        return True, "CPU: nothing to synchronise with (test_gpu_step counts host reads instead)"
    torch.cuda.set_sync_debug_mode("error")
    try:
        step.train_step(run, second)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return True, "no synchronising call in the step"


def check_checkpoint_moves(prepared_dir: Path, dev, work: Path, there: str, back: str):
    """Epoch 1 trained on one device, epoch 2 resumed from its last.pt on the other."""
    folder = work / f"ckpt-{there}-{back}-{len(list(work.glob('ckpt-*')))}"
    prepared = load_prepared(prepared_dir)
    quiet = lambda msg: None  # noqa: E731
    train(load_config("quick", CHECKPOINT_RUN), prepared, folder, device=there, log=quiet)
    state = checkpoints.load(folder / "last.pt", "cpu")
    metrics = train(load_config("quick", CHECKPOINT_RUN + ["training.epochs=2"]), prepared, folder, device=back,
                    resume="auto", log=quiet)
    ok = metrics.epochs_completed == 2 and state["epoch"] == 1 and math.isfinite(metrics.val_mse)
    return ok, f"epoch 1 on {there}, epoch 2 on {back}: val_mse {metrics.val_mse:.3g}"


def structures(n: int):
    return StructureGenerator(seed=3).rows(0, n)[0]


def check_simulator(fidelity: str, dev, scale: Scale):
    """The simulator's power fractions on `dev` equal the CPU's (max abs difference <= 1e-4)."""
    params = PhysicsParams(fidelity=fidelity, **dict(scale.physics))
    rows = min(2, scale.rcwa_rows) if fidelity == "rcwa" else scale.sim_rows  # rcwa on CPU: seconds per row
    s = structures(rows)
    with torch.inference_mode():
        cpu = simulate_power(s, make_plan(params, "cpu"))
        gpu = simulate_power(s, make_plan(params, dev)).cpu() if dev.type == "cuda" else cpu
    gap = float((gpu - cpu).abs().max())
    return gap <= 1e-4, f"max |CUDA - CPU| {gap:.1e} over {rows} rows (limit 1e-4)"


def check_predict_and_design(checkpoint: Path, prepared_dir: Path, dev, work: Path, scale: Scale):
    """`predict` and `design` (optimization, then verification by the simulator) on the device."""
    model, config = load_model(checkpoint, str(dev))
    pred = predict(model, config, structures(8))
    settings = DesignSettings(designs=2, steps=scale.design_steps)
    summary = run_design(checkpoint, prepared_dir, work / "designs", settings, device=str(dev))
    ok = pred.shape == (8, 2, 2, config.data.out_len) and bool(torch.isfinite(torch.as_tensor(pred)).all())
    return ok and len(summary.designs) == 2, f"predict {pred.shape}, design {len(summary.designs)} verified"


def check_two_ranks(prepared_dir: Path, work: Path):
    """2 NCCL ranks (torchrun) and one process on CUDA take the same steps: last.pt weights within 1e-3."""
    sets = sum((["--set", s] for s in CHECKPOINT_RUN + ["training.epochs=2", "training.lr=0.0003"]), [])
    args = ["train", "--config", "quick", "--prepared", str(prepared_dir), "--device", "cuda", *sets]
    runs = {"ddp": distributed.torchrun_command(2, "crrecon_pipeline.cli", args + ["--out", str(work / "ddp")]),
            "one": [sys.executable, "-m", "crrecon_pipeline.cli", *args, "--out", str(work / "one")]}
    for name, cmd in runs.items():
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            return False, f"{name}: exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"
    a, b = (checkpoints.load(work / n / "last.pt", "cpu")["model"] for n in runs)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return worst < 1e-3, f"max weight difference 2 ranks vs 1 process {worst:.1e} (limit 1e-3)"


def samples_per_s(run, batch: int, scale: Scale) -> tuple[float, float]:
    """(samples/s over scale.steps steps after scale.warmup, peak device memory GiB)."""
    batches = fixed_batches(run, scale.warmup + scale.steps, batch)
    if run.dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.dev)
    for idx in batches[:scale.warmup]:
        step.train_step(run, idx)
    sync(run.dev)
    t = time.perf_counter()
    total = torch.zeros((), device=run.dev)
    for idx in batches[scale.warmup:]:
        total += step.train_step(run, idx)
    sync(run.dev)
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(run.dev) / 2**30 if run.dev.type == "cuda" else float("nan")
    return scale.steps * batch / seconds, peak


def largest_batch(run, scale: Scale) -> int:
    """Doubling from the preset's batch until a training step runs out of memory (or scale.max_batch)."""
    fits, batch = 0, run.batch_size
    while batch <= scale.max_batch:
        try:
            step.take_step(run, fixed_batches(run, 1, batch)[0])
            sync(run.dev)
            fits, batch = batch, batch * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            run.optimizer.zero_grad(set_to_none=True)
            if run.dev.type == "cuda":
                torch.cuda.empty_cache()
    return fits


def measure_training(report: Report, prepared, dev, work: Path, scale: Scale, compiled: bool,
                     largest: dict) -> None:
    """samples/s for each preset at its batch and at the largest that fits (found by doubling on the first pass,
    kept in `largest`), fp32 and bf16, with `training.compile` off or on (inductor on CUDA)."""
    for name, model in PRESETS.items():
        if compiled and name not in scale.compiled:
            continue
        for amp in scale.precisions:
            precision = "bf16" if amp else "fp32"
            config = preset(name, scale, f"training.use_amp={str(amp).lower()}",
                            f"training.compile={str(compiled).lower()}",
                            f"training.compile_backend={scale.compile_backend}")
            run = make_run(config, prepared, dev, work / f"speed-{name}")
            if (name, amp) not in largest and report.left_s() > 0:
                largest[name, amp] = largest_batch(run, scale)
                report.measurements.append({"measurement": f"largest batch {name} {precision}",
                                            "value": largest[name, amp], "unit": "samples", "note": "by doubling"})
            for batch in dict.fromkeys((run.batch_size, largest.get((name, amp)) or run.batch_size)):
                label = f"train {name} ({model}) batch {batch} {precision}{' compiled' if compiled else ''}"

                def measure(run=run, batch=batch):
                    rate, peak = samples_per_s(run, batch, scale)
                    return rate, f"peak {peak:.2f} GiB" if dev.type == "cuda" else ""
                report.measure(label, measure, "samples/s", needs_s=60 if compiled and dev.type == "cuda" else 0)
            del run
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def rows_per_s(fn, rows: int, dev, warm: bool = True) -> tuple[float, str]:
    if warm:
        fn()  # warm-up (plans, kernels)
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return rows / (time.perf_counter() - t), ""


def measure_inference(report: Report, checkpoint: Path, prepared, dev, scale: Scale) -> None:
    """Simulator rows/s (thin; multi-slice at the default geometry, 40 slices; rcwa at its default orders and
    sub-grid), predict rows/s, design steps/s."""
    warm = scale.warm_inference
    for fidelity, rows in (("thin", scale.sim_rows * 8), ("multislice", scale.sim_rows), ("rcwa", scale.rcwa_rows)):
        s = structures(rows)
        plan = make_plan(PhysicsParams(fidelity=fidelity, **dict(scale.physics)), dev)
        p = plan.params
        name = {"thin": "simulate thin", "multislice": f"simulate multislice ({p.multislice_slices} slices)",
                "rcwa": f"simulate rcwa (N={p.rcwa_orders}, every {p.rcwa_step_nm:g} nm)"}[fidelity]
        with torch.inference_mode():
            report.measure(name, lambda: rows_per_s(lambda: simulate_power(s, plan), rows, dev, warm), "rows/s")
    model, config = load_model(checkpoint, str(dev))
    s = structures(scale.predict_rows)
    report.measure("predict (default preset model)", lambda: rows_per_s(
        lambda: predict(model, config, s, batch_size=512), len(s), dev, warm), "rows/s")
    settings = DesignSettings(designs=scale.designs, steps=scale.design_steps)
    report.measure(f"design ({scale.designs} designs)", lambda: rows_per_s(
        lambda: optimize(model, config, prepared.wavelengths_nm, settings), scale.design_steps, dev, warm), "steps/s")


def placeholder_figures() -> None:
    """The smoke run's figures: a 2 x 2 PNG each instead of matplotlib's layout and rendering (seconds a figure on a
    loaded CPU, and no device code). The files exist, so the TensorBoard sink and the records work as on a GPU."""
    import matplotlib.image

    from crrecon_pipeline import plots

    def blank(path) -> Path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(path, np.zeros((2, 2, 3)))
        return Path(path)

    plots.plot_loss_curves = lambda history, path, *args, **kwargs: blank(path)
    plots.plot_predictions = lambda structures, true, pred, lam, path, *args, **kwargs: blank(path)
    plots.plot_design_progress = lambda history, path, *args, **kwargs: blank(path)


def make_data(work: Path, scale: Scale, dev) -> Path:
    """Simulated raw shards (thin fidelity, on the device) prepared like `crrecon preprocess`."""
    physics = PhysicsParams(n_wavelengths=scale.data_wavelengths)
    write_dataset(work / "raw", rows=scale.rows, shards=1, settings=SimulationSettings(seed=11, physics=physics),
                  device=str(dev))
    preprocess(work / "raw", work / "prepared", PrepareSettings(n_wavelengths=scale.data_wavelengths))
    return work / "prepared"


def run_checks(report: Report, prepared_dir: Path, dev, work: Path, scale: Scale) -> Path:
    """Every correctness check; returns the default preset's checkpoint (for the inference measurements)."""
    prepared = load_prepared(prepared_dir)
    for name in PRESETS:
        report.check(f"fp32 steps CPU = {dev.type} ({name})",
                     lambda: check_devices_agree(name, prepared, dev, work, scale))
    for name in PRESETS:
        report.check(f"bf16 autocast near fp32 ({name})", lambda: check_bf16(name, prepared, dev, work, scale))
    report.check("no host sync in the training step (default)",
                 lambda: check_no_host_sync("default", prepared, dev, work, scale))
    for there, back in ((dev.type, "cpu"), ("cpu", dev.type))[:2 if dev.type == "cuda" else 1]:
        report.check(f"checkpoint written on {there} resumes on {back}",
                     lambda: check_checkpoint_moves(prepared_dir, dev, work, there, back))
    for fidelity in ("thin", "multislice", "rcwa"):
        report.check(f"simulator {fidelity}: {dev.type} = CPU", lambda: check_simulator(fidelity, dev, scale))
    checkpoint = work / "default.pt"
    checkpoints.save_atomic(make_run(preset("default", scale), prepared, dev, work / "default").state(0), checkpoint)
    report.check(f"predict and design on {dev.type}",
                 lambda: check_predict_and_design(checkpoint, prepared_dir, dev, work, scale))
    if dev.type == "cuda" and torch.cuda.device_count() >= 2:
        report.check("2 NCCL ranks = 1 process", lambda: check_two_ranks(prepared_dir, work))
    else:
        report.checks.append({"check": "2 NCCL ranks = 1 process", "ok": None,
                              "detail": f"skipped: {torch.cuda.device_count()} GPU(s) (gloo: test_distributed)"})
    return checkpoint


def print_table(result: dict) -> None:
    print(f"| {'check / measurement':<58} | {'result':>14} | note |\n|{'-' * 60}|{'-' * 16}|------|")
    for c in result["checks"]:
        status = {True: "ok", False: "FAIL", None: "skipped"}[c["ok"]]
        print(f"| {c['check']:<58} | {status:>14} | {c['detail']} |")
    for m in result["measurements"]:
        print(f"| {m['measurement']:<58} | {fmt(m['value']):>14} | {m['unit']} {m['note']} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=270, help="measurements stop starting after this (CUDA)")
    parser.add_argument("--json", default=None, help="where to write the JSON (default $OUT/gpu_check.json)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA device on this machine: a short CPU smoke run of the same code paths (tiny models)", flush=True)
    dev, scale = (torch.device("cuda"), GPU) if cuda else (torch.device("cpu"), SMOKE)
    if not scale.figures:
        placeholder_figures()
    if scale.threads:
        torch.set_num_threads(scale.threads)
    report = Report(args.budget_s if cuda else math.inf)  # the smoke run measures everything once, tiny
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared_dir = make_data(work, scale, dev)
        print(f"  data simulated and prepared ({time.perf_counter() - report.t0:.1f} s)", file=sys.stderr)
        checkpoint = run_checks(report, prepared_dir, dev, work, scale)
        prepared = load_prepared(prepared_dir)
        largest: dict = {}
        measure_training(report, prepared, dev, work, scale, compiled=False, largest=largest)
        measure_inference(report, checkpoint, prepared, dev, scale)
        # last: compiling takes minutes on a GPU, so the time budget cuts these first
        measure_training(report, prepared, dev, work, scale, compiled=True, largest=largest)
    result = {"mode": "cuda" if cuda else "cpu-smoke", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": round(time.perf_counter() - report.t0, 1), "machine": machine(),
              "checks": report.checks, "measurements": report.measurements}
    print_table(result)
    out = args.json or (str(Path(os.environ["OUT"]) / "gpu_check.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", flush=True)
    return 1 if any(c["ok"] is False for c in report.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
