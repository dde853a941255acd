"""Structured-config schemas: they type and validate the YAML tree in this folder.

A mistyped key or a value of the wrong type fails at start with Hydra's message, e.g.
`Key 'stepz' not in 'TrainSchema'` or `Value 'ten' of type 'str' could not be converted
to Integer`. The entry points turn a validated config into wavegen's plain dataclasses
(`to_train_job`); the library never sees Hydra.

Model sizes are presets of `wavegen.model.ModelConfig` (`model=small`), and any of its
fields can be overridden on the command line (`model.residual_channels=96`): the model
schema is built from ModelConfig's own fields, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from wavegen import model as model_lib


@dataclasses.dataclass
class DataSchema:
    dir: str = MISSING  # a dataset directory written by beam_pipelines.preprocess
    train_split: str = "train"
    eval_split: str = "validation"
    shuffle_buffer: int = 512


def _model_schema() -> type:
    """preset + every ModelConfig field as an optional override (None: the preset's)."""
    hints = typing.get_type_hints(model_lib.ModelConfig)
    fields: list[tuple[str, Any, Any]] = [("preset", str, "small")]
    for f in dataclasses.fields(model_lib.ModelConfig):
        base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)] or \
            [hints[f.name]]
        fields.append((f.name, Optional[base[0]], dataclasses.field(default=None)))
    return dataclasses.make_dataclass("ModelSchema", fields)


ModelSchema = _model_schema()


@dataclasses.dataclass
class OptimSchema:
    """AdamW with linear warmup, cosine decay and global-norm clipping; optional EMA."""

    lr: float = 1e-3
    warmup_steps: int = 200
    total_steps: Optional[int] = None  # where the cosine ends; None: train.steps
    end_lr: float = 1e-5
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    ema_decay: float = 0.0  # 0: no EMA


@dataclasses.dataclass
class TrainSchema:
    steps: int = 10_000
    batch_size: int = 16  # global: split evenly over the devices
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # the last K, plus the best by validation bits/sample
    eval_batches: Optional[int] = None  # per evaluation; None: the whole split
    eval_batch_size: Optional[int] = None  # global; None: batch_size
    targets: Optional[int] = None  # targets per example; None: the chunk's
    resume: Optional[bool] = None  # None: resume if the run dir has checkpoints
    device_count: Optional[int] = None  # None: every local device
    progress: bool = True  # the console progress bar
    # Several hosts (jax.distributed); None values come from the environment.
    distributed: bool = False
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None


@dataclasses.dataclass
class TrainJob:
    data: DataSchema = dataclasses.field(default_factory=DataSchema)
    model: Any = dataclasses.field(default_factory=ModelSchema)
    optim: OptimSchema = dataclasses.field(default_factory=OptimSchema)
    train: TrainSchema = dataclasses.field(default_factory=TrainSchema)


def register() -> None:
    """Registers the schemas with Hydra's ConfigStore (before @hydra.main runs)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainJob)
    cs.store(group="model", name="schema", node=ModelSchema)


def model_config(cfg: DictConfig) -> model_lib.ModelConfig:
    """The model section -> a ModelConfig: the preset with the non-null fields on top."""
    section = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    name = section.pop("preset")
    return model_lib.preset(name, **{k: v for k, v in section.items() if v is not None})


def optim_config(cfg: DictConfig, steps: int):
    from wavegen.train import OptimConfig

    o = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return OptimConfig(learning_rate=o["lr"], warmup_steps=o["warmup_steps"],
                       total_steps=o["total_steps"] or steps, end_learning_rate=o["end_lr"],
                       weight_decay=o["weight_decay"], clip_norm=o["clip_norm"], b1=o["b1"],
                       b2=o["b2"], eps=o["eps"], ema_decay=o["ema_decay"])


def run_config(cfg: DictConfig):
    from wavegen.trainer import RunConfig

    t = OmegaConf.to_container(cfg.train, resolve=True, throw_on_missing=True)
    d = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True)
    return RunConfig(data_dir=d["dir"], train_split=d["train_split"],
                     eval_split=d["eval_split"], shuffle_buffer=d["shuffle_buffer"], **t)


def to_train_job(cfg: DictConfig):
    """A validated training config -> (ModelConfig, OptimConfig, RunConfig)."""
    return model_config(cfg.model), optim_config(cfg.optim, cfg.train.steps), run_config(cfg)


@dataclasses.dataclass
class SampleJob:
    """experiments/sample.py's settings (mirrors wavegen.sampling.SampleConfig)."""

    checkpoint: str = MISSING
    step: str = "latest"
    seconds: float = 4.0
    num_samples: int = 4
    temperature: float = 1.0
    genre: Optional[str] = None
    each_genre: bool = False
    prime: Optional[str] = None
    prime_seconds: float = 1.0
    seed: int = 0
    use_ema: bool = False
    output_dir: str = MISSING
    chunk: int = 4000
    progress: bool = True


def register_sample() -> None:
    ConfigStore.instance().store(name="sample_schema", node=SampleJob)


def to_sample_config(cfg: DictConfig):
    from wavegen.sampling import SampleConfig

    return SampleConfig(**OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
