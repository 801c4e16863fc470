"""The loss terms of the batches, summed on the device: the hot loop adds each batch's terms without a host sync
and the host reads them once per progress record (`window`) and once per epoch (`epoch_means`). Imports torch."""

from __future__ import annotations

import time
from typing import Callable

import torch


class TermAccumulator:
    """Per-batch loss terms summed ON THE DEVICE (no host sync per batch); `window()` reads them, with the
    samples/s, once per progress record, `epoch_means()` once per epoch."""

    def __init__(self):
        self.names: list[str] = []
        self.window_sum = self.epoch_sum = None
        self.window_n = self.epoch_n = 0
        self.window_t = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """Take one batch's terms (n samples); returns the loss to optimize, their sum."""
        values = torch.stack(list(terms.values()))
        if self.window_sum is None:
            self.names = list(terms)
            self.window_sum = torch.zeros_like(values, dtype=torch.float32)
            self.epoch_sum = torch.zeros_like(values, dtype=torch.float32)
        weighted = values.detach().float() * n
        self.window_sum += weighted
        self.epoch_sum += weighted
        self.window_n += n
        self.epoch_n += n
        return values.sum()

    def window(self) -> dict:
        """{"train_loss", "train_terms", "samples_per_s"} since the previous call (this rank), then reset."""
        if not self.window_n:
            return {}
        means = (self.window_sum / self.window_n).tolist()
        now = time.perf_counter()
        out = {"train_loss": sum(means), "train_terms": dict(zip(self.names, means)),
               "samples_per_s": self.window_n / max(now - self.window_t, 1e-9)}
        self.window_sum.zero_()
        self.window_n, self.window_t = 0, now
        return out

    def state(self) -> dict:
        """The epoch's sums so far, for a checkpoint written mid-epoch (plain containers and a CPU tensor)."""
        sums = self.epoch_sum.detach().cpu() if self.epoch_sum is not None else None
        return {"names": list(self.names), "epoch_sum": sums, "epoch_n": self.epoch_n}

    def restore(self, state: dict, device: torch.device) -> None:
        """Continue an epoch from `state`: the next epoch_means are the uninterrupted epoch's."""
        if state["epoch_sum"] is None:
            return
        self.names, self.epoch_n = list(state["names"]), int(state["epoch_n"])
        self.epoch_sum = state["epoch_sum"].to(device)
        self.window_sum = torch.zeros_like(self.epoch_sum)

    def epoch_means(self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> dict[str, float]:
        """Each term's mean over the epoch; `reduce` sums over torchrun ranks (every rank calls it)."""
        if self.epoch_sum is None:
            return {}
        n = reduce(torch.tensor(float(self.epoch_n), device=self.epoch_sum.device))
        return dict(zip(self.names, (reduce(self.epoch_sum.clone()) / n).tolist()))
