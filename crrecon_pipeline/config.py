"""Run configs: the seed's YAML structure (data / model / loss / training / output, plus seed), dotted overrides."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

DEFAULTS: dict = {
    "seed": 0,
    "data": {"batch_size": 400, "augment_180": True, "train_ratio": 0.95, "map_to_pm1": True, "out_len": 30},
    "model": {"name": "cnn_xattn", "params": {}},
    "loss": {"name": "mse_pearson", "params": {}},
    "training": {"epochs": 300, "lr": 1e-3, "weight_decay": 0.005, "grad_clip": 1.0, "use_amp": True,
                 "warmup_ratio": 0.05, "save_every": 10},
    "output": {"dir": "outputs", "log_file": "train_log.txt"},
}
SECTIONS = set(DEFAULTS)


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(config: dict, assignment: str) -> dict:
    """Apply `training.epochs=4` (the value is parsed as YAML: numbers, booleans, lists)."""
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if parts[0] not in SECTIONS:
        raise ValueError(f"--set {key}: unknown section {parts[0]!r} (one of {sorted(SECTIONS)})")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)
    return config


def validate(config: dict, source: str = "config") -> dict:
    unknown = set(config) - SECTIONS
    if unknown:
        raise ValueError(f"{source}: unknown top-level keys {sorted(unknown)}")
    from .losses import LOSSES
    from .models import MODELS

    if config["model"]["name"] not in MODELS:
        raise ValueError(f"{source}: unknown model {config['model']['name']!r} (one of {sorted(MODELS)})")
    if config["loss"]["name"] not in LOSSES:
        raise ValueError(f"{source}: unknown loss {config['loss']['name']!r} (one of {sorted(LOSSES)})")
    t, d = config["training"], config["data"]
    if int(t["epochs"]) < 1 or float(t["lr"]) <= 0 or int(d["batch_size"]) < 1:
        raise ValueError(f"{source}: epochs, lr and batch_size must be positive")
    if not 0 < float(d["train_ratio"]) < 1:
        raise ValueError(f"{source}: data.train_ratio must be in (0, 1), got {d['train_ratio']}")
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """A preset (path, or a name from configs/) merged over the defaults, then the --set overrides."""
    config = copy.deepcopy(DEFAULTS)
    source = "config"
    if path is not None:
        p = Path(path)
        if not p.exists() and (CONFIG_DIR / f"{path}.yaml").exists():
            p = CONFIG_DIR / f"{path}.yaml"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: a config must be a mapping of sections")
        config = merge(config, loaded)
        source = str(p)
    for item in overrides:
        set_dotted(config, item)
    return validate(config, source)
