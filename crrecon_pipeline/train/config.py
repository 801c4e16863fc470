"""Run configs: one schema (a pydantic model per section of the research code's YAML: data / model / loss / training /
output, plus seed) used by the CLI, the launchpad (defs/assets/training.py mirrors it) and every torchrun rank.

Defaults, ranges and field names live here only. Unknown keys are refused at every level with the dotted key named;
`model.params` / `loss.params` are checked by binding them to the registered constructor's signature. Every
RunConfig is validated (that check included) and frozen: the object travels through the trainer, the reports and
the Dagster layer, a change is a new validated object (`replaced`, `with_overrides`), and `to_dict()` is the plain
form for files (checkpoints, config.json, the torchrun ranks' YAML), read back by `RunConfig.from_dict`. Presets ship
inside the package (crrecon_pipeline/presets/*.yaml, read on demand, never at import); the top-level `configs/`
folder links to them for users.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.registry import Registry


class Section(BaseModel):
    """Unknown keys are an error, not a silently ignored typo (`training.epoch: 1`). Frozen: what was validated is
    what every later reader sees (model.params / loss.params are plain dicts: read them, copy before changing)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info):
        """`training.epochs: true` is no epoch count: a number field refuses a boolean (pydantic would read 1)."""
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in _NUMBERS:
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


_NUMBERS = (int, float, int | None, float | None)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _inside_run_folder(value: str) -> str:
    """A path from config is relative to the run folder and stays inside it."""
    if not value or PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or value.startswith("~"):
        raise ValueError("must be a relative path inside the run folder")
    if ".." in PurePosixPath(value.replace("\\", "/")).parts:
        raise ValueError("must stay inside the run folder (no '..')")
    return value


# The run folder's own files (train/loop.py, defs/launch.py, report/): a log file by one of these names would mix
# with or destroy them.
RUN_FILES = ("metrics.jsonl", "metrics.json", "config.json", "last.pt", "best.pt", "training_set.json",
             "run_config.yaml", "analysis.json", "prepared", "resume.yaml", "control")


def _not_a_run_file(value: str) -> str:
    """output.log_file names no file the run writes itself (epoch_NNNN.pt included)."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if parts and (parts[0] in RUN_FILES or re.fullmatch(r"epoch_\d+\.pt", parts[0])):
        raise ValueError(f"{parts[0]!r} is one of the run's own files ({', '.join(RUN_FILES)}, epoch_NNNN.pt)")
    return value


def _log_outside_output_dir(output):
    """The text log is neither output.dir nor the folder it must be created in."""
    log, out = (PurePosixPath(v.replace("\\", "/")) for v in (output.log_file, output.dir))
    if log == out or log in out.parents:
        raise ValueError(f"output.log_file {output.log_file!r} collides with output.dir {output.dir!r}")
    return output


class DataConfig(Section):
    batch_size: int = Field(400, ge=1, description="samples per optimizer step (global, across ranks)")
    augment_180: bool = Field(True, description="train on the 180-degree twins too (inside the training split)")
    augment_shifts: bool = Field(True, description="train on the half-period shifts in x, y and both too: exact for "
                                                   "any solver and polarization (symmetry.py)")
    augment_90: bool = Field(False, description="train on the 90-degree turns too: exact only for unpolarized or "
                                                "scalar data")
    train_ratio: float = Field(0.95, gt=0, lt=1, description="fraction of structures (by hash) in the training split")
    map_to_pm1: bool = Field(True, description="structures as {-1, 1} instead of {0, 1}")
    out_len: int = Field(30, ge=1, description="spectral bins per pixel; must match the prepared data")
    oversample: dict[str, int] = Field({}, description="shard index -> how many times each of its training rows "
                                                       "counts per epoch (the design loop's new shards); others once")
    train_all: list[str] = Field([], description="shard indices all of whose rows train, none held out (the design "
                                                 "loop's new shards); the validation rows come from the others")

    @field_validator("oversample")
    @classmethod
    def _oversample(cls, value: dict[str, int]) -> dict[str, int]:
        for shard, times in value.items():
            if not _is_shard_index(shard) or not 1 <= times <= 10_000:
                raise ValueError(f"{shard!r}: {times}: needs a shard index and a count in [1, 10000]")
        return value

    @field_validator("train_all")
    @classmethod
    def _train_all(cls, value: list[str]) -> list[str]:
        for shard in value:
            if not _is_shard_index(shard):
                raise ValueError(f"{shard!r} is no shard index")
        return value


def _is_shard_index(text: str) -> bool:
    return text.isascii() and text.isdigit()


class ConstraintConfig(Section):
    """The research code's hard output constraint: per bin, R + (G1 + G2)/2 + B inside [sum_min, sum_max]."""

    sum_min: float = Field(0.45, description="lowest R + (G1 + G2)/2 + B per bin, in the model's output units")
    sum_max: float = Field(0.95, description="highest R + (G1 + G2)/2 + B per bin, in the model's output units")
    physical_is_negative: bool = Field(False, description="the model's outputs are the NEGATED intensities (spectra "
                                       "stored negative, as in the raw files): the bounds apply to -output, i.e. the "
                                       "output's sum is kept in [-sum_max, -sum_min]")

    _finite_sums = field_validator("sum_min", "sum_max")(_finite)

    @property
    def output_bounds(self) -> tuple[float, float]:
        """The bounds on the sum of the model's own outputs (the research trainer's physical_is_negative is the
        same projection with the bounds negated and swapped)."""
        if self.physical_is_negative:
            return -self.sum_max, -self.sum_min
        return self.sum_min, self.sum_max

    @model_validator(mode="after")
    def _ordered(self) -> ConstraintConfig:
        if self.sum_min > self.sum_max:
            raise ValueError(f"sum_min {self.sum_min} is above sum_max {self.sum_max}")
        return self


class ModelConfig(Section):
    name: str = Field("crrecon_xattn", description="registered model (crrecon_pipeline/models)")
    params: dict[str, Any] = Field({}, description="keyword arguments of the model's constructor")
    constraint: ConstraintConfig | None = Field(None, description="hard projection of every output: per bin "
                                                "R + (G1 + G2)/2 + B into [sum_min, sum_max] by one uniform shift "
                                                "of the four pixels; null: off")


class LossConfig(Section):
    name: str = Field("crrecon_mse_pearson", description="registered loss (crrecon_pipeline/losses)")
    params: dict[str, Any] = Field({}, description="keyword arguments of the loss's constructor")


class EarlyStoppingConfig(Section):
    patience: int = Field(10, ge=1, description="epochs without improvement before the run ends")
    min_delta: float = Field(0.0, ge=0, description="an improvement is a validation loss below the best by more "
                                                    "than this")

    _finite_delta = field_validator("min_delta")(_finite)


class TrainingConfig(Section):
    epochs: int = Field(300, ge=1, description="epochs of the schedule (warmup + cosine to 0 on the last step)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.005, ge=0, description="AdamW's decoupled weight decay (multiplies the weights "
                                                         "by 1 - lr x weight_decay each step); 0: none")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 disables clipping")
    use_amp: bool = Field(True, description="bf16 autocast on CUDA")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="fraction of the steps spent warming up linearly")
    save_every: int = Field(10, ge=0, description="keep epoch_NNNN.pt every this many epochs; 0: never")
    init_from: str = Field("", description="checkpoint whose weights start this run (fresh optimizer, epoch 1; "
                                           "tensors of another shape skipped and listed); empty: random "
                                           "initialization")
    # GPU execution
    compile: bool = Field(False, description="torch.compile the model for training (first steps slower, then faster)")
    compile_backend: str = Field("inductor", description="torch.compile backend: inductor (default), eager, ...")
    channels_last: bool = Field(True, description="channels-last inputs and weights for the CNNs, on CUDA only")
    accumulate: int = Field(1, ge=1, description="micro-batches per step (gradients summed): a batch that does not "
                                                 "fit in GPU memory trains as data.batch_size / accumulate at a time")
    # fine-tuning
    freeze: list[str] = Field([], description="parameter groups of the model kept frozen (no gradient, no optimizer "
                                              "state, norm layers in eval mode); the groups are the model's "
                                              "PARAM_GROUPS, e.g. encoder, decoder, head")
    early_stopping: EarlyStoppingConfig | None = Field(None, description="stop after `patience` epochs whose "
                                                       "validation loss did not improve by more than min_delta; "
                                                       "null: run every epoch")
    min_lr_ratio: float = Field(0.0, ge=0, lt=1, description="floor of the cosine schedule, as a fraction of "
                                                             "training.lr")
    resume_from: str = Field("", description="continue an earlier run's checkpoint (with changed loss.params, "
                                             "freeze or early_stopping): its last.pt; empty: a new run")

    _finite_lr = field_validator("lr", "weight_decay", "grad_clip", "warmup_ratio", "min_lr_ratio")(_finite)


class OutputConfig(Section):
    dir: str = Field("outputs", description="folder for figures and sample predictions, inside the run folder")
    log_file: str = Field("train_log.txt", description="text log in the research code's format, inside the run folder")
    tensorboard: bool = Field(True, description="write TensorBoard event files into <run folder>/tensorboard "
                                                "(per-step and per-epoch loss terms, lr, samples/s, sample "
                                                "figures, hyper-parameters): tensorboard --logdir $CRRECON_HOME/runs")

    _confined = field_validator("dir", "log_file")(_inside_run_folder)
    _not_reserved = field_validator("log_file")(lambda value: _not_a_run_file(value))
    _apart = model_validator(mode="after")(lambda self: _log_outside_output_dir(self))


class RunConfig(Section):
    """A whole run: the research code's YAML structure, validated (constructor parameters included) and never
    changed."""

    seed: int = Field(0, description="seeds the initialization and the shuffling")
    data: DataConfig = Field(DataConfig(), description="batches, augmentation (symmetry images), the split, the "
                                                       "input encoding and the spectral bins")
    model: ModelConfig = Field(ModelConfig(), description="the surrogate network: a registered model and its "
                                                          "constructor parameters")
    loss: LossConfig = Field(LossConfig(), description="the training objective: a registered loss (named, "
                                                       "weighted terms) and its weights")
    training: TrainingConfig = Field(TrainingConfig(), description="optimizer (AdamW), schedule (warmup + cosine), "
                                                                   "clipping, precision, checkpoints, init weights")
    output: OutputConfig = Field(OutputConfig(), description="what the run writes besides checkpoints: figures, "
                                                             "the text log, TensorBoard")

    @model_validator(mode="after")
    def _registered(self) -> RunConfig:
        """The names are registered, the params bind to their constructors, and a model's out_len is the data's:
        checked here so that no RunConfig exists that would fail only when the model is built."""
        from crrecon_pipeline.losses import LOSSES
        from crrecon_pipeline.models import MODELS

        _check_params("model", self.model.name, self.model.params, MODELS)
        _check_params("loss", self.loss.name, self.loss.params, LOSSES)
        _check_freeze(self.model.name, self.training.freeze, MODELS)
        out_len = self.model.params.get("out_len")
        if out_len is not None and out_len != self.data.out_len:
            raise ConfigError(f"model.params.out_len: {out_len} differs from data.out_len {self.data.out_len}")
        return self

    @classmethod
    def from_dict(cls, config: Any, source: str = "config") -> RunConfig:
        """A plain mapping (a YAML file, config.json, a checkpoint's config) validated, every default filled in;
        a one-line ConfigError `source: dotted.key: problem` otherwise."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(config).__name__}")
        try:
            return cls.model_validate(dict(config))
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_describe(exc.errors()[0])}") from None

    def to_dict(self) -> dict:
        """Plain data (a fresh copy) for checkpoints, config.json, JSON metadata and the torchrun ranks' YAML."""
        return self.model_dump()

    def flat(self) -> dict:
        """{'training.epochs': 30, 'model.params.d_model': 64, ...}: the dotted keys with their values."""
        return flatten(self.to_dict())

    def with_overrides(self, changes: Mapping[str, Any], source: str = "config") -> RunConfig:
        """A NEW validated config with each dotted key of `changes` set to its value; this one is left as it is."""
        config = self.to_dict()
        for key, value in changes.items():
            assign_dotted(config, key, value, f"{source}: {key}")
        return RunConfig.from_dict(config, source)

    def replaced(self, key: str, value: Any, source: str = "config") -> RunConfig:
        """A NEW validated config with one dotted key changed (`replaced("training.init_from", path)`)."""
        return self.with_overrides({key: value}, source)


# ---------------------------------------------------------------------------------------------------- validation

def _describe(error: dict) -> str:
    if not error["loc"]:  # RunConfig's own check: its message starts with the dotted key
        return error["msg"].removeprefix("Value error, ")
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] in ("model_type", "dict_type"):
        return f"{key}: must be a section (a mapping of keys), got {error['input']!r}"[:300]
    return f"{key}: {msg} (got {error['input']!r})"[:300]


def describe_error(error: dict) -> str:
    """One pydantic error as `dotted.key: problem` (from_dict names the first; `crrecon import` lists them all)."""
    return _describe(error)


def _check_params(section: str, name: str, params: dict, registry: Registry) -> None:
    if name not in registry:
        raise ConfigError(f"{section}.name: {registry.unknown(name)}")
    signature = inspect.signature(registry[name])
    accepted = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in params:
        if key not in {p.name for p in accepted}:
            raise ConfigError(f"{section}.params.{key}: not a parameter of {section} {name} "
                              f"(accepted: {', '.join(p.name for p in accepted)})")
    try:
        signature.bind(**params)
    except TypeError as exc:
        raise ConfigError(f"{section}.params: {exc} for {section} {name}") from None


def _check_freeze(name: str, groups: list[str], registry: Registry) -> None:
    declared = getattr(registry[name], "PARAM_GROUPS", {})
    for group in groups:
        if group not in declared:
            raise ConfigError(f"training.freeze: unknown group {group!r} of model {name} "
                              f"(its groups: {', '.join(declared) or 'none'})")


def validate(config: Mapping | BaseModel, source: str = "config") -> RunConfig:
    """The validated RunConfig of a mapping, of the launchpad's dg.Config or of a RunConfig (checked again);
    ConfigError naming the dotted key otherwise."""
    if isinstance(config, BaseModel):
        config = config.model_dump()
    return RunConfig.from_dict(config, source)


# ---------------------------------------------------------------------------------------------------- loading

def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("crrecon_pipeline").joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """A packaged preset's YAML (works from a wheel: package data, read when asked for)."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r} (one of {preset_names()})")
    return resources.files("crrecon_pipeline").joinpath("presets", f"{name}.yaml").read_text()


class DuplicateKey(Exception):
    def __init__(self, path: str, line: int):
        super().__init__(path, line)
        self.path, self.line = path, line


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one silently), naming
    its dotted path; the path of each mapping is tracked from the key that leads to it."""

    def construct_mapping(self, node, deep=False):
        prefix = getattr(node, "_dotted", "")
        seen = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            dotted = f"{prefix}{key}"
            if key in seen:
                raise DuplicateKey(dotted, key_node.start_mark.line + 1)
            seen.add(key)
            if isinstance(value_node, yaml.MappingNode):
                value_node._dotted = f"{dotted}."
        return super().construct_mapping(node, deep)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc.path} is given twice (line {exc.line}); keep one") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML ({' '.join(str(exc).split())[:200]})") from None


def assign_dotted(config: dict, key: str, value: Any, label: str) -> dict:
    """Set `training.epochs` in a plain (not yet validated) mapping, in place; `label` starts the error lines."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{label}: not a dotted key like training.epochs")
    node = config
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{label}: {'.'.join(parts[:depth + 1])} is not a section")
    node[parts[-1]] = value
    return config


def set_dotted(config: dict, assignment: str) -> dict:
    """Apply `training.epochs=4` in place (the value is parsed as YAML: numbers, booleans, lists)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = (s.strip() for s in assignment.split("=", 1))
    return assign_dotted(config, key, _parse_yaml(raw, f"--set {key}"), f"--set {key}")


def read_config(path: str | Path) -> tuple[dict, str]:
    """(raw mapping, source name) from a YAML file, or from a packaged preset given by name (`quick`)."""
    p = Path(path)
    if p.is_file():
        text, source = p.read_text(), str(p)
    elif p.suffix == "" and p.name == str(path) and p.name in preset_names():
        text, source = preset_text(p.name), f"preset {p.name}"
    else:
        raise FileNotFoundError(f"{p}: config file not found (or a preset name: {', '.join(preset_names())})")
    loaded = _parse_yaml(text, source)
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(loaded).__name__}")
    return loaded, source


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A preset (a YAML path, or a packaged preset's name) over the defaults, then the --set overrides, validated
    once as a whole (an override may repair what the file alone would fail on)."""
    config, source = read_config(path) if path is not None else ({}, "config")
    config = copy.deepcopy(config)
    for item in overrides:
        set_dotted(config, item)
    return validate(config, source)


def preset_with_overrides(preset: str, overrides: Mapping) -> dict:
    """A packaged preset's values with `overrides` (nested, as the launchpad gives them) on top, key by key; a
    `model.name` or `loss.name` other than the preset's drops the preset's `params` (they belong to the other
    entry: only the params given apply). Plain data: the caller validates the result once (RunConfig)."""
    merged = copy.deepcopy(read_config(preset)[0])
    for section in ("model", "loss"):
        given, base = overrides.get(section), merged.get(section)
        if isinstance(given, Mapping) and isinstance(base, dict) and "name" in given \
                and given["name"] != base.get("name"):
            base.pop("params", None)
    return _merged(merged, overrides)


def _merged(base: dict, overrides: Mapping) -> dict:
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = _merged(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def flatten(config: dict, prefix: str = "") -> dict:
    """{'training.epochs': 30, 'model.params.d_model': 64, ...}: dotted keys for comparing two configs."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def differing_keys(a: dict, b: dict) -> list[str]:
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
