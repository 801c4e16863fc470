"""Predicting Bayer spectra for structures with a trained checkpoint (the `crrecon predict` command). Imports the
data readers and writers, checkpoints and the model setup; a checkpoint with non-finite weights is refused by
checkpoints.load before anything is predicted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crrecon_pipeline.data.npyio import AtomicNpyWriter, iter_chunks, read_header, remove_stale_temps
from crrecon_pipeline.errors import ConfigError, DataError
from crrecon_pipeline.grid import N_PIX
from crrecon_pipeline.settings import pause_point
from crrecon_pipeline.train import checkpoints
from crrecon_pipeline.train.batches import unpack_to_inputs
from crrecon_pipeline.train.config import RunConfig
from crrecon_pipeline.train.setup import build_model, resolve_device

CHUNK_ROWS = 4096  # rows read, checked and predicted at a time: memory stays bounded for any file size


def load_model(checkpoint: str | Path, device: str = "auto") -> tuple[torch.nn.Module, RunConfig]:
    """(the model in eval mode, the RunConfig it was trained with). The checkpoint stores its config as a plain
    dict; it is validated again here, so a config this version cannot read is one line naming the file."""
    dev = resolve_device(device)
    ckpt = checkpoints.load(checkpoint, dev)
    config = RunConfig.from_dict(ckpt["config"], f"{checkpoint} (its stored config)")
    model = build_model(config).to(dev)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors: the file does not fit its config
        raise DataError(f"{checkpoint}: its weights do not fit its {config.model.name} config "
                        f"({' '.join(str(exc).split())[:160]})") from None
    return model.eval(), config


@torch.no_grad()
def predict(model: torch.nn.Module, config: RunConfig, structures: np.ndarray, batch_size: int = 256) -> np.ndarray:
    dev = next(model.parameters()).device
    pm1 = config.data.map_to_pm1
    out = [model(unpack_to_inputs(structures[i:i + batch_size], dev, pm1)).float().cpu().numpy()
           for i in range(0, len(structures), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 2, 2, config.data.out_len), np.float32)


def _binary_encoding(rows: np.ndarray, first: int, path: Path) -> frozenset:
    values = frozenset(np.unique(rows).tolist())
    if not (values <= {0, 1} or values <= {0, 255}):
        raise DataError(f"{path}: non-binary structures in rows {first}..{first + len(rows) - 1} "
                        f"(values {sorted(values)[:5]})")
    return values


def predict_file(checkpoint: str | Path, structures_path: str | Path, out_path: str | Path,
                 device: str = "auto") -> dict:
    """Every row is checked (binary, one encoding for the file) while streaming; the output appears only whole."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise ConfigError(f"--out {out_path}: is a folder; give a file name such as {out_path / 'pred.npy'}")
    remove_stale_temps(out_path.parent, out_path.name)  # of an earlier predict killed by SIGKILL
    header = read_header(structures_path)
    if header.shape[1:] not in ((1, N_PIX, N_PIX), (N_PIX, N_PIX)):
        raise DataError(f"{structures_path}: structures must have shape (N, 1, 128, 128), got {header.shape}")
    model, config = load_model(checkpoint, device)
    out_len = config.data.out_len
    seen: set = set()
    with AtomicNpyWriter(out_path, (header.shape[0], 2, 2, out_len), np.float32) as writer:
        for first, rows in iter_chunks(header, CHUNK_ROWS):
            seen |= _binary_encoding(rows, first, header.path)
            if not (seen <= {0, 1} or seen <= {0, 255}):
                raise DataError(f"{header.path}: mixes {{0,1}} and {{0,255}} encodings "
                                f"(rows up to {first + len(rows) - 1})")
            writer.write(predict(model, config, rows).astype(np.float32))
            pause_point("predict")
    return {"rows": header.shape[0], "out": str(out_path.resolve()), "shape": [header.shape[0], 2, 2, out_len]}
