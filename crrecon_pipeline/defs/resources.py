"""Resources: where data lives, how the simulator and the filtering are set, which device trains."""


from pathlib import Path

import dagster as dg

from crrecon_pipeline.data.checks import CheckLimits
from crrecon_pipeline.data.transforms import PrepareSettings
from crrecon_pipeline.physics.params import PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings
from crrecon_pipeline.physics.structures import StructureParams


class CrreconPaths(dg.ConfigurableResource):
    """home: CRRECON_HOME, the managed data root. raw_dir: CRRECON_RAW_DIR, the user's FDTD shards; empty means
    the built-in simulator writes the raw shards under home/raw."""

    home: str
    raw_dir: str = ""

    @property
    def uses_simulator(self) -> bool:
        return not self.raw_dir

    def raw_path(self) -> Path:
        return Path(self.raw_dir) if self.raw_dir else Path(self.home) / "raw"

    def prepared_path(self) -> Path:
        return Path(self.home) / "prepared"

    def runs_path(self) -> Path:
        return Path(self.home) / "runs"

    def reports_path(self) -> Path:
        return Path(self.home) / "reports"


class SimulatorResource(dg.ConfigurableResource):
    """The built-in simulator (docs/simulator.md). Shard k holds rows [k * rows_per_shard, (k + 1) * rows_per_shard)
    of `seed`, so each shard is reproducible from these settings alone (they are recorded in its metadata)."""

    seed: int = 0
    rows_per_shard: int = 2500
    initial_shards: int = 2
    unfinished_fraction: float = 0.47
    period_um: float = 2.0
    height_um: float = 0.6
    depth_um: float = 2.5
    n_substrate: float = 1.0
    cauchy_a: float = 1.996
    cauchy_b: float = 0.0166
    fidelity: str = "thin"  # thin | multislice (slower, closer to rigorous solvers; see the README)
    multislice_slices: int = 40
    device: str = "cpu"

    def settings(self) -> SimulationSettings:
        physics = PhysicsParams(period_um=self.period_um, height_um=self.height_um, depth_um=self.depth_um,
                                n_substrate=self.n_substrate, cauchy_a=self.cauchy_a, cauchy_b=self.cauchy_b,
                                fidelity=self.fidelity, multislice_slices=self.multislice_slices)
        return SimulationSettings(seed=self.seed, physics=physics,
                                  structures=StructureParams(unfinished_fraction=self.unfinished_fraction))


class FilterSettings(dg.ConfigurableResource):
    """Binning (mean | subsample) into n_bins (= data.out_len of the runs: 30, or 301 = every sample), the raw
    wavelength grid, and the limits the data checks enforce."""

    binning: str = "mean"
    n_bins: int = 30
    wavelength_first_nm: float = 400.0
    wavelength_last_nm: float = 700.0
    n_wavelengths: int = 301
    kept_fraction_min: float = 0.2
    kept_fraction_max: float = 1.0
    max_nonfinite_fraction: float = 0.01

    def check_limits(self) -> CheckLimits:
        return CheckLimits(kept_fraction_min=self.kept_fraction_min, kept_fraction_max=self.kept_fraction_max,
                           max_nonfinite_fraction=self.max_nonfinite_fraction)

    def prepare_settings(self) -> PrepareSettings:
        return PrepareSettings(binning=self.binning, n_bins=self.n_bins, wavelength_first_nm=self.wavelength_first_nm,
                               wavelength_last_nm=self.wavelength_last_nm, n_wavelengths=self.n_wavelengths)


class TrainingDevice(dg.ConfigurableResource):
    """device: auto (CUDA when present), cpu or cuda[:i]. processes > 1 trains data-parallel under torchrun, one
    process per GPU (ask the cluster for as many GPUs: the dagster-k8s tag on trained_model)."""

    device: str = "auto"
    processes: int = 1


class ModelChecks(dg.ConfigurableResource):
    """Limits of the checks on a trained model: check_beats_baseline passes at val MSE <= max_mse_ratio times the
    mean-spectrum baseline's, warns below 1, fails at 1 or above (and such a run is never run_comparison's best)."""

    max_mse_ratio: float = 0.5
