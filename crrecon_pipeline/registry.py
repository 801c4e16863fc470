"""Building a registered module by name: the models and the losses are plain dicts of classes."""

from torch import nn

from crrecon_pipeline.errors import ConfigError


def build(registry: dict, kind: str, name: str, params: dict) -> nn.Module:
    if name not in registry:
        raise ConfigError(f"unknown {kind} {name!r} (one of {sorted(registry)})")
    try:
        return registry[name](**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} {name}: bad parameters ({exc})") from None


def _summary(obj) -> str:
    """The first sentence of the class's own docstring, else of its module's."""
    import inspect
    import sys

    own = obj.__dict__.get("__doc__")  # not nn.Module's inherited docstring
    doc = inspect.cleandoc(own) if own else inspect.getdoc(sys.modules.get(obj.__module__)) or ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")


def parameters(cls) -> dict:
    """A registered class's constructor parameters and their defaults ("required" when none)."""
    import inspect

    return {name: ("required" if p.default is inspect.Parameter.empty else p.default)
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def describe(registry: dict, kind: str) -> str:
    """Every registered name with its one-line summary and its parameters with their defaults, for the launchpad's
    field descriptions (written from the signatures and docstrings, so they never drift from the code)."""
    lines = [f"keyword arguments of the {kind}'s constructor; unset ones take their defaults. By {kind}:"]
    for name in sorted(registry):
        params = ", ".join(f"{k}={v!r}" for k, v in parameters(registry[name]).items()) or "none"
        summary = _summary(registry[name]) or name
        summary = summary if summary.startswith(name) else f"{name}: {summary}"
        lines.append(f"- {summary}. Parameters: {params}")
    return "\n".join(lines)
