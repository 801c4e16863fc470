"""The rcwa fidelity (vector Fourier modal method): analytic slabs, energy conservation, the exact symmetries,
convergence in orders, the wavelength sub-grid, the thin-weak-layer limit and the CLI. Small on purpose: few
orders (the cells below let only |m| <= 3 propagate), few wavelengths."""

import json

import numpy as np
import pytest
import torch

from crrecon_pipeline.cli import main
from crrecon_pipeline.defs.resources import SimulatorResource
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.rcwa import make_rcwa_plan, order_flux, pattern_matrices, rcwa_quadrants, solve_layer
from crrecon_pipeline.physics.shards import SimulationSettings
from crrecon_pipeline.physics.simulate import simulate_spectra
from crrecon_pipeline.physics.structures import StructureGenerator
from crrecon_pipeline.report.tables import settings_table

from .helpers import assert_turn_swaps_red_and_blue

HIDDEN = dict(period_um=1.6, depth_um=1.2, n_substrate=1.46)  # SiN on SiO2
RED = dict(wavelength_min_nm=610, wavelength_max_nm=700, n_wavelengths=3, rcwa_step_nm=1)  # |m| <= 3 propagate


def rcwa(orders=4, **kw) -> PhysicsParams:
    return PhysicsParams(**({"fidelity": "rcwa", "rcwa_orders": orders} | RED | kw))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """LAPACK's eigensolver on 2 threads is ~20x slower when the other core is busy (docs/simulator.md): these
    tests run single-threaded so that they take seconds on a shared machine too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def structures():
    s, _ = StructureGenerator(seed=3).rows(0, 2)
    return (s != 0).astype(np.float32)


def airy_transmission(p: PhysicsParams, lam: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Power transmission of a slab (index n, thickness h) between air and the substrate, normal incidence."""
    ns, phase = p.n_substrate, 2 * np.pi * n * p.height_um / lam
    r1, r2, t1, t2 = (1 - n) / (1 + n), (n - ns) / (n + ns), 2 / (1 + n), 2 * n / (n + ns)
    return ns * np.abs(t1 * t2 * np.exp(1j * phase) / (1 + r1 * r2 * np.exp(2j * phase))) ** 2


@pytest.mark.parametrize("geometry", [HIDDEN, {}])
@pytest.mark.parametrize("value", [0, 1])
def test_uniform_layer_is_the_airy_slab(value, geometry):
    """All pillar or all background: each quadrant gets 1/4 of the Fabry-Perot transmission of the slab."""
    p = rcwa(3, **geometry)
    lam = p.wavelengths_um()
    n = p.n_high(lam) if value else np.full_like(lam, p.n_low)
    expected = airy_transmission(p, lam, n) / 4
    power = -simulate_spectra(np.full((1, 128, 128), value, np.uint8), p)[0]  # (3, W)
    np.testing.assert_allclose(power, np.broadcast_to(expected, power.shape), atol=1e-6)
    if value:
        assert expected.max() - expected.min() > 0.005, "the slab resonates: Fabry-Perot is really tested"


@pytest.mark.parametrize("geometry", [HIDDEN, {}])
def test_lossless_energy_is_conserved_and_the_quadrants_add_up(structures, geometry):
    """T + R = 1 for both polarizations; the quadrant fluxes at the detector add up to the transmitted flux."""
    p = rcwa(4, **geometry)
    plan = make_rcwa_plan(p)
    s = torch.as_tensor(np.roll(structures[:1], 37, axis=1))
    fields = solve_layer(pattern_matrices(s, plan), plan, torch.arange(len(plan.lam_sub)))
    t = order_flux(fields["e_t"], fields["h_t"])  # (1, W, 2 polarizations)
    r = -order_flux(fields["e_r"], fields["h_r"])
    np.testing.assert_allclose((t + r).numpy(), 1.0, atol=1e-6)
    assert r.min() > 0.01 and t.min() > 0.5, "a real reflection and transmission"
    quadrants = rcwa_quadrants(s, plan).double()  # (1, W, 2, 2)
    np.testing.assert_allclose(quadrants.sum(dim=(-2, -1)).numpy(), t.mean(dim=-1).numpy(), atol=2e-6)


def test_rotation_by_180_swaps_red_and_blue(structures):
    s = np.roll(structures[:1], 37, axis=1)  # not diagonal-symmetric
    assert_turn_swaps_red_and_blue(s, rcwa(4, **HIDDEN), atol=1e-6)


def test_diagonal_symmetric_structure_has_equal_greens(structures):
    """Transposing swaps x and y and the two polarizations: unpolarized light then gives E01 = E10."""
    plan = make_rcwa_plan(rcwa(4))
    e = rcwa_quadrants(torch.as_tensor(structures[:1]), plan)
    np.testing.assert_allclose(e[..., 0, 1].numpy(), e[..., 1, 0].numpy(), atol=1e-6)
    shifted = rcwa_quadrants(torch.as_tensor(np.roll(structures[:1], 21, axis=1)), plan)
    assert (shifted[..., 0, 1] - shifted[..., 1, 0]).abs().max() > 1e-3


def test_converges_in_the_number_of_orders(structures):
    """Error against N = 8 falls as orders are added (3 -> 5 -> 7)."""
    s = structures[:1]
    kw = dict(wavelength_min_nm=650, wavelength_max_nm=700, n_wavelengths=2)
    ref = -simulate_spectra(s, rcwa(8, **kw))
    err = {n: np.abs(-simulate_spectra(s, rcwa(n, **kw)) - ref).max() for n in (3, 5, 7)}
    assert err[7] < err[5] < err[3] and err[7] < 0.5 * err[3], err


def test_sub_grid_interpolation_error_is_small_and_falls_with_the_step(structures):
    """Solving every 4.5 nm instead of every 3 nm sample: rms error < 5e-3 (a few nm-wide resonances and the
    Rayleigh anomalies are what a sub-grid cannot follow), and a 15 nm sub-grid is worse."""
    kw = dict(wavelength_min_nm=610, wavelength_max_nm=700, n_wavelengths=31)
    every = -simulate_spectra(structures[:1], rcwa(3, **(kw | {"rcwa_step_nm": 1})))

    def error(step):
        assert len(make_rcwa_plan(rcwa(3, **(kw | {"rcwa_step_nm": step}))).lam_sub) < 31
        err = np.abs(-simulate_spectra(structures[:1], rcwa(3, **(kw | {"rcwa_step_nm": step}))) - every)
        return err.max(), np.sqrt(np.mean(err**2))

    (fine_max, fine_rms), (_, coarse_rms) = error(4.5), error(15)
    assert fine_max < 2e-2 and fine_rms < 5e-3 and fine_rms < 0.6 * coarse_rms, (fine_max, fine_rms, coarse_rms)


def test_thin_weak_layer_agrees_with_multislice(structures):
    """A 50 nm layer of index 1.05: rcwa and multislice agree (both reduce to a weak phase screen); the 600 nm SiN
    layer is where they part. What remains in the weak limit is ~20 % of the (1e-4) routing signal: the vector
    obliquity of the steep orders, which no scalar model has (docs/simulator.md)."""
    s = np.roll(structures[:1], 37, axis=1)
    weak = dict(height_um=0.05, cauchy_a=1.05, cauchy_b=0.0)
    exact = -simulate_spectra(s, rcwa(4, **weak))
    scalar = -simulate_spectra(s, PhysicsParams(**(RED | weak | {"fidelity": "multislice", "multislice_step_nm": 1})))
    np.testing.assert_allclose(exact, scalar, atol=5e-4)
    routing_exact, routing_scalar = exact[:, 0] - exact[:, 2], scalar[:, 0] - scalar[:, 2]
    assert np.abs(routing_exact).max() > 5e-5 and np.corrcoef(routing_exact, routing_scalar)[0, 1] > 0.95
    thick = -simulate_spectra(s, rcwa(4)) - (-simulate_spectra(s, PhysicsParams(**(RED | {
        "fidelity": "multislice", "multislice_step_nm": 1}))))
    assert np.abs(thick).max() > 1e-2, "outside the limit the models differ"


def test_orders_are_checked_against_the_propagating_ones():
    with pytest.raises(ConfigError, match="rcwa_orders"):
        PhysicsParams(fidelity="rcwa", rcwa_orders=4)  # 5 orders propagate at 400 nm in the 2 um cell
    PhysicsParams(fidelity="thin", rcwa_orders=4)  # only rcwa needs them


def test_cli_orders_flag_reaches_simulation_json(tmp_path, capsys, structures):
    np.save(tmp_path / "s.npy", np.ascontiguousarray(structures[:1], dtype=np.uint8))
    out = tmp_path / "raw"
    assert main(["simulate", "--structures", str(tmp_path / "s.npy"), "--out", str(out), "--fidelity", "rcwa",
                 "--orders", "5", "--rcwa-step-nm", "150"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fidelity"] == "rcwa"
    record = json.loads((out / "simulation.json").read_text())
    physics = record["physics"]
    assert (physics["fidelity"], physics["rcwa_orders"], physics["rcwa_step_nm"]) == ("rcwa", 5, 150.0)
    assert "| Fourier orders per axis | −5 … 5 |" in settings_table(SimulationSettings.from_dict(record))
    spectra = np.load(out / "spectra_latest_0.npy")
    assert spectra.shape == (1, 3, 301) and (spectra < 0).all() and spectra.min() > -1
    assert main(["simulate", "--structures", str(tmp_path / "s.npy"), "--out", str(tmp_path / "bad"),
                 "--fidelity", "rcwa", "--orders", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rcwa_orders" in err[0] and not (tmp_path / "bad").exists(), err
    assert SimulatorResource(fidelity="rcwa").rcwa_orders == PhysicsParams().rcwa_orders  # generated resource
