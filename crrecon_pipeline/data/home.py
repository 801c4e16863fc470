"""Where the CLI keeps managed data by default: CRRECON_HOME (./data when unset)."""

from __future__ import annotations

import os
from pathlib import Path


def crrecon_home() -> Path:
    return Path(os.environ.get("CRRECON_HOME") or Path.cwd() / "data").resolve()


def default_prepared_dir() -> Path:
    return crrecon_home() / "prepared"
