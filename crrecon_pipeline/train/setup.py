"""What the trainer and inference both need before the first batch: the device (auto / cpu / cuda[:i], refused
in one line when the machine lacks it) and the registered model built from a run config
(model.constraint applied in its forward pass)."""

from __future__ import annotations

import inspect

import torch

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.models import MODELS, get_model
from crrecon_pipeline.train.config import RunConfig


def resolve_device(device: str = "auto") -> torch.device:
    """auto | cpu | cuda[:i]; a device this machine does not have is a one-line ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device}: not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise ConfigError(f"--device {device}: no such CUDA GPU on this machine ({count} visible)")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device}: only auto, cpu and cuda[:N] are supported")
    return dev


def build_model(config: RunConfig) -> torch.nn.Module:
    """The registered model with its params; its out_len is data.out_len unless the params name it (validation
    made them agree). model.constraint goes to the model's output stage, `scale.set_constraint(lo, hi)`: this
    project's OutputScale and the research models' FixedScale apply the same projection (models/backbone.py)."""
    name, params = config.model.name, dict(config.model.params)
    if "out_len" in inspect.signature(MODELS[name]).parameters:
        params.setdefault("out_len", config.data.out_len)
    model = get_model(name, **params)
    if config.model.constraint is not None:
        set_constraint = getattr(getattr(model, "scale", None), "set_constraint", None)
        if set_constraint is None:
            raise ConfigError(f"model.constraint: model {name} has no output stage that takes it "
                              "(scale.set_constraint(sum_min, sum_max), docs/extending.md)")
        set_constraint(*config.model.constraint.output_bounds)
    return model
