"""The multiscale loss, term by term on small hand-made spectra."""

import inspect

import numpy as np
import pytest
import torch

from crrecon_pipeline.losses import LOSSES, get_loss

L = 30
K = torch.arange(L, dtype=torch.float64)
TARGET = torch.sin(K / 4).expand(2, 2, 2, L).clone()  # (B, 2, 2, L) like the Bayer targets


def only(**weights):
    zero = {"w_value": 0.0, "w_corr": 0.0, "w_d1": 0.0, "w_d2": 0.0}
    return get_loss("multiscale", **(zero | weights))


def test_perfect_prediction_costs_nothing():
    assert get_loss("multiscale")(TARGET, TARGET).item() == pytest.approx(0.0, abs=1e-8)  # Pearson has an eps


def test_offset_is_seen_only_by_the_value_term():
    pred = TARGET + 0.3
    assert only(w_value=1)(pred, TARGET).item() == pytest.approx(0.09)
    for term in ("w_corr", "w_d1", "w_d2"):
        assert only(**{term: 1})(pred, TARGET).item() == pytest.approx(0.0, abs=1e-8), term


def test_tilt_is_a_first_difference_not_a_second():
    pred = TARGET + 0.05 * K  # slope error 0.05 per sample
    assert only(w_d1=1)(pred, TARGET).item() == pytest.approx(0.05**2)
    assert only(w_d2=1)(pred, TARGET).item() == pytest.approx(0.0, abs=1e-12)
    assert only(w_value=1)(pred, TARGET).item() == pytest.approx(torch.mean((0.05 * K) ** 2).item())


def test_ripple_weighs_on_the_second_difference():
    e = 0.01
    pred = TARGET + e * (-1) ** K  # zigzag: first differences off by 2e, second by 4e
    assert only(w_d1=1)(pred, TARGET).item() == pytest.approx((2 * e) ** 2)
    assert only(w_d2=1)(pred, TARGET).item() == pytest.approx((4 * e) ** 2)


def test_correlation_term_and_weights_add_up():
    assert only(w_corr=1)(-TARGET, TARGET).item() == pytest.approx(2.0, abs=1e-6)  # anti-correlated
    pred = TARGET + 0.05 * K + 0.01 * (-1) ** K
    parts = [only(**{w: 1})(pred, TARGET).item() for w in ("w_value", "w_corr", "w_d1", "w_d2")]
    total = get_loss("multiscale", w_value=2, w_corr=3, w_d1=5, w_d2=7)(pred, TARGET).item()
    assert total == pytest.approx(2 * parts[0] + 3 * parts[1] + 5 * parts[2] + 7 * parts[3])


def test_gradient_flows_and_bad_parameters_are_one_line():
    pred = TARGET.clone().requires_grad_(True)
    get_loss("multiscale")(pred + 0.1 * torch.cos(K), TARGET).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiscale"):
        get_loss("multiscale", w_d3=1.0)


def test_a_run_config_can_train_with_it(prepared_dir, tmp_path):
    """Registered by name: `loss: {name: multiscale}` in a run config trains (tiny model, two epochs)."""
    from crrecon_pipeline.train.entry import train_from_config

    from .test_training import tiny_config

    config = tiny_config("training.epochs=2", "loss.name=multiscale", "loss.params={w_d2: 0.5}")
    metrics = train_from_config(config, out_dir=tmp_path / "run", prepared_dir=prepared_dir, device="cpu")
    assert metrics.epochs_completed == 2 and np.isfinite(metrics.val_mse)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_reports_named_terms_that_sum_to_its_value(name):
    """The loss contract (losses/terms.py): weighted terms by name, their sum the optimized value, gradients too."""
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(6, 2, 2, 30, generator=g, requires_grad=True)
    target = torch.rand(6, 2, 2, 30, generator=g)
    ignored = getattr(LOSSES[name], "IGNORED_PARAMS", ())  # accepted for old configs, no term of their own
    weights = {k: 0.5 for k in inspect.signature(LOSSES[name]).parameters
               if k.startswith(("w_", "lambda")) and k not in ignored}
    loss = get_loss(name, **weights)  # every term switched on, so the sum is over several
    terms = loss.terms(pred, target)
    assert terms and all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
    total = loss(pred, target)
    assert torch.allclose(sum(terms.values()), total, rtol=1e-6, atol=0)
    # a term per weight (the research weighted_smooth's MSE has none); the research losses add `clamp` (their total
    # clamped to [0, 100]: 0 here)
    assert len(terms) - ("clamp" in terms) >= max(len(weights), 2)
    assert "clamp" not in terms or float(terms["clamp"]) == 0.0
    total.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
