"""Dagster config and resource fields generated from the core settings, so that a default or a description is
written once, in the core: the frozen dataclasses (physics.params.PhysicsParams, data.transforms.PrepareSettings,
data.checks.CheckLimits, design.optimize.DesignSettings, ...) carry each field's help in
`dataclasses.field(metadata={"help": ...})`, and the run config's pydantic schema (train.config.RunConfig) its
descriptions. Ranges and cross-field rules stay in the core classes, which the assets construct and so validate."""

import copy
import dataclasses
import enum
import typing

import dagster as dg
from pydantic import BaseModel, Field, create_model


def dataclass_fields(core: type, names: typing.Iterable[str] | None = None, defaults: dict | None = None,
                     optional: bool = False, note: str = "") -> dict[str, tuple]:
    """pydantic field definitions for the named fields (default: all) of a core dataclass, in the order given: its
    type, its default (or `defaults[name]`), its help text (+ `note`). optional: the field may be left empty (None)."""
    hints = typing.get_type_hints(core)
    by_name = {f.name: f for f in dataclasses.fields(core)}
    out = {}
    for name in by_name if names is None else names:
        f = by_name[name]  # a KeyError names a field the core class does not have
        kind, default = hints[name], (defaults or {}).get(name, f.default)
        if optional:
            kind, default = kind | None, None
        out[name] = (kind, Field(default=default, description=f.metadata.get("help", "") + note))
    return out


def generated(name: str, base: type, *parts: dict[str, tuple]) -> type:
    """A `base` (dg.Config or dg.ConfigurableResource) subclass with the fields of `parts`; subclass it to add the
    fields and methods that exist only in Dagster."""
    fields = {}
    for part in parts:
        fields |= part
    return create_model(name, __base__=base, **fields)


def build(core: type, settings: BaseModel, **given):
    """The core dataclass from the same-named fields of a generated config or resource (and `given`)."""
    names = {f.name for f in dataclasses.fields(core)} & set(type(settings).model_fields)
    return core(**({name: getattr(settings, name) for name in names} | given))


def optional_section(annotation) -> type[BaseModel] | None:
    """X for an `X | None` field whose X is a pydantic section; None for any other annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and type(None) in typing.get_args(annotation) and isinstance(args[0], type) \
            and issubclass(args[0], BaseModel):
        return args[0]
    return None


def launchpad_class(core: type[BaseModel], defaults: BaseModel, name: str, choices: dict | None = None,
                    prefix: str = "") -> type[dg.Config]:
    """A dg.Config with the fields, types and descriptions of the core section `core` and the values of `defaults`
    as its defaults (plain defaults, not factories: Dagster shows those in the launchpad, model.params included).
    A section's description is its class docstring. `choices` ({dotted key: (names, description)}) makes a string
    field an enum of the given names (the registries: Dagster's launchpad then lists them) and replaces its
    description. Ranges and the constructor check stay in the core model: trained_model validates with it."""
    fields = {}
    for key, info in core.model_fields.items():
        value, dotted = getattr(defaults, key), f"{prefix}{key}"
        optional = optional_section(info.annotation)
        if isinstance(value, BaseModel):
            section = launchpad_class(type(value), value, f"{key.capitalize()}Section", choices, f"{dotted}.")
            fields[key] = (section, Field(default=section(), description=info.description or
                                          (type(value).__doc__ or "").strip().splitlines()[0]))
        elif optional is not None:  # a section that is off (None) unless given, e.g. model.constraint
            section = launchpad_class(optional, optional(), f"{key.capitalize()}Section", choices, f"{dotted}.")
            fields[key] = (typing.Optional[section], Field(default=None, description=info.description))
        elif dotted in (choices or {}):
            names, description = choices[dotted]
            kind = enum.Enum(f"{name}_{key}", {n: n for n in names}, type=str)
            fields[key] = (kind, Field(default=kind(value), description=description))
        else:
            described = (choices or {}).get(f"{dotted}:description")
            fields[key] = (info.annotation, Field(default=copy.deepcopy(value),
                                                  description=described or info.description))
    return create_model(name, __base__=dg.Config, __doc__=core.__doc__, **fields)


def plain_values(value):
    """A launchpad config's model_dump with its enum members back to their names (the core schema takes str)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_values(v) for v in value)
    return value
