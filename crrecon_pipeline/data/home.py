"""Where the CLI keeps managed data by default: CRRECON_HOME (./data when unset); and where in it the design
loop's design-made shards live."""

from __future__ import annotations

import json
import os
from pathlib import Path

from crrecon_pipeline.errors import DataError

DESIGN_MADE = "design_made.json"  # beside a design-made shard: who designed it (written last: present = complete)


def crrecon_home() -> Path:
    return Path(os.environ.get("CRRECON_HOME") or Path.cwd() / "data").resolve()


def default_prepared_dir() -> Path:
    return crrecon_home() / "prepared"


def design_shard_dir(home: str | Path, shard: int) -> Path:
    """Where the Dagster design loop writes design-made shard k: inside the managed data (CRRECON_HOME), never in
    the user's CRRECON_RAW_DIR; one folder per shard (its raw pair, simulation.json, designs.json, design_made.json)."""
    return Path(home) / "design_shards" / f"shard_{shard}"


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
