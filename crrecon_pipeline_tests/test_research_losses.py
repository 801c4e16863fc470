"""The research group's six losses (losses.research) against values computed by hand: plain Python loops over the
pixel spectra of small tensors, written from the formulas (not from the implementation)."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from crrecon_pipeline.losses.research import RESEARCH_LOSSES

torch.manual_seed(3)
PRED = torch.rand(2, 2, 2, 6, dtype=torch.float64).float()
TARGET = torch.rand(2, 2, 2, 6, dtype=torch.float64).float()
TARGET[1, 0, 1] = 0.25  # one flat target spectrum: no defined correlation


def spectra(x):
    """[(b, i, j, [values])] of a (B, 2, 2, L) tensor."""
    return [(b, i, j, x[b, i, j].tolist()) for b in range(x.shape[0]) for i in range(2) for j in range(2)]


def wmean(f, pred, target, blue=1.0, diff=0):
    """mean over every element of w_pixel · f(p, t), on the diff-th differences along wavelength."""
    total, count = 0.0, 0
    for (_, i, j, p), (_, _, _, t) in zip(spectra(pred), spectra(target)):
        for _ in range(diff):
            p, t = [b - a for a, b in zip(p, p[1:])], [b - a for a, b in zip(t, t[1:])]
        for a, b in zip(p, t):
            total += (blue if (i, j) == (1, 1) else 1.0) * f(a, b)
            count += 1
    return total / count


def corr_one(p, t, eps=1e-8, floor=None, denom_floor=0.0, clamp=True):
    mp, mt = sum(p) / len(p), sum(t) / len(t)
    pc, tc = [a - mp for a in p], [b - mt for b in t]
    npn, ntn = math.sqrt(sum(a * a for a in pc)), math.sqrt(sum(b * b for b in tc))
    r = sum(a * b for a, b in zip(pc, tc)) / (max(npn * ntn, denom_floor) + eps)
    r = max(-1.0, min(1.0, r)) if clamp else r
    return r, floor is None or (npn > floor and ntn > floor)


def corr_loss(pred, target, diff=0, **kw):
    losses = []
    for (_, _, _, p), (_, _, _, t) in zip(spectra(pred), spectra(target)):
        for _ in range(diff):
            p, t = [b - a for a, b in zip(p, p[1:])], [b - a for a, b in zip(t, t[1:])]
        r, valid = corr_one(p, t, **kw)
        if valid:
            losses.append(1 - r)
    return sum(losses) / len(losses) if losses else 0.0


def sl1(beta):
    return lambda a, b: 0.5 * (a - b) ** 2 / beta if abs(a - b) < beta else abs(a - b) - 0.5 * beta


def sq(a, b):
    return (a - b) ** 2


def ab(a, b):
    return abs(a - b)


def check(loss, expected_terms: dict):
    terms = {k: v.item() for k, v in loss.terms(PRED, TARGET).items()}
    assert terms.pop("clamp", 0.0) == 0.0
    assert terms.keys() == expected_terms.keys()
    for k in terms:
        assert terms[k] == pytest.approx(expected_terms[k], rel=2e-5, abs=1e-9), k
    assert loss(PRED, TARGET).item() == pytest.approx(sum(expected_terms.values()), rel=2e-5)


def test_mse_pearson():
    check(RESEARCH_LOSSES["mse_pearson"](), {"mse": wmean(sq, PRED, TARGET),
                                             "corr": 0.2 * corr_loss(PRED, TARGET, clamp=False)})
    check(RESEARCH_LOSSES["mse_pearson"](w_mse=2.0, w_corr=0.5, blue_weight=3.0),
          {"mse": 2.0 * wmean(sq, PRED, TARGET, blue=3.0), "corr": 0.5 * corr_loss(PRED, TARGET, clamp=False)})


def test_mse_corr_l1_leaves_flat_spectra_out_of_the_correlation():
    check(RESEARCH_LOSSES["mse_corr_l1"](), {"mse": wmean(sq, PRED, TARGET), "corr": 0.2 * corr_loss(
        PRED, TARGET, floor=1e-6), "l1": 0.1 * wmean(ab, PRED, TARGET)})
    check(RESEARCH_LOSSES["mse_corr_l1"](w_l1=1.0, blue_weight=2.0, corr_norm_floor=0.3),
          {"mse": wmean(sq, PRED, TARGET, blue=2.0), "corr": 0.2 * corr_loss(PRED, TARGET, floor=0.3),
           "l1": wmean(ab, PRED, TARGET, blue=2.0)})
    assert corr_loss(PRED, TARGET, floor=1e-6) != corr_loss(PRED, TARGET)  # the flat one was left out


def test_weighted_smooth_weights_the_pixels_in_layout_order():
    def value(weights):
        total, count = 0.0, 0
        for (_, i, j, p), (_, _, _, t) in zip(spectra(PRED), spectra(TARGET)):
            total += weights[2 * i + j] * sum((a - b) ** 2 for a, b in zip(p, t))
            count += len(p)
        return total / count

    check(RESEARCH_LOSSES["weighted_smooth"](), {"mse": value([1.0, 0.8, 0.8, 1.2]),
                                                 "d1": 0.1 * wmean(sq, PRED, TARGET, diff=1),
                                                 "d2": 0.05 * wmean(sq, PRED, TARGET, diff=2)})
    check(RESEARCH_LOSSES["weighted_smooth"](lambda1=1.0, lambda2=2.0, channel_weights=[1, 2, 3, 4]),
          {"mse": value([1, 2, 3, 4]), "d1": wmean(sq, PRED, TARGET, diff=1),
           "d2": 2 * wmean(sq, PRED, TARGET, diff=2)})


def fft_high(pred, target, ratio):
    total, count = 0.0, 0
    for (_, _, _, p), (_, _, _, t) in zip(spectra(pred), spectra(target)):
        n = len(p)
        mag = [[abs(sum(x[m] * cmath.exp(-2j * math.pi * k * m / n) for m in range(n))) for k in range(n // 2 + 1)]
               for x in (p, t)]
        start = int((n // 2 + 1) * ratio)
        for k in range(start, n // 2 + 1):
            total += abs(mag[0][k] - mag[1][k])
            count += 1
    return total / count


def test_multiscale_spectral():
    b = 0.02
    check(RESEARCH_LOSSES["multiscale_spectral"](), {
        "abs": wmean(sl1(b), PRED, TARGET, blue=2.0), "corr": 0.3 * corr_loss(PRED, TARGET, floor=1e-6),
        "grad1": 0.5 * wmean(sl1(b), PRED, TARGET, blue=2.0, diff=1),
        "grad2": 0.2 * wmean(sl1(b), PRED, TARGET, blue=2.0, diff=2), "fft": 0.1 * fft_high(PRED, TARGET, 0.5)})
    check(RESEARCH_LOSSES["multiscale_spectral"](w_corr=0.0, blue_weight=1.0, beta=0.5, fft_start_ratio=0.0), {
        "abs": wmean(sl1(0.5), PRED, TARGET), "grad1": 0.5 * wmean(sl1(0.5), PRED, TARGET, diff=1),
        "grad2": 0.2 * wmean(sl1(0.5), PRED, TARGET, diff=2), "fft": 0.1 * fft_high(PRED, TARGET, 0.0)})


def test_abs_dc_shape_in_its_three_shape_kinds():
    def dc(blue):
        total = 0.0
        for (_, i, j, p), (_, _, _, t) in zip(spectra(PRED), spectra(TARGET)):
            total += (blue if (i, j) == (1, 1) else 1.0) * sl1(0.02)(sum(p) / len(p), sum(t) / len(t))
        return total / len(spectra(PRED))

    base = {"abs": wmean(sl1(0.02), PRED, TARGET), "dc": 0.5 * dc(1.0)}
    check(RESEARCH_LOSSES["abs_dc_shape"](), {**base, "shape": 0.2 * wmean(sl1(0.02), PRED, TARGET, diff=1)})
    check(RESEARCH_LOSSES["abs_dc_shape"](shape_kind="mse", blue_weight=2.0),
          {"abs": wmean(sl1(0.02), PRED, TARGET, blue=2.0), "dc": 0.5 * dc(2.0),
           "shape": 0.2 * wmean(sq, PRED, TARGET, blue=2.0, diff=1)})
    check(RESEARCH_LOSSES["abs_dc_shape"](shape_kind="pearson", blue_weight=2.0),
          {"abs": wmean(sl1(0.02), PRED, TARGET, blue=2.0), "dc": 0.5 * dc(2.0),
           "shape": 0.2 * corr_loss(PRED, TARGET, diff=1, floor=1e-3, denom_floor=1e-4)})
    with pytest.raises(ValueError, match="shape_kind"):
        RESEARCH_LOSSES["abs_dc_shape"](shape_kind="l1")


def rel(a, b, eps=1e-4, cap=10.0):
    return max(-cap, min(cap, (a - b) / (abs(b) + eps))) ** 2


def test_adaptive_spectral():
    check(RESEARCH_LOSSES["adaptive_spectral"](), {
        "mse": wmean(sq, PRED, TARGET, blue=2.0), "rel": wmean(rel, PRED, TARGET, blue=2.0),
        "grad": wmean(sq, PRED, TARGET, blue=2.0, diff=1)})
    check(RESEARCH_LOSSES["adaptive_spectral"](w_mse=0.0, w_mae=2.0, w_rel=0.0, w_grad=0.0, w_grad_mae=10.0,
                                                w_curv_mae=5.0, blue_weight=1.0), {
        "mae": 2.0 * wmean(ab, PRED, TARGET), "grad_mae": 10.0 * wmean(ab, PRED, TARGET, diff=1),
        "curv_mae": 5.0 * wmean(ab, PRED, TARGET, diff=2)})
    check(RESEARCH_LOSSES["adaptive_spectral"](w_rel=0.5, rel_eps=0.1, rel_max=0.5, w_grad=-1.0, w_sam=3.0), {
        "mse": wmean(sq, PRED, TARGET, blue=2.0), "rel": 0.5 * wmean(lambda a, b: rel(a, b, 0.1, 0.5), PRED, TARGET,
                                                                       blue=2.0)})  # a negative weight: no term


def test_adaptive_spectral_balance_is_a_state_dict_that_restores():
    loss = RESEARCH_LOSSES["adaptive_spectral"](use_uncertainty=True, ema_momentum=0.9)
    assert set(loss.state_dict()) == {"ema_mse", "ema_rel", "ema_grad"}
    assert RESEARCH_LOSSES["adaptive_spectral"]().state_dict() == {}
    raw = {"mse": wmean(sq, PRED, TARGET, blue=2.0), "rel": wmean(rel, PRED, TARGET, blue=2.0),
           "grad": wmean(sq, PRED, TARGET, blue=2.0, diff=1)}
    first = {k: v.item() for k, v in loss.terms(PRED, TARGET).items()}  # the first value seeds the average: ~1 each
    assert all(first[k] == pytest.approx(raw[k] / (raw[k] + 1e-8), rel=1e-5) for k in raw)
    other = TARGET.flip(-1)
    raw2 = {"mse": wmean(sq, PRED, other, blue=2.0), "rel": wmean(rel, PRED, other, blue=2.0),
            "grad": wmean(sq, PRED, other, blue=2.0, diff=1)}
    second = {k: v.item() for k, v in loss.terms(PRED, other).items()}
    for k in raw:
        ema = 0.9 * raw[k] + 0.1 * raw2[k]
        assert loss.state_dict()[f"ema_{k}"].item() == pytest.approx(ema, rel=1e-5)
        assert second[k] == pytest.approx(raw2[k] / (ema + 1e-8), rel=1e-5)
    restored = RESEARCH_LOSSES["adaptive_spectral"](use_uncertainty=True, ema_momentum=0.9)
    restored.load_state_dict(loss.state_dict(), strict=True)  # e.g. the `loss_fn` entry of their checkpoint
    assert restored(PRED, TARGET).item() == pytest.approx(loss(PRED, TARGET).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["mse_pearson", "mse_corr_l1", "multiscale_spectral", "adaptive_spectral",
                                  "abs_dc_shape"])
def test_the_total_is_clamped_at_100_by_a_term(name):
    pred = (PRED * 400).requires_grad_()
    loss = RESEARCH_LOSSES[name]()
    terms = loss.terms(pred, TARGET)
    assert torch.stack(list(terms.values())).sum().item() == pytest.approx(100.0, rel=1e-6)
    assert terms["clamp"].item() < 0
    (grad,) = torch.autograd.grad(loss(pred, TARGET), pred)
    assert grad.abs().max() == 0  # clamped: no gradient, as torch.clamp gives there


def test_values_beyond_1e3_are_clamped_first():
    pred = PRED.clone()
    pred[0, 0, 0, 0] = 5e3
    loss = RESEARCH_LOSSES["mse_corr_l1"](w_corr=0.0, w_l1=0.0, w_mse=1e-5)
    clipped = pred.clone()
    clipped[0, 0, 0, 0] = 1e3
    assert loss(pred, TARGET).item() == pytest.approx(1e-5 * wmean(sq, clipped, TARGET), rel=1e-5)
