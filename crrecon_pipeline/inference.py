"""Predicting Bayer spectra for structures with a trained checkpoint (the `crrecon predict` command)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .npyio import DataError, read_header, save_atomic
from .training import build_model, load_checkpoint, resolve_device, unpack_to_inputs


def load_model(checkpoint: str | Path, device: str = "auto") -> tuple[torch.nn.Module, dict]:
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, dev)
    if "model" not in ckpt or "config" not in ckpt:
        raise DataError(f"{checkpoint}: not a crrecon checkpoint (no model/config)")
    model = build_model(ckpt["config"]).to(dev)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


@torch.no_grad()
def predict(model: torch.nn.Module, config: dict, structures: np.ndarray, batch_size: int = 256) -> np.ndarray:
    dev = next(model.parameters()).device
    pm1 = bool(config["data"].get("map_to_pm1", True))
    out = [model(unpack_to_inputs(structures[i:i + batch_size], dev, pm1)).float().cpu().numpy()
           for i in range(0, len(structures), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 2, 2, 30), np.float32)


def predict_file(checkpoint: str | Path, structures_path: str | Path, out_path: str | Path, device: str = "auto") -> dict:
    header = read_header(structures_path)
    if header.shape[1:] not in ((1, 128, 128), (128, 128)):
        raise DataError(f"{structures_path}: structures must have shape (N, 1, 128, 128), got {header.shape}")
    structures = np.load(structures_path, mmap_mode="r")
    values = np.unique(structures[: min(len(structures), 64)])
    if not set(values.tolist()) <= {0, 1} and not set(values.tolist()) <= {0, 255}:
        raise DataError(f"{structures_path}: non-binary structures (values {values[:5].tolist()})")
    model, ckpt = load_model(checkpoint, device)
    pred = predict(model, ckpt["config"], structures).astype(np.float32)
    save_atomic(out_path, pred)
    return {"rows": len(pred), "out": str(Path(out_path).resolve()), "shape": list(pred.shape)}
