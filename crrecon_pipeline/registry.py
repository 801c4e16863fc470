"""Building a registered module by name. A Registry (MODELS, LOSSES) maps names to classes: the package's own,
plus those that other installed packages declare under the registry's entry-point group (`crrecon_pipeline.models`,
`crrecon_pipeline.losses`), loaded on the first lookup, so every process that looks a name up sees them: the CLI,
the Dagster code server, the Pipes worker, every torchrun rank, config validation and `crrecon predict`. A plugin
that fails to load does not break the others: its name stays unknown, and using it is one line naming the entry
point and why. May import: errors (and the standard library)."""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Iterator, Mapping
from importlib import metadata

from torch import nn

from crrecon_pipeline.errors import ConfigError


class Registry(Mapping):
    """name -> nn.Module class. The built-in entries are given; the entry points of `group` join them on the first
    lookup (iteration, `in`, `[]`, len). A built-in name cannot be replaced by a plugin."""

    def __init__(self, kind: str, group: str, builtin: Mapping[str, type]):
        self.kind, self.group = kind, group
        self._entries: dict[str, type] = dict(builtin)
        self.broken: dict[str, str] = {}  # entry-point name -> one line: what it is and why it did not load
        self._loaded = False
        self._lock = threading.Lock()

    def _load(self) -> dict[str, type]:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    for entry in metadata.entry_points(group=self.group):
                        self._add_plugin(entry)
                    self._loaded = True
        return self._entries

    def _add_plugin(self, entry: metadata.EntryPoint) -> None:
        where = f"{self.kind} plugin {entry.name} = {entry.value} (entry point group {self.group})"
        if entry.name in self._entries:
            self.broken[entry.name] = f"{where}: the name is taken by a built-in {self.kind}"
            return
        try:
            cls = entry.load()
        except Exception as exc:  # noqa: BLE001 - whatever a broken plugin raises, it is reported, never fatal
            self.broken[entry.name] = f"{where}: cannot be loaded ({type(exc).__name__}: {_one_line(exc)})"
            return
        if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
            self.broken[entry.name] = f"{where}: is not a torch.nn.Module class ({type(cls).__name__})"
            return
        self._entries[entry.name] = cls

    def __getitem__(self, name: str) -> type:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def unknown(self, name: str) -> str:
        """Why `name` is not registered, in one line: the broken plugin of that name, or the registered names."""
        entries = self._load()
        if name in self.broken:
            return self.broken[name]
        return f"unknown {self.kind} {name!r} (one of {sorted(entries)})"

    def lookup(self, name: str) -> type:
        """The class registered as `name`; a one-line ConfigError otherwise."""
        if name not in self:
            raise ConfigError(self.unknown(name))
        return self[name]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def build(registry: Registry, kind: str, name: str, params: dict) -> nn.Module:
    cls = registry.lookup(name)
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name}: bad parameters ({exc})") from None


def _summary(obj) -> str:
    """The first sentence of the class's own docstring, else of its module's."""
    own = obj.__dict__.get("__doc__")  # not nn.Module's inherited docstring
    doc = inspect.cleandoc(own) if own else inspect.getdoc(sys.modules.get(obj.__module__)) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")


def parameters(cls) -> dict:
    """A registered class's constructor parameters and their defaults ("required" when none)."""
    return {name: ("required" if p.default is inspect.Parameter.empty else p.default)
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def describe(registry: Mapping, kind: str) -> str:
    """Every registered name with its one-line summary and its parameters with their defaults, for the launchpad's
    field descriptions (written from the signatures and docstrings, so they never drift from the code)."""
    lines = [f"keyword arguments of the {kind}'s constructor; unset ones take their defaults. By {kind}:"]
    for name in sorted(registry):
        params = ", ".join(f"{k}={v!r}" for k, v in parameters(registry[name]).items()) or "none"
        summary = _summary(registry[name]) or name
        summary = summary if summary.startswith(name) else f"{name}: {summary}"
        lines.append(f"- {summary}. Parameters: {params}")
    return "\n".join(lines)
