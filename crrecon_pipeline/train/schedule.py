"""The learning-rate schedule: linear warmup, then a half cosine to 0 at the last step; a resumed run with a new
training.epochs continues on the curve a run of the new length has."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Schedule:
    """Learning-rate factor per optimizer step: linear warmup from 1e-3 over `warmup` steps, then a half cosine
    to 0 (or to `floor`, training.min_lr_ratio) at step `total` (and there after it: never climbing back).
    A resume with another training.epochs continues
    on the schedule a run of the new length has (`extended`): same warmup, the cosine stretched (or shrunk) to end
    at the new last step, so the lr reaches 0 there; at the resume step the lr moves to that curve."""

    total: int
    warmup: int
    floor: float = 0.0  # training.min_lr_ratio: the cosine ends at floor * lr instead of 0

    @classmethod
    def fresh(cls, total: int, warmup_ratio: float, floor: float = 0.0) -> "Schedule":
        return cls(total, max(1, int(round(total * warmup_ratio))), floor)

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return 1e-3 + (1 - 1e-3) * step / self.warmup
        span = max(1, self.total - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(step - self.warmup, span) / span))
        return self.floor + (1 - self.floor) * cosine

    def extended(self, total: int) -> "Schedule":
        return Schedule(total, min(self.warmup, total), self.floor)

    def scheduler(self, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)
