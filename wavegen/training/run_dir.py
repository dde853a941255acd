"""A training run's folder: the one place that knows its files, and `load_run`.

    RUN_DIR/
      config.yaml          the settings as Hydra resolved them (for people; nothing reads
                           it to find the dataset, which the checkpoints record)
      metrics.jsonl        one JSON object per log point (wavegen.training.metrics)
      checkpoints/<step>/  orbax: state (parameters, optimizer, EMA), meta (the model
                           config, the dataset's spec and the data config), data (the
                           training iterator's position)
      eval/                evaluate.py's reports

`load_run(path, step, use_ema)` is how sampling, evaluation and the listening page get a
trained model: the model config and the dataset's spec come from the checkpoint's meta,
and only the parameters asked for (the EMA or the raw ones) are read, without the
optimizer's state and without the training step's code.

One default step for every reader, `best`: the checkpoint chosen on validation is the one
to listen to and the one to report; a run with no validation score yet falls back to its
latest checkpoint, and says so. One EMA rule (`uses_ema`): the EMA exactly when the run
kept one, unless asked otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from wavegen.data.dataset import DatasetSpec
from wavegen.model import wavenet as model_lib
from wavegen.training import checkpoints as ckpt_lib
from wavegen.training import metrics as run_metrics
from wavegen.training.checkpoints import CheckpointError

log = logging.getLogger("wavegen.run")

CHECKPOINTS = "checkpoints"
CONFIG = "config.yaml"
METRICS = run_metrics.FILE_NAME
EVAL = "eval"
DEFAULT_STEP = "best"


def find(path: str) -> tuple[str, str]:
    """(run folder, its checkpoints folder) for either of them; one line when neither."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(os.path.join(path, CHECKPOINTS)):
        return path, os.path.join(path, CHECKPOINTS)
    if os.path.basename(path) == CHECKPOINTS and os.path.isdir(path):
        return os.path.dirname(path), path
    raise CheckpointError(f"no checkpoint at {path}: expected a training run folder "
                          f"holding {CHECKPOINTS}/")


def resolve_step(ckpts: ckpt_lib.Checkpoints, which: str | int) -> int:
    """`best`, `latest` or a step number -> a step; `best` with no validation score yet
    is the latest step (logged)."""
    if which == "best" and ckpts.steps() and ckpts.best_step() is None:
        step = ckpts.resolve("latest")
        log.warning("%s: no checkpoint has a validation score yet; using the latest, "
                    "step %d", ckpts.directory, step)
        return step
    return ckpts.resolve(which)


def uses_ema(kept: bool, use_ema: bool | None, run_dir: str) -> bool:
    """The one EMA rule: the EMA exactly when the run kept one (use_ema=None), or as
    asked; asking for an EMA the run did not keep is refused."""
    if use_ema and not kept:
        raise CheckpointError(f"{run_dir} kept no EMA of its parameters (trained with "
                              "optim.ema_decay=0); use use_ema=false")
    return kept if use_ema is None else bool(use_ema)


def data_config(run_dir: str, meta: dict) -> dict:
    """The run's data config (`dir`, `train_split`, `eval_split`, ...) as its checkpoint
    recorded it; runs saved before the checkpoint held it are read from their config.yaml
    (the train split from the stream they recorded)."""
    data = dict(meta.get("data") or {})
    if "eval_split" not in data:  # an older run: what its config.yaml says
        data = {**_config_yaml_data(run_dir), **data}
    data.setdefault("train_split", meta.get("stream", {}).get("train_split", "train"))
    data.setdefault("eval_split", "validation")
    return data


def _config_yaml_data(run_dir: str) -> dict:
    path = os.path.join(run_dir, CONFIG)
    if not os.path.exists(path):
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            section = (yaml.safe_load(f) or {}).get("data") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return section if isinstance(section, dict) else {}


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained model as a run folder holds it, ready for inference."""

    run_dir: str
    step: int
    meta: dict  # the checkpoint's run meta
    model_cfg: model_lib.ModelConfig  # filled from the dataset's spec
    spec: DatasetSpec
    use_ema: bool  # whether `params` are the EMA
    graphdef: Any
    params: dict  # host arrays, the model's parameters as a nested dict
    data: dict  # the run's data config (data_config)

    def model(self) -> model_lib.WaveNet:
        return nnx.merge(self.graphdef, self.params)


def load_run(path: str, step: str | int = DEFAULT_STEP,
             use_ema: bool | None = None) -> Run:
    """The model of a run folder (or its checkpoints/) at `step`, with its EMA or raw
    parameters (`uses_ema`). Only those parameters are read from the checkpoint; the
    stored arrays are compared with what the saved config builds first. Every problem is
    one CheckpointError line naming the run."""
    run_dir, ckpt_dir = find(path)
    ckpts = ckpt_lib.Checkpoints(ckpt_dir, create=False)
    try:
        n = resolve_step(ckpts, step)
        meta = ckpts.meta(n)
        try:
            spec = ckpt_lib.dataset_spec_from_meta(meta)
            model_cfg = model_lib.for_dataset(ckpt_lib.model_config_from_meta(meta), spec)
        except (TypeError, ValueError) as e:  # a meta its code cannot take
            raise CheckpointError(f"{ckpt_dir}/{n}: its config cannot build a model "
                                  f"({e})") from e
        ema = uses_ema(ckpts.kept_ema(n, meta), use_ema, run_dir)
        graphdef, template = _abstract_model(model_cfg)
        params = _restore_params(ckpts, n, template, "ema_params" if ema else "params")
    finally:
        ckpts.close()
    return Run(run_dir, n, meta, model_cfg, spec, ema, graphdef, params,
               data_config(run_dir, meta))


def _abstract_model(cfg: model_lib.ModelConfig) -> tuple[Any, dict]:
    """(graph, the parameters' shapes and dtypes as a nested dict), without computing
    any initial value."""
    model = nnx.eval_shape(lambda: model_lib.WaveNet(cfg, rngs=nnx.Rngs(params=0)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise CheckpointError("the model holds state other than parameters")
    return graphdef, nnx.to_pure_dict(params)


def _restore_params(ckpts: ckpt_lib.Checkpoints, step: int, template: dict,
                    key: str) -> dict:
    """The `key` subtree (params or ema_params) of the step's state alone, as host
    arrays, after its names, shapes and dtypes are checked against `template`."""
    ckpts.check_params(step, template, key)
    item = {key: jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), template)}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    path = os.path.join(ckpts.directory, str(step), "state")
    try:
        restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # orbax raises several types for damaged files
        raise CheckpointError(f"{ckpts.directory}/{step}: could not read its {key} "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    return restored[key]
