"""The multi-slice fidelity: analytic limits, symmetries, convergence, energy, and agreement with thin."""

import numpy as np
import pytest
import torch

from crrecon_pipeline.physics.fourier import binary_batch
from crrecon_pipeline.physics.multislice import make_multislice_plan, multislice_quadrants
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.simulate import make_plan, simulate_spectra
from crrecon_pipeline.physics.structures import StructureGenerator
from crrecon_pipeline.physics.wavelengths import spline_matrix

from .helpers import assert_turn_swaps_red_and_blue

HIDDEN = dict(period_um=1.6, depth_um=1.2, n_substrate=1.46)  # the rigorous set: SiN on SiO2
FEW = dict(fidelity="multislice", wavelength_min_nm=430, wavelength_max_nm=670, n_wavelengths=4, multislice_step_nm=1)


@pytest.fixture(scope="module")
def structures():
    s, _ = StructureGenerator(seed=3).rows(0, 3)
    return s


def few(**kw):
    return PhysicsParams(**(FEW | kw))


def test_public_entry_gives_the_raw_format(structures):
    out = simulate_spectra(structures[:2], PhysicsParams(fidelity="multislice", **HIDDEN))
    assert out.shape == (2, 3, 301) and out.dtype == np.float32
    assert (out < 0).all() and out.min() > -1
    plan = make_plan(PhysicsParams(fidelity="multislice", **HIDDEN))
    assert np.array_equal(simulate_spectra(structures[:2], plan=plan), out), "a plan knows its fidelity"
    thin = simulate_spectra(structures[:2], PhysicsParams(**HIDDEN))
    assert np.abs(thin - out).max() > 0.02, "a different model, not the thin one under another name"


@pytest.mark.parametrize("geometry", [HIDDEN, {}])
@pytest.mark.parametrize("value", [0, 1])
def test_uniform_layer_is_the_interface_transmission(value, geometry):
    """All pillar or all air: each quadrant gets T/4, T = T_top T_bot (normal-incidence Fresnel), at every sample."""
    p = PhysicsParams(fidelity="multislice", **geometry)
    lam = p.wavelengths_um()
    n = p.n_high(lam) if value else np.full_like(lam, p.n_low)
    t_top, t_bot = 4 * n / (1 + n) ** 2, 4 * n * p.n_substrate / (n + p.n_substrate) ** 2
    power = -simulate_spectra(np.full((1, 128, 128), value, np.uint8), p)[0]
    np.testing.assert_allclose(power, np.broadcast_to(t_top * t_bot / 4, power.shape), atol=2e-6)
    if value or p.n_substrate != 1:
        assert (t_top * t_bot).max() < 0.99, "the interfaces really cost power here"


def test_rotation_by_180_swaps_red_and_blue(structures):
    s = np.roll(structures[:2], 37, axis=1)  # not diagonal-symmetric
    assert_turn_swaps_red_and_blue(s, few(**HIDDEN), atol=3e-6)


def test_diagonal_symmetry_gives_equal_greens(structures):
    plan = make_multislice_plan(few(**HIDDEN))
    e = multislice_quadrants(binary_batch(structures[:1], plan.device), plan)
    np.testing.assert_allclose(e[..., 0, 1], e[..., 1, 0], atol=3e-6)
    skew = multislice_quadrants(binary_batch(np.roll(structures[:1], 29, axis=1), plan.device), plan)
    assert (skew[..., 0, 1] - skew[..., 1, 0]).abs().max() > 1e-3


def test_converges_in_the_number_of_slices(structures):
    s = structures[:2]
    ref = -simulate_spectra(s, few(multislice_slices=128, **HIDDEN))
    errors = [np.abs(-simulate_spectra(s, few(multislice_slices=n, **HIDDEN)) - ref).max() for n in (8, 16, 32)]
    assert errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2, errors
    assert errors[2] < 0.04, errors


def test_converges_in_the_lateral_grid(structures):
    s = structures[:2]
    ref = -simulate_spectra(s, few(multislice_grid=256, **HIDDEN))  # every pixel sampled 2 x 2
    errors = [np.abs(-simulate_spectra(s, few(multislice_grid=g, **HIDDEN)) - ref).max() for g in (32, 64, 128)]
    assert errors[1] < errors[0] / 2 and errors[2] < errors[1] / 2, errors
    assert errors[2] < 5e-3, errors


@pytest.mark.parametrize("geometry", [HIDDEN, {}])
def test_power_never_exceeds_the_incident_power(geometry):
    s, _ = StructureGenerator(seed=8).rows(0, 8)
    p = PhysicsParams(fidelity="multislice", n_wavelengths=31, multislice_step_nm=10, multislice_slices=40, **geometry)
    power = -simulate_spectra(s, p).astype(np.float64)
    total = power[:, 0] + 2 * power[:, 1] + power[:, 2]
    assert total.max() <= 1 + 1e-5
    assert total.mean() > 0.4, "most light still gets through"


def test_agrees_with_thin_element_for_a_thin_weak_layer(structures):
    """h = 0.1 um, n = 1.1 in air: interfaces nearly lossless, little diffraction inside the layer. The thin
    element's screen is compared at the layer's middle (detector h/2 further away)."""
    weak = dict(cauchy_a=1.1, cauchy_b=0.0, height_um=0.1, n_substrate=1.0)
    ms = -simulate_spectra(structures[:2], few(**weak))
    thin_only = {k: v for k, v in FEW.items() if k != "fidelity" and "multislice" not in k}
    thin = -simulate_spectra(structures[:2], PhysicsParams(**(thin_only | weak | {"depth_um": 2.55})))
    routing = np.abs(thin[:, 0] - thin[:, 2]).max()
    assert routing > 5e-3, "the weak layer still routes"
    assert np.abs(ms - thin).max() < 0.1 * routing
    assert np.corrcoef((ms[:, 0] - ms[:, 2]).ravel(), (thin[:, 0] - thin[:, 2]).ravel())[0, 1] > 0.99


def test_wavelength_subgrid_interpolation_error_is_small(structures):
    """The layer solved every 10 nm and interpolated vs solved at every 1 nm sample (540-600 nm)."""
    band = dict(fidelity="multislice", wavelength_min_nm=540, wavelength_max_nm=600, n_wavelengths=61, **HIDDEN)
    full = -simulate_spectra(structures[:1], PhysicsParams(multislice_step_nm=1, **band))
    sub = -simulate_spectra(structures[:1], PhysicsParams(multislice_step_nm=10, **band))
    assert 0 < np.abs(sub - full).max() < 3e-3


def test_spline_matrix_reproduces_cubics():
    x = np.linspace(0.4, 0.7, 7)
    xo = np.linspace(0.4, 0.7, 61)
    poly = lambda v: 2 - 3 * v + 5 * v**2 - 7 * v**3  # noqa: E731
    np.testing.assert_allclose(spline_matrix(x, xo) @ poly(x), poly(xo), atol=1e-10)


def test_bad_settings_are_one_line():
    with pytest.raises(ValueError, match="fidelity"):
        PhysicsParams(fidelity="fdtd")
    with pytest.raises(ValueError, match="multislice_grid"):
        PhysicsParams(multislice_grid=100)
    with pytest.raises(ValueError, match="height_um"):
        PhysicsParams(height_um=0)
    assert torch.is_tensor(make_multislice_plan(few()).p_lo)
