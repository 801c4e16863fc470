"""What the research group's losses share: their input handling (float32, values clamped to ±1e3), the B-pixel
weight, SmoothL1, the Pearson term with its validity mask, and the clamp of the total to [0, 100] kept as a term of
its own so that the named terms still sum to the optimized value."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crrecon_pipeline.losses.terms import TermLoss

VALUE_LIMIT = 1e3  # pred and target are clamped to [-1e3, 1e3] first
TOTAL_MAX = 100.0  # the total is clamped to [0, 100] last


def prepared(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return pred.float().clamp(-VALUE_LIMIT, VALUE_LIMIT), target.float().clamp(-VALUE_LIMIT, VALUE_LIMIT)


def blue_weighted_mean(values: torch.Tensor, blue_weight: float) -> torch.Tensor:
    """Mean over (B, 2, 2, L') of values with the B pixel [1, 1] weighted by blue_weight (the others by 1; the mean
    is NOT renormalized by the weights)."""
    if blue_weight == 1.0:
        return values.mean()
    weight = torch.ones(2, 2, 1, device=values.device, dtype=values.dtype)
    weight[1, 1] = blue_weight
    return (values * weight).mean()


def smooth_l1(diff: torch.Tensor, beta: float) -> torch.Tensor:
    """Elementwise Huber-type SmoothL1: ½·d²/β where |d| < β, else |d| − ½·β (plain |d| when β = 0)."""
    return F.smooth_l1_loss(diff, torch.zeros_like(diff), beta=beta, reduction="none")


def pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float, norm_floor: float | None,
                 denom_floor: float = 0.0, clamp_r: bool = True) -> torch.Tensor:
    """mean(1 − r) along the last axis over the spectra whose centred norms (prediction and target) both exceed
    norm_floor (None: every spectrum); r = Σ p̃t̃ / (max(|p̃|·|t̃|, denom_floor) + eps), clamped to [−1, 1] with
    clamp_r; 0 when none is valid. The mask is a weight (no host sync)."""
    p = pred - pred.mean(-1, keepdim=True)
    t = target - target.mean(-1, keepdim=True)
    p_norm, t_norm = p.norm(dim=-1), t.norm(dim=-1)
    r = (p * t).sum(-1) / ((p_norm * t_norm).clamp(min=denom_floor) + eps)  # (..,) one per spectrum
    if clamp_r:
        r = r.clamp(-1.0, 1.0)
    if norm_floor is None:
        return (1.0 - r).mean()
    valid = ((p_norm > norm_floor) & (t_norm > norm_floor)).to(r.dtype)
    return ((1.0 - r) * valid).sum() / valid.sum().clamp(min=1.0)


class ClampedTermLoss(TermLoss):
    """A research loss: weighted_terms() gives the weighted terms; terms() adds `clamp` = clamp(total, 0, 100) −
    total (0 unless the total left [0, 100]), so the sum is the research code's clamped total, with its gradient
    (none where it was clamped)."""

    def weighted_terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.weighted_terms(*prepared(pred, target))
        total = torch.stack(list(out.values())).sum() if out else pred.new_zeros((), dtype=torch.float32)
        out["clamp"] = total.clamp(0.0, TOTAL_MAX) - total
        return out
