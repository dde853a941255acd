"""Structured-config schemas: they type and validate the YAML tree in this folder.

A mistyped key or a value of the wrong type fails at start with Hydra's message, e.g.
`Key 'stepz' not in 'TrainSchema'` or `Value 'ten' of type 'str' could not be converted
to Integer`. The entry points turn a validated config into wavegen's plain dataclasses
(`to_train_job`, `to_sample_config`); the library never sees Hydra.

One home for every default: the schemas are built from the library's own dataclasses
(`ModelConfig`, `OptimConfig`, `RunConfig`, `SampleConfig`), so a field and its default
live there and nowhere else; the YAML files only select and override. Print the composed
configuration with `python experiments/train.py --cfg job ...`. Model sizes are presets
of ModelConfig (`model=small`) whose fields can all be overridden
(`model.residual_channels=96`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from wavegen.model import wavenet as model_lib
from wavegen.generation.sampler import SampleConfig
from wavegen.training.steps import OptimConfig
from wavegen.training.loop import RunConfig

# Keys of the `data` group: RunConfig fields under their Hydra names.
DATA_KEYS = {"dir": "data_dir", "train_split": "train_split", "eval_split": "eval_split",
             "shuffle_buffer": "shuffle_buffer"}
# Keys of the `optim` group: OptimConfig fields under shorter Hydra names.
OPTIM_KEYS = {"lr": "learning_rate", "warmup_steps": "warmup_steps",
              "total_steps": "total_steps", "end_lr": "end_learning_rate",
              "weight_decay": "weight_decay", "clip_norm": "clip_norm", "b1": "b1", "b2": "b2",
              "eps": "eps", "ema_decay": "ema_decay"}
# Required by the library, given a default for the command line.
TRAIN_DEFAULTS = {"steps": 10_000, "batch_size": 16}


def _base_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _schema(name: str, cls: type, keys: dict[str, str], *, optional: bool = False,
            defaults: dict[str, Any] | None = None, extra: tuple = ()) -> type:
    """A dataclass whose fields are `cls`'s (renamed by `keys`: schema key -> field), with
    the same types and defaults; `optional` makes every field Optional with None.
    `extra`: (name, type, default) fields put first."""
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    fields = [(n, t, dataclasses.field(default=d)) for n, t, d in extra]
    for key, field_name in keys.items():
        f, hint = by_name[field_name], hints[field_name]
        if optional:
            fields.append((key, Optional[_base_type(hint)], dataclasses.field(default=None)))
            continue
        if defaults and key in defaults:
            default = defaults[key]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = MISSING
        if default is None or typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = Optional[_base_type(hint)]
        fields.append((key, hint, dataclasses.field(default=default)))
    return dataclasses.make_dataclass(name, fields)


def _same_names(cls: type, exclude=()) -> dict[str, str]:
    return {f.name: f.name for f in dataclasses.fields(cls) if f.name not in exclude}


DataSchema = _schema("DataSchema", RunConfig, DATA_KEYS)
# preset + every ModelConfig field as an optional override (None: the preset's value).
ModelSchema = _schema("ModelSchema", model_lib.ModelConfig, _same_names(model_lib.ModelConfig),
                      optional=True, extra=(("preset", str, "small"),))
OptimSchema = _schema("OptimSchema", OptimConfig, OPTIM_KEYS,
                      defaults={"total_steps": None})  # None: train.steps
TrainSchema = _schema("TrainSchema", RunConfig,
                      _same_names(RunConfig, exclude=set(DATA_KEYS.values())),
                      defaults=TRAIN_DEFAULTS)
SampleSchema = _schema("SampleSchema", SampleConfig, _same_names(SampleConfig))


@dataclasses.dataclass
class TrainJob:
    data: Any = dataclasses.field(default_factory=DataSchema)
    model: Any = dataclasses.field(default_factory=ModelSchema)
    optim: Any = dataclasses.field(default_factory=OptimSchema)
    train: Any = dataclasses.field(default_factory=TrainSchema)


def register() -> None:
    """Registers the training schemas with Hydra's ConfigStore (before @hydra.main)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainJob)
    cs.store(group="model", name="schema", node=ModelSchema)


def register_sample() -> None:
    ConfigStore.instance().store(name="sample_schema", node=SampleSchema)


def _container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def model_config(cfg: DictConfig) -> model_lib.ModelConfig:
    """The model section -> a ModelConfig: the preset with the non-null fields on top."""
    section = _container(cfg)
    name = section.pop("preset")
    return model_lib.preset(name, **{k: v for k, v in section.items() if v is not None})


def optim_config(cfg: DictConfig, steps: int) -> OptimConfig:
    o = _container(cfg)
    kw = {field: o[key] for key, field in OPTIM_KEYS.items()}
    kw["total_steps"] = kw["total_steps"] or steps
    return OptimConfig(**kw)


def run_config(cfg: DictConfig) -> RunConfig:
    data = {field: v for key, v in _container(cfg.data).items()
            for k, field in DATA_KEYS.items() if k == key}
    return RunConfig(**data, **_container(cfg.train))


def to_train_job(cfg: DictConfig) -> tuple[model_lib.ModelConfig, OptimConfig, RunConfig]:
    """A validated training config -> (ModelConfig, OptimConfig, RunConfig)."""
    return model_config(cfg.model), optim_config(cfg.optim, cfg.train.steps), run_config(cfg)


def to_sample_config(cfg: DictConfig) -> SampleConfig:
    return SampleConfig(**_container(cfg))
