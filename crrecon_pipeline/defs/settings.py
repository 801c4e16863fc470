"""Dagster config classes, resources and the launchpad's run config generated from the core settings, by the one
field walk of crrecon_pipeline/settings.py (the `crrecon` flags come from the same walk), so that a default, a
description or a choice is written once, in the core: the settings classes (physics.params.PhysicsParams,
data.transforms.PrepareSettings, data.checks.CheckLimits, design.optimize.DesignSettings, ...) and the run config's
schema (train.config.RunConfig). A registry choice or a core `Literal` field is a `Literal` here too, which Dagster
shows as a choice and gives back as the plain name. Ranges and cross-field rules stay in the core classes, which the
assets construct (`build`) and so validate, with the core's one-line message."""

import copy
import typing

import dagster as dg
from pydantic import BaseModel, Field, create_model

from crrecon_pipeline.settings import Settings, field_specs


def generated(name: str, base: type, *parts: dict[str, tuple]) -> type:
    """A `base` (dg.Config or dg.ConfigurableResource) subclass with the fields of `parts` (settings.pydantic_fields
    of core settings classes); subclass it to add the fields and methods that exist only in Dagster."""
    fields = {}
    for part in parts:
        fields |= part
    return create_model(name, __base__=base, **fields)


def build(core: type[Settings], settings: BaseModel, **given):
    """The core settings object from the same-named fields of a generated config or resource (and `given`)."""
    names = set(core.model_fields) & set(type(settings).model_fields)
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
    field a `Literal` of the given names (the registries: Dagster's launchpad then lists them) and replaces its
    description. Ranges and the constructor check stay in the core model: trained_model validates with it."""
    fields = {}
    for spec in field_specs(core, defaults=defaults):
        key, value, dotted = spec.name, spec.default, f"{prefix}{spec.name}"
        optional = optional_section(spec.annotation)
        if isinstance(value, BaseModel):
            section = launchpad_class(type(value), value, f"{key.capitalize()}Section", choices, f"{dotted}.")
            fields[key] = (section, Field(default=section(), description=spec.description or
                                          (type(value).__doc__ or "").strip().splitlines()[0]))
        elif optional is not None:  # a section that is off (None) unless given, e.g. model.constraint
            section = launchpad_class(optional, optional(), f"{key.capitalize()}Section", choices, f"{dotted}.")
            fields[key] = (typing.Optional[section], Field(default=None, description=spec.description))
        elif dotted in (choices or {}):
            names, description = choices[dotted]
            fields[key] = (typing.Literal[tuple(names)], Field(default=value, description=description))
        else:
            described = (choices or {}).get(f"{dotted}:description")
            fields[key] = (spec.annotation, Field(default=copy.deepcopy(value),
                                                  description=described or spec.description))
    return create_model(name, __base__=dg.Config, __doc__=core.__doc__, **fields)
