"""The import report: what became of every key of a research config, in one object (never one problem per attempt).

`mapped` pairs each of their dotted keys with this project's key; `dropped` names each key that has no counterpart
and why; `filled` lists the keys of this project set to what their trainer does without being told (its defaults
and fixed behaviour), so the run config says it out loud; `differences` are what the two trainers still do
differently; `notes` explain a mapping (`training.warmup_ratio`: per epoch there, per step here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ImportReport:
    mapped: dict[str, str] = field(default_factory=dict)  # their dotted key -> this project's dotted key
    dropped: dict[str, str] = field(default_factory=dict)  # their dotted key -> why it has no counterpart
    filled: dict[str, str] = field(default_factory=dict)  # this project's key -> "value: why" (their trainer's default)
    notes: dict[str, str] = field(default_factory=dict)  # their dotted key -> how it maps
    differences: list[str] = field(default_factory=list)  # what the two trainers still do differently
    warnings: list[str] = field(default_factory=list)  # e.g. a model contract check the architecture fails

    def map(self, theirs: str, ours: str, note: str | None = None) -> None:
        self.mapped[theirs] = ours
        if note:
            self.notes[theirs] = note

    def as_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """The report for people (stderr): one line a key."""
        out = [f"mapped   {k} -> {v}" + (f"  ({self.notes[k]})" if k in self.notes else "")
               for k, v in self.mapped.items()]
        out += [f"dropped  {k}: {why}" for k, why in self.dropped.items()]
        out += [f"filled   {k} = {why}" for k, why in self.filled.items()]
        out += [f"differs  {d}" for d in self.differences]
        return out
