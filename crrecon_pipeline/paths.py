"""Where things live: the managed data root (CRRECON_HOME) and the user's raw folder (CRRECON_RAW_DIR)."""

from __future__ import annotations

import os
from pathlib import Path


def crrecon_home() -> Path:
    return Path(os.environ.get("CRRECON_HOME") or Path.cwd() / "data").resolve()


def raw_dir_from_env() -> Path | None:
    value = os.environ.get("CRRECON_RAW_DIR")
    return Path(value).resolve() if value else None


def default_prepared_dir() -> Path:
    return crrecon_home() / "prepared"
