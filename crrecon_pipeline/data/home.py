"""The managed data's layout, owned here and nowhere else: its root CRRECON_HOME (./data when unset) and the
folders in it: raw/ (the simulator's shards), prepared/ (the versioned store), runs/, reports/, pretrain/ and
design_shards/ (the design loop's design-made shards). The CLI, the Dagster paths resource and the code location
all ask this module.

May import: errors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from crrecon_pipeline.errors import DataError

HOME_ENV = "CRRECON_HOME"
DEFAULT_HOME = "data"  # relative to the working directory
DESIGN_MADE = "design_made.json"  # beside a design-made shard: who designed it (written last: present = complete)


def crrecon_home() -> Path:
    """CRRECON_HOME, or ./data when unset, as an absolute path."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / DEFAULT_HOME).resolve()


def simulated_raw_dir(home: str | Path) -> Path:
    """Where the built-in simulator writes raw shards when the user has no CRRECON_RAW_DIR."""
    return Path(home) / "raw"


def prepared_dir(home: str | Path) -> Path:
    return Path(home) / "prepared"


def runs_dir(home: str | Path) -> Path:
    return Path(home) / "runs"


def reports_dir(home: str | Path) -> Path:
    return Path(home) / "reports"


def pretrain_dir(home: str | Path) -> Path:
    """The pretraining sets, one folder per settings digest (train/pretrain.py)."""
    return Path(home) / "pretrain"


def default_prepared_dir() -> Path:
    return prepared_dir(crrecon_home())


def design_shards_dir(home: str | Path) -> Path:
    return Path(home) / "design_shards"


def design_shard_dir(home: str | Path, shard: int) -> Path:
    """Where the Dagster design loop writes design-made shard k: inside the managed data (CRRECON_HOME), never in
    the user's CRRECON_RAW_DIR; one folder per shard (its raw pair, simulation.json, designs.json, design_made.json)."""
    return design_shards_dir(home) / f"shard_{shard}"


def design_made_record(home: str | Path, shard: int) -> dict | None:
    """The lineage record of design-made shard k ({checkpoint, model_run_id, design_run_id, loop_id, round}), or
    None when shard k is not design-made."""
    path = design_shard_dir(home, shard) / DESIGN_MADE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: unreadable design record ({exc})") from None
