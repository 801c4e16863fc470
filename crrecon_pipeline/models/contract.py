"""The model contract: what the trainer, inference and design rely on a registered model to do, as one function
that returns the failures in words, so the test suite asserts it for every registered model and `crrecon import`
reports what an imported architecture breaks as warnings. May import: torch only.

1. forward maps (B, 1, 128, 128) to a finite (B, 2, 2, out_len) tensor;
2. position sensitivity: a block moved from above the R pixel to above the B pixel (a circular shift of half the
   period in x and y) changes the output by more than POSITION_TOLERANCE at the model's initial weights — the
   pixel the light reaches depends on where the features sit, so a model blind to that cannot learn the routing;
3. PARAM_GROUPS, when declared (training.freeze), put every parameter in exactly one group."""

from __future__ import annotations

import torch
from torch import nn

POSITION_TOLERANCE = 1e-4


def probe_pair() -> torch.Tensor:
    """Two structures in {-1, 1}: the same 30 x 30 block above the R pixel, and above the B pixel."""
    x = torch.full((2, 1, 128, 128), -1.0)
    x[0, :, 10:40, 10:40] = 1.0
    x[1, :, 74:104, 74:104] = 1.0
    return x


def _group_failures(model: nn.Module) -> list[str]:
    groups = getattr(type(model), "PARAM_GROUPS", None)
    if groups is None:
        return []
    failures = []
    for name, _ in model.named_parameters():
        owners = [g for g, prefixes in groups.items()
                  if any(name == p or name.startswith(p + ".") for p in prefixes)]
        if len(owners) != 1:
            failures.append(f"parameter {name} is in {len(owners)} of PARAM_GROUPS ({', '.join(owners) or 'none'}), "
                            "not exactly one")
    return failures[:3]


def check_model(model: nn.Module, out_len: int | None = None) -> list[str]:
    """Every broken clause of the contract, one line each ([] when the model keeps it). `out_len`: the expected
    number of bins (default: the model's `out_len` attribute). Runs in eval mode without gradients and restores
    the model's mode; the global RNG is untouched."""
    out_len = out_len if out_len is not None else getattr(model, "out_len", None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            y = model(probe_pair())
    except Exception as exc:  # noqa: BLE001 - a model that cannot run the probe breaks the contract, in words
        return [f"forward on (2, 1, 128, 128) fails ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"]
    finally:
        model.train(was_training)
    want = (2, 2, 2, out_len) if out_len is not None else None
    if not isinstance(y, torch.Tensor) or y.ndim != 4 or tuple(y.shape[:3]) != (2, 2, 2) or (
            want is not None and tuple(y.shape) != want):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        return [f"output shape {shape}, expected {want or '(2, 2, 2, out_len)'}"]
    failures = [] if torch.isfinite(y).all() else ["output has non-finite values at the initial weights"]
    change = float((y[0] - y[1]).abs().max())
    if change <= POSITION_TOLERANCE:
        failures.append(f"position-blind at its initial weights: a block moved from above the R pixel to above the "
                        f"B pixel changes the output by max |Δ| = {change:.3g} (<= {POSITION_TOLERANCE:g})")
    return failures + _group_failures(model)
