"""The environment variables the CLI and the code location read, each validated by name where it is read: a bad
value is one ConfigError naming the variable (`CRRECON_SIM_SHARDS='-1': must be an integer in [1, 1000000]`).
Imports errors only (a preset name is checked by the caller, which knows the presets)."""

from __future__ import annotations

import os

from crrecon_pipeline.errors import ConfigError

EXECUTORS = ("", "multiprocess", "k8s")


def raw(name: str, default: str) -> str:
    """The variable's value, or `default` when it is unset or empty."""
    return os.environ.get(name) or default


def integer(name: str, default: int, lo: int, hi: int) -> int:
    text = raw(name, str(default)).strip()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{name}={text!r}: must be an integer in [{lo}, {hi}]")
    return value


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = raw(name, default).strip()
    if value not in choices:
        shown = ", ".join(c for c in choices if c) + (" or unset" if "" in choices else "")
        raise ConfigError(f"{name}={value!r}: must be {shown}")
    return value


def flag(name: str) -> bool:
    """A switch: unset, empty or 0 is off, 1 is on; anything else is refused."""
    return choice(name, "0", ("0", "1")) == "1"


def device(name: str, default: str) -> str:
    """A torch device name as `--device` takes it (auto, cpu, cuda, cuda:N), checked for its form only."""
    value = raw(name, default).strip()
    head, _, index = value.partition(":")
    if not (value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isascii() and index.isdigit())):
        raise ConfigError(f"{name}={value!r}: must be auto, cpu, cuda or cuda:N")
    return value
