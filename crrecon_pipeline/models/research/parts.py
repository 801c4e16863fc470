"""Pieces the research group's architectures share: their GroupNorm rule, padding, the residual block and the CNN
trunk of cnn_xattn / cnn_gru / cnn_diffraction, the output-sum projection their trainer applies to every output,
and the output scale that lets this project's trainer drive a model that already predicts physical units.

Attribute names are the research code's (they are the checkpoint's tensor names); the code is this project's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crrecon_pipeline.models.backbone import project_bayer_sum

# the research trainer's projection bounds when a config has no `constraints` block (trainer.py reads them with
# these defaults, so the projection is ALWAYS on there)
DEFAULT_SUM_MIN, DEFAULT_SUM_MAX = 0.45, 0.95


def research_norm(channels: int, max_groups: int = 16) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides `channels` (16 for 64 … 256, 32)."""
    groups = min(max_groups, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def pad(x: torch.Tensor, width: int, circular: bool) -> torch.Tensor:
    """Pads H and W by `width` on every side: wrapped around the periodic cell (corners from the opposite corner)
    or with zeros."""
    return F.pad(x, (width,) * 4, mode="circular" if circular else "constant")


class ResBlockGN(nn.Module):
    """3x3 conv (stride s) -> GN -> SiLU -> Dropout2d -> 3x3 conv -> GN -> Dropout2d, plus a 1x1 conv (stride s)
    skip when the shape changes, then SiLU. Padding is done by hand before each conv (no conv padding)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.05, use_circular: bool = True):
        super().__init__()
        self.use_circular = use_circular
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=0, bias=False)
        self.gn1 = research_norm(out_ch)
        self.drop1 = nn.Dropout2d(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=0, bias=False)
        self.gn2 = research_norm(out_ch)
        self.drop2 = nn.Dropout2d(dropout)
        needs_skip = stride != 1 or in_ch != out_ch
        self.skip = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if needs_skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop1(F.silu(self.gn1(self.conv1(pad(x, 1, self.use_circular)))))  # (B, out, H/s, W/s)
        h = self.drop2(self.gn2(self.conv2(pad(h, 1, self.use_circular))))
        return F.silu(h + (x if self.skip is None else self.skip(x)))


TRUNK_STAGES = ((64, 96), (96, 128), (128, 192), (192, 256))  # each stage: a stride-2 block, then a stride-1 block


def add_trunk(model: nn.Module, dropout: float, circular: bool, after_stage2: nn.Module | None = None) -> None:
    """Gives `model` the research CNN trunk as top-level attributes stem_conv, stem_gn, stem_dropout, stage1 …
    stage4 (their checkpoint names), with `after_stage2` (cnn_diffraction's fourier_mix) registered in between."""
    model.stem_conv = nn.Conv2d(1, 64, 5, stride=2, padding=0, bias=False)
    model.stem_gn = research_norm(64)
    model.stem_dropout = nn.Dropout2d(dropout)
    for i, (c_in, c_out) in enumerate(TRUNK_STAGES, start=1):
        setattr(model, f"stage{i}", nn.Sequential(ResBlockGN(c_in, c_out, 2, dropout, circular),
                                                  ResBlockGN(c_out, c_out, 1, dropout, circular)))
        if i == 2 and after_stage2 is not None:
            model.fourier_mix = after_stage2


def run_trunk(model: nn.Module, x: torch.Tensor, circular: bool) -> torch.Tensor:
    """(B, 1, 128, 128) -> (B, 256, 4, 4) through the attributes add_trunk made."""
    f = model.stem_dropout(F.silu(model.stem_gn(model.stem_conv(pad(x, 2, circular)))))  # (B, 64, 64, 64)
    f = model.stage2(model.stage1(f))  # (B, 96, 32, 32) -> (B, 128, 16, 16)
    if hasattr(model, "fourier_mix"):
        f = model.fourier_mix(f)  # (B, 128, 16, 16)
    return model.stage4(model.stage3(f))  # (B, 192, 8, 8) -> (B, 256, 4, 4)


TRUNK_PREFIXES = ("stem_conv", "stem_gn", "stage1", "stage2", "stage3", "stage4")


def research_projection(pred: torch.Tensor, sum_min: float = DEFAULT_SUM_MIN, sum_max: float = DEFAULT_SUM_MAX,
                        physical_is_negative: bool = False) -> torch.Tensor:
    """The research trainer's hard constraint, applied to every output before the loss (training and validation):
    per bin s = R + (G1 + G2)/2 + B over the (B, 2, 2, L) layout [[R, G1], [G2, B]]; the four pixels get one
    shift c = (clamp(s, sum_min, sum_max) − s)/3 (the weights 1, ½, ½, 1 sum to 3). Computed in float32 and cast
    back; with physical_is_negative the physical intensities are −pred (the same as bounds [−sum_max, −sum_min]).
    A tensor of another shape passes unchanged, as there."""
    if pred.ndim != 4 or pred.shape[1:3] != (2, 2):
        return pred
    if physical_is_negative:  # negation is exact: the same as bounds [-sum_max, -sum_min] on pred, bit for bit
        return -project_bayer_sum(-pred, sum_min, sum_max)
    return project_bayer_sum(pred, sum_min, sum_max)


def trainer_constraint(config: dict) -> tuple[float, float, bool]:
    """(sum_min, sum_max, physical_is_negative) exactly as the research trainer reads them from a config dict:
    the defaults 0.45, 0.95, False when the `constraints` block or a key is missing."""
    block = config.get("constraints") or {}
    return (float(block.get("sum_min", DEFAULT_SUM_MIN)), float(block.get("sum_max", DEFAULT_SUM_MAX)),
            bool(block.get("physical_is_negative", False)))


class FixedScale(nn.Module):
    """The output stage of a research model in this project: the identity (their sigmoid already gives physical
    units, so there are no data statistics to apply and set_stats does nothing) followed by the research
    projection when a constraint is set. It holds no tensors, so the model's state dict is exactly theirs."""

    def __init__(self, out_len: int):
        super().__init__()
        self.out_len = out_len
        self.bounds: tuple[float, float] | None = None
        self.physical_is_negative = False

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Ignored: the research models predict in the data's units (the trainer calls this for every model)."""

    def set_constraint(self, sum_min: float, sum_max: float, physical_is_negative: bool = False) -> None:
        self.bounds = (float(sum_min), float(sum_max))
        self.physical_is_negative = bool(physical_is_negative)

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        if self.bounds is None:
            return out
        return research_projection(out, *self.bounds, physical_is_negative=self.physical_is_negative)
