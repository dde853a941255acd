"""Hydra's view of wavegen's config dataclasses: the dataclasses are the schemas.

The config groups are the library's own dataclasses, registered with Hydra's ConfigStore
under their keys, one name per key everywhere (YAML, command line, dataclass field):

- `data`  = `wavegen.training.loop.DataConfig`   (data.dir, data.train_split, ...)
- `optim` = `wavegen.training.steps.OptimConfig` (optim.lr, optim.end_lr, ...)
- `train` = `wavegen.training.loop.RunConfig`    (train.steps, train.batch_size, ...)
- `model` = a preset name plus every `wavegen.model.wavenet.ModelConfig` field as an
  optional override (`model=small model.residual_channels=96`); one option per preset in
  `wavegen.model.wavenet.PRESETS`
- sampling's top level = `wavegen.generation.sampler.SampleConfig`, evaluation's
  `wavegen.training.evaluation.EvalConfig`

So every default lives in one dataclass and no YAML file retypes it; the YAML files under
`configs/` hold values only (the entry points' Hydra settings, the experiments). A
mistyped key or a value of the wrong type fails at start with Hydra's message, e.g.
`Key 'stepz' not in 'RunConfig'`. Print the composed configuration with
`python experiments/train.py --cfg job ...`. The entry points turn a composed config into
the dataclasses (`to_train_job`, `to_sample_config`); the library never sees Hydra.

Paths: `~` in every path setting (`PATH_KEYS`) is expanded where the settings become the
dataclasses; on the command line before Hydra parses it (`expand_user_in_argv`: Hydra's
grammar refuses an unquoted `~`, and it makes `hydra.run.dir` before any wavegen code
runs); and in sampling's run directory, its `output_dir`, through the `expanduser`
resolver. So `output_dir=~/x` writes into the home folder, never into a folder named `~`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from wavegen.errors import UserError
from wavegen.generation.sampler import SampleConfig
from wavegen.model import wavenet as model_lib
from wavegen.training.evaluation import EvalConfig
from wavegen.training.loop import DataConfig, RunConfig
from wavegen.training.steps import OptimConfig


def _model_schema() -> type:
    """`preset` + every ModelConfig field as Optional with None (None: the preset's)."""
    hints = typing.get_type_hints(model_lib.ModelConfig)
    fields = [("preset", str, dataclasses.field(default="small"))]
    for f in dataclasses.fields(model_lib.ModelConfig):
        base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        fields.append((f.name, Optional[base[0] if base else hints[f.name]],
                       dataclasses.field(default=None)))
    return dataclasses.make_dataclass("ModelConfig", fields)


ModelSchema = _model_schema()


@dataclasses.dataclass
class TrainJob:
    data: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    train: Any = MISSING


# The settings that name files or folders, per dataclass: `~` in them is the user's home.
PATH_KEYS: dict[type, tuple[str, ...]] = {
    DataConfig: ("dir",),
    SampleConfig: ("checkpoint", "output_dir", "prime", "data_dir"),
    EvalConfig: ("checkpoint", "data_dir"),
}
# The same settings as command-line keys, with Hydra's own folders, which it makes before
# the job runs (so before the settings are read).
ARGV_PATH_KEYS = ("data.dir", "checkpoint", "output_dir", "prime", "data_dir",
                  "hydra.run.dir", "hydra.sweep.dir")


def _expanded(cls: type, values: dict) -> dict:
    for key in PATH_KEYS.get(cls, ()):
        if isinstance(values.get(key), str):
            values[key] = os.path.expanduser(values[key])
    return values


def expand_user_in_argv(argv: list[str] | None = None) -> None:
    """Expands a leading `~` in the path overrides on the command line (in place; quoted
    or not), before Hydra parses them: its override grammar refuses an unquoted `~`, and
    it makes its own folders (hydra.run.dir, sampling's output_dir) before any wavegen
    code runs. Call before the @hydra.main function."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if not eq or key.lstrip("+") not in ARGV_PATH_KEYS:
            continue
        quote = value[:1] if len(value) > 1 and value[:1] in "'\"" \
            and value.endswith(value[:1]) else ""
        inner = value[len(quote):len(value) - len(quote)]
        if inner.startswith("~"):
            argv[i] = f"{key}={quote}{os.path.expanduser(inner)}{quote}"


def _register_resolvers() -> None:
    OmegaConf.register_new_resolver("expanduser", os.path.expanduser, replace=True)


def _node(cls: type, **values: Any) -> DictConfig:
    """A structured node for `cls` that Hydra may override (frozen dataclasses make
    read-only nodes)."""
    node = OmegaConf.structured(cls(**values) if values else cls)
    OmegaConf.set_readonly(node, False)
    return node


def register() -> None:
    """Registers the training config groups with Hydra's ConfigStore (before @hydra.main)."""
    _register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainJob)
    cs.store(group="data", name="default", node=_node(DataConfig))
    cs.store(group="optim", name="adamw", node=_node(OptimConfig))
    cs.store(group="train", name="default", node=_node(RunConfig))
    for name in model_lib.PRESETS:
        cs.store(group="model", name=name, node=_node(ModelSchema, preset=name))


def register_sample() -> None:
    _register_resolvers()
    ConfigStore.instance().store(name="sample_schema", node=_node(SampleConfig))


def register_evaluate() -> None:
    _register_resolvers()
    ConfigStore.instance().store(name="evaluate_schema", node=_node(EvalConfig))


def _container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def model_config(cfg: DictConfig) -> model_lib.ModelConfig:
    """The model section -> a ModelConfig: the preset with the non-null fields on top."""
    section = _container(cfg)
    name = section.pop("preset")
    try:
        return model_lib.preset(name, **{k: v for k, v in section.items() if v is not None})
    except ValueError as e:  # ModelConfig's checks of the values given
        raise UserError(f"model={name}: {e}") from e


def to_train_job(cfg: DictConfig
                 ) -> tuple[model_lib.ModelConfig, OptimConfig, DataConfig, RunConfig]:
    """A composed training config -> (ModelConfig, OptimConfig, DataConfig, RunConfig).
    The run settings are built first, so an error names the key that is wrong."""
    run = RunConfig(**_container(cfg.train))
    data = DataConfig(**_expanded(DataConfig, _container(cfg.data)))
    optim = OptimConfig(**_container(cfg.optim))
    return model_config(cfg.model), optim, data, run


def to_sample_config(cfg: DictConfig) -> SampleConfig:
    return SampleConfig(**_expanded(SampleConfig, _container(cfg)))


def to_eval_config(cfg: DictConfig) -> EvalConfig:
    return EvalConfig(**_expanded(EvalConfig, _container(cfg)))


def one_line_error(error: BaseException) -> str:
    """What an entry point prints for a problem with the user's input (a UserError, or a
    setting left unset): one line naming it."""
    from omegaconf.errors import MissingMandatoryValue

    from wavegen.errors import one_line

    if isinstance(error, MissingMandatoryValue):
        return f"missing a required setting: {error.full_key} (e.g. {error.full_key}=...)"
    return one_line(error)
