"""Resources: where data lives, how the simulator and the filtering are set, which device trains, the model
check's limit. The settings resources are generated from the core settings classes (defs/settings.py), so their
defaults and descriptions are those of PhysicsParams, StructureParams, PrepareSettings, CheckLimits and
ModelCheckLimits; the fields below the generated ones exist only in Dagster."""


from pathlib import Path

import dagster as dg
from pydantic import Field

from crrecon_pipeline.data import home as layout
from crrecon_pipeline.data.checks import CheckLimits
from crrecon_pipeline.data.transforms import PREPARE_FIELDS, PrepareSettings
from crrecon_pipeline.defs.settings import build, generated
from crrecon_pipeline.physics.params import SIMULATOR_FIELDS, PhysicsParams
from crrecon_pipeline.physics.shards import SimulationSettings
from crrecon_pipeline.physics.structures import StructureParams
from crrecon_pipeline.settings import pydantic_fields
from crrecon_pipeline.train.metrics import ModelCheckLimits


def default_home() -> str:
    """CRRECON_HOME's default for the code location: data/home.py's, the CLI's."""
    return str(layout.crrecon_home())


class CrreconPaths(dg.ConfigurableResource):
    """home: CRRECON_HOME, the managed data root. raw_dir: CRRECON_RAW_DIR, the user's FDTD shards; empty means
    the built-in simulator writes the raw shards under home/raw."""

    home: str
    raw_dir: str = ""

    @property
    def uses_simulator(self) -> bool:
        return not self.raw_dir

    def raw_path(self) -> Path:
        return Path(self.raw_dir) if self.raw_dir else layout.simulated_raw_dir(self.home)

    def raw_path_for(self, shard: int) -> Path:
        """Where shard k's raw files are: its design-made folder (design_round) when it is one, else raw_path()."""
        return layout.design_shard_dir(self.home, shard) if self.design_made(shard) is not None else self.raw_path()

    def design_made(self, shard: int) -> dict | None:
        """The lineage record of a design-made shard (design/loop.py), or None."""
        return layout.design_made_record(self.home, shard)

    def prepared_path(self) -> Path:
        return layout.prepared_dir(self.home)

    def runs_path(self) -> Path:
        return layout.runs_dir(self.home)

    def reports_path(self) -> Path:
        return layout.reports_dir(self.home)


class SimulatorResource(generated("SimulatorSettings", dg.ConfigurableResource,
                                  pydantic_fields(SimulationSettings, ["seed"]),
                                  pydantic_fields(StructureParams, ["unfinished_fraction"]),
                                  pydantic_fields(PhysicsParams, SIMULATOR_FIELDS))):
    """The built-in simulator (docs/simulator.md). Shard k holds rows [k * rows_per_shard, (k + 1) * rows_per_shard)
    of `seed`, so each shard is reproducible from these settings alone (they are recorded in its metadata)."""

    rows_per_shard: int = Field(2500, description="rows per simulated shard (shard k: rows k * n .. (k + 1) * n - 1)")
    initial_shards: int = Field(2, description="shards `make demo` simulates, and the sensor registers when "
                                               "sensor_simulates is on")
    sensor_simulates: bool = Field(False, description="new_shard_sensor registers (and so simulates) the initial "
                                                      "shards on its own on a fresh instance; off: nothing is "
                                                      "simulated until asked (CRRECON_SIM_SENSOR=1 turns it on)")
    device: str = Field("cpu", description="where the simulator runs: cpu or cuda[:i]")

    def settings(self) -> SimulationSettings:
        return SimulationSettings(seed=self.seed, physics=build(PhysicsParams, self),
                                  structures=build(StructureParams, self))


class FilterSettings(generated("FilterFields", dg.ConfigurableResource,
                               pydantic_fields(PrepareSettings, PREPARE_FIELDS),
                               pydantic_fields(CheckLimits))):
    """Binning (mean | subsample) into n_bins (= data.out_len of the runs: 30, or 301 = every sample), the raw
    wavelength grid, and the limits the data checks enforce."""

    def check_limits(self) -> CheckLimits:
        return build(CheckLimits, self)

    def prepare_settings(self) -> PrepareSettings:
        return build(PrepareSettings, self)


class TrainingDevice(dg.ConfigurableResource):
    """device: auto (CUDA when present), cpu or cuda[:i]. processes > 1 trains data-parallel under torchrun, one
    process per GPU (ask the cluster for as many GPUs: the dagster-k8s tag on trained_model and pretrained_model)."""

    device: str = "auto"
    processes: int = 1


class ModelChecks(generated("ModelCheckFields", dg.ConfigurableResource,
                            pydantic_fields(ModelCheckLimits, ["max_mse_ratio"]))):
    """Limits of the checks on a trained model (train.metrics.ModelCheckLimits)."""

    def limits(self) -> ModelCheckLimits:
        return build(ModelCheckLimits, self)
