"""The trainer: no Dagster here. A config + a prepared folder -> a run folder with checkpoints, log, metrics, plots.

Run folder:
    train_log.txt        seed line format, flushed and fsynced every epoch
    last.pt best.pt      written atomically every epoch / on improvement; epoch_NNNN.pt every save_every
    metrics.json         final numbers (val_mse, baseline_val_mse, val_pearson, ...)
    loss_curves.png  predictions.png

Everything the hot loop touches lives on the device: bit-packed structures are indexed a whole batch at a time,
unpacked and mapped to [-1, 1] there. A killed run resumes from last.pt exactly (model, optimizer, scheduler,
RNG states and the shuffling generator are all in it).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import distributed
from .data import Prepared, load_prepared, preprocess, rotate_packed
from .losses import get_loss, pearson_per_spectrum
from .models import count_parameters, get_model
from .npyio import DataError, write_text_atomic
from .paths import default_prepared_dir

BIT_SHIFTS = torch.arange(7, -1, -1, dtype=torch.uint8)  # np.packbits is big-endian within a byte
CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------------------------------------------- split

def structure_keys(packed: np.ndarray) -> np.ndarray:
    """A stable 64-bit key per structure, equal for a structure and its 180-degree twin (so the twins share a
    split even when a rotated copy appears as its own row): a vectorised hash of (linear sum of both) + mixing."""
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=packed.shape[1] // 8, dtype=np.uint64) | np.uint64(1)

    def linear(p: np.ndarray) -> np.ndarray:
        return (np.ascontiguousarray(p).view(np.uint64) * weights).sum(axis=1, dtype=np.uint64)  # (M,) wraps mod 2^64

    with np.errstate(over="ignore"):
        x = linear(packed) + linear(rotate_packed(packed))
        for shift, mult in ((31, 0x9E3779B97F4A7C15), (29, 0xBF58476D1CE4E5B9), (32, 0x94D049BB133111EB)):
            x ^= x >> np.uint64(shift)
            x *= np.uint64(mult)
    return x


def split_rows(packed: np.ndarray, train_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) into the original rows, by structure hash: stable across runs and dataset growth."""
    u = (structure_keys(packed) >> np.uint64(11)).astype(np.float64) / float(2**53)
    val = u >= train_ratio
    return np.nonzero(~val)[0], np.nonzero(val)[0]


# ---------------------------------------------------------------------------------------------------- data on device

class DeviceData:
    """Originals and (optionally) rotated twins stacked on the device: rows [0, M) and [M, 2M)."""

    def __init__(self, prepared: Prepared, device: torch.device, with_rotated: bool):
        packed = [prepared.structures.packed]
        targets = [prepared.bayer]
        if with_rotated:
            if prepared.rotated_structures is None:
                raise DataError("prepared data has no rotated set (materialize rotated_bayer / run crrecon preprocess)")
            packed.append(prepared.rotated_structures.packed)
            targets.append(prepared.rotated_bayer)
        self.m = len(prepared)
        self.packed = torch.as_tensor(np.concatenate(packed), device=device)  # (M or 2M, 2048) uint8
        self.targets = torch.as_tensor(np.concatenate(targets), device=device)  # (.., 2, 2, 30) float32
        self.shifts = BIT_SHIFTS.to(device)

    def inputs(self, idx: torch.Tensor, pm1: bool = True) -> torch.Tensor:
        """(B,) row indices -> (B, 1, 128, 128) float in [-1, 1] (or {0, 1})."""
        bits = (self.packed[idx].unsqueeze(-1) >> self.shifts) & 1  # (B, 2048, 8)
        x = bits.view(-1, 1, 128, 128).float()
        return x * 2 - 1 if pm1 else x


def unpack_to_inputs(structures: np.ndarray, device: torch.device, pm1: bool = True) -> torch.Tensor:
    """Raw structures (N, [1,] 128, 128) {0,1} or {0,255} -> model inputs on device."""
    x = torch.as_tensor(np.asarray(structures).reshape(-1, 1, 128, 128) != 0, device=device).float()
    return x * 2 - 1 if pm1 else x


# ---------------------------------------------------------------------------------------------------- helpers

def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_checkpoint_atomic(state: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Checkpoints from elsewhere are untrusted: tensors and plain containers only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is bad input
        raise DataError(f"{path}: not a loadable checkpoint ({str(exc).splitlines()[0][:200]})") from None


def build_model(config: dict) -> torch.nn.Module:
    return get_model(config["model"]["name"], **config["model"].get("params", {}))


def make_scheduler(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(round(total_steps * warmup_ratio)))
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, end_factor=1.0, total_iters=warmup),
         torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup), eta_min=0.0)],
        milestones=[warmup])


def log_line(epoch: int, total: int, train_loss: float, val_loss: float, best_val: float, lr: float) -> str:
    return f"[EPOCH] {epoch}/{total} train_loss={train_loss:.6f} val_loss={val_loss:.6f} best_val={best_val:.6f} lr={lr:.6e}"


# ---------------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def predict_batches(model, data: DeviceData, idx: torch.Tensor, batch_size: int, pm1: bool, autocast) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(idx), batch_size):
        with autocast():
            out.append(model(data.inputs(idx[start:start + batch_size], pm1)).float())
    return torch.cat(out) if out else torch.empty(0, 2, 2, 30, device=data.packed.device)


def regression_metrics(pred: torch.Tensor, target: torch.Tensor, mean_spectrum: torch.Tensor) -> dict:
    return {
        "val_mse": float(torch.mean((pred - target) ** 2)),
        "baseline_val_mse": float(torch.mean((mean_spectrum - target) ** 2)),
        "val_pearson": float(pearson_per_spectrum(pred, target).mean()),
        "val_mae": float(torch.mean(torch.abs(pred - target))),
    }


# ---------------------------------------------------------------------------------------------------- training

@dataclass
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    best_val: float
    lr: float
    samples_per_s: float
    seconds: float


EpochCallback = Callable[[EpochReport], None]
BatchCallback = Callable[[int, int, int], None]  # (epoch, batch, n_batches)


def latest_checkpoint(run_dir: Path) -> Path | None:
    last = run_dir / "last.pt"
    return last if last.is_file() else None


def train(config: dict, prepared: Prepared, run_dir: str | Path, device: str = "auto", resume: str | None = None,
          on_epoch: EpochCallback | None = None, on_batch: BatchCallback | None = None,
          log: Callable[[str], None] = print) -> dict:
    """Train per `config` on `prepared`; returns the final metrics (also in run_dir/metrics.json)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    requested = resolve_device(device)
    ranks = distributed.from_env(requested)  # torchrun: one process per GPU; otherwise a single process
    try:
        return _train(config, prepared, run_dir, ranks.device(requested), ranks, resume, on_epoch, on_batch,
                      log if ranks.is_main else (lambda msg: None))
    finally:
        ranks.close()


def _train(config: dict, prepared: Prepared, run_dir: Path, dev: torch.device, ranks: distributed.DistContext,
           resume: str | None, on_epoch: EpochCallback | None, on_batch: BatchCallback | None,
           log: Callable[[str], None]) -> dict:
    d, t = config["data"], config["training"]
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)

    train_rows, val_rows = split_rows(prepared.structures.packed, float(d["train_ratio"]))
    if len(val_rows) == 0 or len(train_rows) == 0:
        raise DataError(f"dataset of {len(prepared)} rows is too small for train_ratio={d['train_ratio']}")
    augment = bool(d.get("augment_180", True))
    data = DeviceData(prepared, dev, with_rotated=augment)
    train_idx = torch.as_tensor(np.concatenate([train_rows, train_rows + data.m]) if augment else train_rows, device=dev)
    val_idx = torch.as_tensor(val_rows, device=dev)
    pm1 = bool(d.get("map_to_pm1", True))
    batch_size = int(d["batch_size"])

    model = build_model(config).to(dev)
    train_targets = data.targets[train_idx]
    mean_spectrum = train_targets.mean(0)
    model.scale.set_stats(mean_spectrum, train_targets.std())
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    net = model
    if ranks.world > 1:  # gradients averaged across ranks; `model` stays the plain module (checkpoints, evaluation)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    loss_fn = get_loss(config["loss"]["name"], **config["loss"].get("params", {}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]),
                                  **({"fused": True} if dev.type == "cuda" else {}))
    epochs = int(t["epochs"])
    tail = len(train_idx) % batch_size
    if 0 < tail < ranks.world:  # every rank must take part in every step: drop a tail too short to share
        train_idx = train_idx[: len(train_idx) - tail]
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    scheduler = make_scheduler(optimizer, epochs * steps_per_epoch, float(t.get("warmup_ratio", 0.05)))
    use_bf16 = bool(t.get("use_amp", True)) and dev.type == "cuda" and torch.cuda.is_bf16_supported()

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16)

    shuffler = torch.Generator(device="cpu").manual_seed(seed)
    start_epoch, best_val, history = 1, float("inf"), []

    resume_path = latest_checkpoint(run_dir) if resume == "auto" else (Path(resume) if resume else None)
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, dev)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        shuffler.set_state(ckpt["shuffler"].cpu())
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if dev.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu())
        start_epoch, best_val, history = int(ckpt["epoch"]) + 1, float(ckpt["best_val"]), list(ckpt["history"])
        log(f"resumed from {resume_path} at epoch {start_epoch - 1}/{epochs}")

    n_params = count_parameters(model)
    log(f"model {config['model']['name']}: {n_params:,} parameters on {dev}"
        f"{f' x {ranks.world} ranks' if ranks.world > 1 else ''}; "
        f"{len(train_idx)} training samples ({'with' if augment else 'without'} 180-degree twins), {len(val_idx)} validation")

    def checkpoint_state(epoch: int) -> dict:
        state = {"format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch, "best_val": best_val,
                 "history": history, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": None, "shuffler": shuffler.get_state(),
                 "torch_rng": torch.get_rng_state(), "n_params": n_params}
        if dev.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    log_path = run_dir / config.get("output", {}).get("log_file", "train_log.txt")
    with open(log_path, "a") if ranks.is_main else open(os.devnull, "w") as log_file:
        for epoch in range(start_epoch, epochs + 1):
            net.train()
            t0 = time.perf_counter()
            order = train_idx[torch.randperm(len(train_idx), generator=shuffler).to(dev)]
            total, count = torch.zeros((), device=dev), 0
            for b, start in enumerate(range(0, len(order), batch_size)):
                idx = ranks.share(order[start:start + batch_size])
                x, y = data.inputs(idx, pm1), data.targets[idx]
                with autocast():
                    loss = loss_fn(net(x).float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if t.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"]))
                optimizer.step()
                scheduler.step()
                total += loss.detach() * len(idx)
                count += len(idx)
                if on_batch and ranks.is_main:
                    on_batch(epoch, b + 1, steps_per_epoch)
            train_loss = float(ranks.sum(total)) / float(ranks.sum(torch.tensor(float(count), device=dev)))
            val_pred = predict_batches(model, data, val_idx, batch_size, pm1, autocast)
            val_loss = float(loss_fn(val_pred, data.targets[val_idx]))
            seconds = time.perf_counter() - t0
            improved = val_loss < best_val
            best_val = min(best_val, val_loss)
            lr = scheduler.get_last_lr()[0]
            report = EpochReport(epoch, epochs, train_loss, val_loss, best_val, lr, len(order) / seconds, seconds)  # all ranks
            history.append({k: float(v) if isinstance(v, float) else v for k, v in vars(report).items()})
            if ranks.is_main:
                log_file.write(log_line(epoch, epochs, train_loss, val_loss, best_val, lr) + "\n")
                log_file.flush()
                os.fsync(log_file.fileno())
                state = checkpoint_state(epoch)
                if improved:
                    save_checkpoint_atomic(state, run_dir / "best.pt")
                if int(t.get("save_every", 0)) and epoch % int(t["save_every"]) == 0:
                    save_checkpoint_atomic(state, run_dir / f"epoch_{epoch:04d}.pt")
                save_checkpoint_atomic(state, run_dir / "last.pt")  # last: a kill after this line loses nothing
                if on_epoch:
                    on_epoch(report)
            ranks.barrier()

    # final evaluation with the best weights
    best = load_checkpoint(run_dir / "best.pt", dev) if (run_dir / "best.pt").exists() else checkpoint_state(epochs)
    model.load_state_dict(best["model"])
    val_pred = predict_batches(model, data, val_idx, batch_size, pm1, autocast)
    val_true = data.targets[val_idx]
    metrics = regression_metrics(val_pred, val_true, mean_spectrum)
    metrics |= {
        "epochs_completed": len({h["epoch"] for h in history}),
        "best_epoch": int(best.get("epoch", epochs)),
        "best_val": float(best_val),
        "best_checkpoint": str((run_dir / "best.pt").resolve()),
        "n_params": n_params,
        "device": str(dev) + (f" x {ranks.world} ranks" if ranks.world > 1 else ""),
        "train_samples": len(train_idx),
        "val_samples": len(val_idx),
        "samples_per_s": float(np.median([h["samples_per_s"] for h in history])) if history else 0.0,
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])) if history else 0.0,
        "model": config["model"]["name"],
        "loss": config["loss"]["name"],
        "run_dir": str(run_dir.resolve()),
        "log": str(log_path.resolve()),
        "training_set": prepared.training_set(),
    }
    if not ranks.is_main:
        return metrics
    np.save(run_dir / "val_predictions.npy", val_pred[:64].cpu().numpy())
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
    from .plots import plot_loss_curves, plot_predictions

    plot_loss_curves(history, run_dir / "loss_curves.png")
    sample = val_idx[:4]
    plot_predictions(data.inputs(sample, False)[:, 0].cpu().numpy(), data.targets[sample].cpu().numpy(),
                     val_pred[:4].cpu().numpy(), prepared.wavelengths_nm, run_dir / "predictions.png")
    return metrics


def train_from_config(config: dict, out_dir: str | Path, raw_dir: str | Path | None = None,
                      prepared_dir: str | Path | None = None, resume: str | None = None, device: str = "auto",
                      progress: bool = False, log: Callable[[str], None] | None = None,
                      versions: dict | None = None) -> dict:
    """The CLI's entry: prepare the data if given raw shards, then train with a tqdm bar per epoch."""
    import sys

    out_dir = Path(out_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if raw_dir is not None:  # seconds even at full scale, and deterministic: a resumed run gets the same data
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("under torchrun, run `crrecon preprocess` first and pass --prepared (ranks would race)")
        prepared_dir = out_dir / "prepared"
        log(f"preprocessing {raw_dir} -> {prepared_dir}")
        preprocess(raw_dir, prepared_dir)
    if prepared_dir is None:
        prepared_dir = default_prepared_dir()
    prepared = load_prepared(prepared_dir, versions)
    log("training set: " + ", ".join(f"shard {k} {v['version']} ({v['rows']} rows)" for k, v in prepared.training_set().items()))

    bar = None
    on_batch = on_epoch = None
    if progress:
        from tqdm import tqdm

        def on_batch(epoch, b, n):  # noqa: F811
            nonlocal bar
            if bar is None or b == 1:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=n, desc=f"epoch {epoch}/{config['training']['epochs']}", unit="batch",
                           file=sys.stderr, leave=False, disable=None)
            bar.update(1)

        def on_epoch(r: EpochReport):  # noqa: F811
            log(log_line(r.epoch, r.epochs, r.train_loss, r.val_loss, r.best_val, r.lr) + f"  ({r.samples_per_s:.0f} samples/s)")

    try:
        return train(config, prepared, out_dir, device=device, resume=resume, on_epoch=on_epoch, on_batch=on_batch, log=log)
    finally:
        if bar is not None:
            bar.close()
