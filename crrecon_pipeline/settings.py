"""The one settings mechanism of the core, and the one field walk every generated setting comes from.

Every settings class of the plain packages (physics.params.PhysicsParams, data.transforms.PrepareSettings,
design.optimize.DesignSettings, ...) is a `Settings`: a frozen pydantic model that refuses unknown keys, with each
field's range written once as Field constraints (ge / gt / le / lt; floats are finite) and its help as the Field's
description; rules across fields are model validators. A bad value is refused in ONE line naming `owner.field`
(a ConfigError, e.g. `physics.period_um=-1.0: must be in (0, 100]`), whoever constructs the object.

`field_specs` walks a pydantic model's fields (type, default, description, constraints; a `Literal` type is a
choice of names). The `crrecon` flags are generated from it here (`add_flags`, `from_flags`), and the Dagster config
classes, resources and the launchpad's run config in defs/settings.py (from `pydantic_fields`), so a default, a range
or a help text is written once, on the core class. The environment variables are read here too, each validated
by name. May import: errors (never Dagster).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from crrecon_pipeline.errors import ConfigError

_TYPE_ERRORS = {"float_type", "float_parsing", "int_type", "int_parsing", "int_from_float", "bool_type"}
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
S = TypeVar("S", bound="Settings")


class Settings(BaseModel):
    """A core settings class: frozen, unknown keys refused, floats finite, ranges as Field constraints. `OWNER`
    is the word that names its keys in messages (`physics` in `physics.period_um`). Change one with `changed`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    OWNER: ClassVar[str] = "settings"

    def __init__(self, /, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe(exc, type(self))) from None

    def changed(self: S, **changes: Any) -> S:
        """A NEW validated object with `changes` (pydantic's model_copy(update=...) would not validate them)."""
        return type(self)(**({name: getattr(self, name) for name in type(self).model_fields} | changes))

    def to_dict(self) -> dict:
        """Plain values for files and metadata (nested settings as dicts)."""
        return self.model_dump()


# ---------------------------------------------------------------------------------------------------- the walk

@dataclass(frozen=True)
class FieldSpec:
    """One field of a pydantic model as the generators need it."""

    name: str
    annotation: Any
    default: Any
    description: str
    constraints: tuple

    @property
    def choices(self) -> tuple | None:
        """The allowed names of a `Literal[...]` field, else None."""
        return typing.get_args(self.annotation) if typing.get_origin(self.annotation) is Literal else None

    @property
    def bounds(self) -> str:
        """The range in words ('in (0, 100]', '>= 0'), or '' for none."""
        return bounds_text(self.constraints)


def field_specs(model: type[BaseModel], names: Iterable[str] | None = None,
                defaults: Mapping | BaseModel | None = None) -> list[FieldSpec]:
    """The named fields (default: all, in declaration order) of `model`; their defaults from `defaults` (a mapping or
    an instance) where it has them. An unknown name is a KeyError naming it."""
    fields = model.model_fields
    out = []
    for name in fields if names is None else names:
        info = fields[name]
        if isinstance(defaults, BaseModel):
            default = getattr(defaults, name)
        elif defaults is not None and name in defaults:
            default = defaults[name]
        else:
            default = info.get_default(call_default_factory=True)
        out.append(FieldSpec(name, info.annotation, default, info.description or "", tuple(info.metadata)))
    return out


def pydantic_fields(model: type[BaseModel], names: Iterable[str] | None = None, defaults: Mapping | None = None,
                    optional: bool = False, note: str = "") -> dict[str, tuple]:
    """Field definitions for pydantic's create_model (Dagster's config classes and resources: defs/settings.py): each
    named field's type, default and description (+ `note`); optional: the field may be left empty (None). The
    ranges stay on the core class, which the Dagster layer constructs and so validates (one message everywhere)."""
    out = {}
    for spec in field_specs(model, names, defaults):
        kind, default = (spec.annotation | None, None) if optional else (spec.annotation, spec.default)
        out[spec.name] = (kind, Field(default=default, description=spec.description + note))
    return out


# ---------------------------------------------------------------------------------------------------- messages

def bounds_text(constraints: Iterable) -> str:
    """'in [0, 1]', 'in (0, 100]', '>= 1' or '' from a field's annotated-types constraints."""
    found = {}
    for c in constraints:
        for key in ("gt", "ge", "lt", "le"):
            if getattr(c, key, None) is not None:
                found[key] = getattr(c, key)
    lo, hi = ("gt", found["gt"]) if "gt" in found else ("ge", found.get("ge")), \
        ("lt", found["lt"]) if "lt" in found else ("le", found.get("le"))
    if lo[1] is not None and hi[1] is not None:
        return f"in {'(' if lo[0] == 'gt' else '['}{_number(lo[1])}, {_number(hi[1])}{')' if hi[0] == 'lt' else ']'}"
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return " and ".join(f"{symbols[k]} {_number(v)}" for k, v in (lo, hi) if v is not None)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def problem(error: Mapping, spec: FieldSpec | None) -> str:
    """What is wrong with a value, in words, from one pydantic error on the field `spec`."""
    kind, bounds = error["type"], f" {spec.bounds}" if spec and spec.bounds else ""
    if kind in _RANGE_ERRORS:
        return f"must be{bounds}"
    if kind == "finite_number":
        return f"must be a finite number{bounds}"
    if kind in _TYPE_ERRORS:
        return f"must be {'an integer' if kind.startswith('int') else 'a number'}{bounds}"
    if kind == "literal_error" and spec and spec.choices:
        return f"must be one of {', '.join(map(str, spec.choices))}"
    return error["msg"].removeprefix("Value error, ")


def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first error: `owner.field=value: problem`, `owner.field: unknown key`, or a model
    validator's own message (which names its keys). Nested settings are named by their own owner."""
    error = exc.errors()[0]
    loc = list(error["loc"])
    while len(loc) > 1 and loc[0] in model.model_fields and _settings_class(model.model_fields[loc[0]].annotation):
        model = _settings_class(model.model_fields[loc.pop(0)].annotation)
    if not loc:
        return error["msg"].removeprefix("Value error, ")
    key = f"{getattr(model, 'OWNER', model.__name__)}.{'.'.join(map(str, loc))}"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    spec = field_specs(model, [loc[0]])[0] if len(loc) == 1 and loc[0] in model.model_fields else None
    return f"{key}={error['input']!r}: {problem(error, spec)}"[:300]


def _settings_class(annotation) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def field_problem(model: type[Settings], name: str, value: Any) -> str | None:
    """The one-line refusal of `value` for the field `name` alone (its type and range), or None if it fits."""
    try:
        _adapter(model, name).validate_python(value)
    except ValidationError as exc:
        return f"{model.OWNER}.{name}={value!r}: {problem(exc.errors()[0], field_specs(model, [name])[0])}"
    return None


@functools.cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter:
    spec = field_specs(model, [name])[0]
    kind = typing.Annotated[(spec.annotation, *spec.constraints)] if spec.constraints else spec.annotation
    return TypeAdapter(kind, config=ConfigDict(allow_inf_nan=False))


# ---------------------------------------------------------------------------------------------------- CLI flags

def add_flags(parser: argparse.ArgumentParser, model: type[Settings], names: Iterable[str] | None = None,
              spell: Callable[[str], str] = lambda name: name) -> None:
    """One flag per named field (default: all) of a settings class: --<spell(name) with dashes>, the field's type,
    default, choices, and its description with its range as help, so the CLI states no default of its own. A value
    outside the range is refused by argparse (one line, exit 2, before any work) with the class's own message."""
    for spec in field_specs(model, names):
        flag, choices = spell(spec.name).replace("_", "-"), spec.choices
        text = (spec.description + (f", {spec.bounds}" if spec.bounds else "")).replace("%", "%%")
        parser.add_argument("--" + flag, dest=spec.name, type=_flag_type(model, spec), default=spec.default,
                            choices=choices, metavar=None if choices else flag.upper().replace("-", "_"),
                            help=f"{text} (default: %(default)s)")


def _flag_type(model: type[Settings], spec: FieldSpec) -> Callable[[str], Any]:
    """An argparse type: the text parsed as the field's int or float (`int | None` too) and checked against the
    field."""
    kind = next((a for a in typing.get_args(spec.annotation) if a is not type(None)), spec.annotation) \
        if type(None) in typing.get_args(spec.annotation) else spec.annotation
    if kind not in (int, float):
        return str if spec.choices else kind

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: not {'an integer' if kind is int else 'a number'}") from None
        refusal = field_problem(model, spec.name, value)
        if refusal:
            raise argparse.ArgumentTypeError(refusal)
        return value

    parse.__name__ = kind.__name__
    return parse


def from_flags(args: argparse.Namespace, model: type[Settings], **given: Any) -> Settings:
    """The settings object from the parsed flags of its fields (add_flags) and `given`."""
    parsed = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    return model(**(parsed | given))


# ---------------------------------------------------------------------------------------------- environment variables
# The variables the CLI and the code location read, each validated by name where it is read: a bad value is one
# ConfigError naming the variable (`CRRECON_SIM_SHARDS='-1': must be an integer in [0, 1000000]`); a preset name is
# checked by the caller, which knows the presets.

EXECUTORS = ("", "multiprocess", "k8s")  # CRRECON_EXECUTOR


def env_raw(name: str, default: str) -> str:
    """The variable's value, or `default` when it is unset or empty."""
    return os.environ.get(name) or default


def env_integer(name: str, default: int, lo: int, hi: int) -> int:
    text = env_raw(name, str(default)).strip()
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{name}={text!r}: must be an integer in [{lo}, {hi}]")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_raw(name, default).strip()
    if value not in choices:
        shown = ", ".join(c for c in choices if c) + (" or unset" if "" in choices else "")
        raise ConfigError(f"{name}={value!r}: must be {shown}")
    return value


def env_flag(name: str) -> bool:
    """A switch: unset, empty or 0 is off, 1 is on; anything else is refused."""
    return env_choice(name, "0", ("0", "1")) == "1"


def env_device(name: str, default: str) -> str:
    """A torch device name as `--device` takes it (auto, cpu, cuda, cuda:N), checked for its form only."""
    value = env_raw(name, default).strip()
    head, _, index = value.partition(":")
    if not (value in ("auto", "cpu", "cuda") or (head == "cuda" and index.isascii() and index.isdigit())):
        raise ConfigError(f"{name}={value!r}: must be auto, cpu, cuda or cuda:N")
    return value


# CRRECON_TEST_PAUSE=<point>[,<point>...], for the concurrency tests only: a process stops itself (SIGSTOP) the first
# time it reaches each named point; the test does what must happen at that instant (another writer's whole run, a
# file truncated under a read) and resumes it with SIGCONT. Unset (always, outside the tests) a point costs one
# environment lookup. Points: `commit` (a staged version about to be committed), `pointers` (`crrecon preprocess`
# about to set LATEST), `reading` (a raw shard's second chunk about to be read), `claimed` (a run folder's lease just
# taken), `predict` (`crrecon predict` after its first chunk).
_DONE: set[str] = set()


def pause_point(name: str) -> None:
    wanted = os.environ.get("CRRECON_TEST_PAUSE")
    if not wanted or name in _DONE or name not in wanted.split(","):
        return
    _DONE.add(name)
    os.kill(os.getpid(), signal.SIGSTOP)
