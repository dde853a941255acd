"""Checkpoints with orbax: train state, the data iterator's position, and what the run is.

One orbax CheckpointManager step directory holds three items:

- `state`: the TrainState pytree (parameters, optimizer state, EMA, step, RNG);
- `data`: the training iterator's position (a tf.data iterator checkpoint per process),
  so a resumed run sees exactly the batches an uninterrupted one would;
- `meta`: JSON with the model config, the dataset's spec (sample rate, bits,
  quantization, chunk/context lengths, genre names) and the run's data config (its
  dataset folder and splits), so sampling and evaluation need nothing else.

Reading a run for inference (only the parameters asked for) is
`wavegen.training.run_dir.load_run`.

Orbax writes each step into a temporary directory and renames it when complete, so a step
being written when the process dies is never listed. Kept: the last `keep_last` steps and
the best one by validation bits per sample.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from wavegen.data.dataset import DatasetSpec
from wavegen.errors import UserError
from wavegen.model.wavenet import ModelConfig

BEST_METRIC = "val_bits"


class CheckpointError(UserError):
    """A checkpoint directory that cannot be used, named in the message."""


# --------------------------------------------------------------------------------------
# The data iterator as an orbax item


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores a wavegen.input_pipeline.BatchIterator (one file set per process)."""

    def save(self, directory: epath.Path, args: "DataIteratorSave"):
        args.iterator.save(os.path.join(os.fspath(directory), _iterator_name()))

    def restore(self, directory: epath.Path, args: "DataIteratorRestore"):
        args.iterator.restore(os.path.join(os.fspath(directory), _iterator_name()))
        return args.iterator


def _iterator_name() -> str:
    return f"iterator-process{jax.process_index()}"


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    iterator: Any


# --------------------------------------------------------------------------------------


def run_meta(model_cfg: ModelConfig, spec: DatasetSpec, **extra: Any) -> dict:
    """The JSON that travels with every checkpoint."""
    return {"model_config": dataclasses.asdict(model_cfg), "dataset": spec.to_metadata(),
            **extra}


def model_config_from_meta(meta: dict) -> ModelConfig:
    return ModelConfig(**meta["model_config"])


# Optimizer keys of checkpoints written before the config keys became the field names.
_OLD_OPTIM_NAMES = {"learning_rate": "lr", "end_learning_rate": "end_lr"}


def upgraded_optim(optim: dict) -> dict:
    """A checkpoint's optimizer settings under today's names."""
    return {_OLD_OPTIM_NAMES.get(k, k): v for k, v in optim.items()}


def _path_name(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def dataset_spec_from_meta(meta: dict) -> DatasetSpec:
    return DatasetSpec.from_metadata(meta["dataset"], where="checkpoint metadata")


class Checkpoints:
    """The run's checkpoint directory (wraps an orbax CheckpointManager)."""

    def __init__(self, directory: str, keep_last: int = 3, create: bool = True):
        self.directory = os.path.abspath(directory)
        if not create and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoints at {self.directory}")
        policy = ocp.checkpoint_managers.AnyPreservationPolicy([
            ocp.checkpoint_managers.LatestN(n=keep_last),
            ocp.checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC],
                                          reverse=True, n=1,
                                          keep_checkpoints_without_metrics=False),
        ])
        # best_fn only makes orbax write each step's metrics (the policy decides).
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=lambda m: m[BEST_METRIC], best_mode="min",
            create=create, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler(),
                           "data": DataIteratorHandler()})

    # -- what is there

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the lowest validation bits/sample among those kept."""
        best = None
        for step in self.steps():
            m = self.metrics(step)
            if m and BEST_METRIC in m and (best is None or m[BEST_METRIC] < best[1]):
                best = (step, m[BEST_METRIC])
        return best[0] if best else None

    def metrics(self, step: int) -> dict | None:
        return self.manager.metrics(step)

    def resolve(self, which: str | int) -> int:
        """'latest', 'best' or a step number -> an existing step, or one clear error."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if which == "latest":
            return steps[-1]
        if which == "best":
            best = self.best_step()
            if best is None:
                raise CheckpointError(f"{self.directory}: no checkpoint has a validation "
                                      "score to pick the best by; use step=latest")
            return best
        try:
            step = int(which)
        except (TypeError, ValueError):
            raise CheckpointError(f"step must be latest, best or a number, got {which!r}")
        if step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint at step {step}; "
                                  f"there are {', '.join(map(str, steps))}")
        return step

    def meta(self, step: int) -> dict:
        """The run's JSON (model config, dataset spec) without loading any arrays."""
        path = os.path.join(self.directory, str(step), "meta", "metadata")
        if not os.path.exists(path):
            raise CheckpointError(f"{self.directory}/{step} has no config (meta) item: not "
                                  "a wavegen checkpoint")
        with open(path) as f:
            meta = json.load(f)
        if "model_config" not in meta or "dataset" not in meta:
            raise CheckpointError(f"{path}: lacks the model config or the dataset spec")
        return meta

    def stored_arrays(self, step: int) -> dict[str, tuple]:
        """Name -> (shape, dtype) of every array in step's state, from its metadata (no
        array is read); a damaged step is one CheckpointError."""
        try:
            stored = self.manager.item_metadata(step)["state"]
            return {_path_name(p): (tuple(m.shape), np.dtype(m.dtype))
                    for p, m in jax.tree_util.tree_flatten_with_path(stored)[0]}
        except Exception as e:  # orbax raises several types for a damaged step
            raise CheckpointError(f"{self.directory}/{step}: unreadable array metadata "
                                  f"({type(e).__name__})") from e

    def kept_ema(self, step: int, meta: dict) -> bool:
        """Whether the run kept an EMA of its parameters: the meta's `ema` flag; for runs
        that did not record it, whether EMA arrays are stored."""
        if "ema" in meta:
            return bool(meta["ema"])
        return any(k.startswith("ema_params.") for k in self.stored_arrays(step))

    def check_arrays(self, step: int, target: Any) -> None:
        """Refuses, in one line and before reading any array, a checkpoint whose stored
        arrays differ in names, shapes or dtypes from `target` (what its config makes)."""
        self._compare(step, self.stored_arrays(step), _shapes(target))

    def check_params(self, step: int, template: Any, key: str = "params") -> None:
        """`check_arrays` for the `key` subtree of the state alone (params, ema_params)."""
        have = {k: v for k, v in self.stored_arrays(step).items()
                if k.startswith(key + ".")}
        self._compare(step, have, _shapes({key: template}))

    def _compare(self, step: int, have: dict, want: dict) -> None:
        names = sorted(set(have) | set(want), key=lambda k: (not k.startswith("params."), k))
        problems = [f"{k}: stored {'missing' if k not in have else _fmt(have[k])}, the "
                    f"config makes {'nothing' if k not in want else _fmt(want[k])}"
                    for k in names if have.get(k) != want.get(k)]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise CheckpointError(f"{self.directory}/{step} does not match its model "
                                  f"config: {'; '.join(problems[:3])}{more}")

    # -- saving and restoring

    def save(self, step: int, state: Any, meta: dict, iterator=None,
             metrics: dict | None = None) -> None:
        """Saves (host or device) `state` at `step`; waits until it is on disk."""
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if iterator is not None:
            items["data"] = DataIteratorSave(iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                          force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, target: Any, iterator=None) -> tuple[Any, dict]:
        """(state shaped like `target`, meta); restores `iterator`'s position if given."""
        self.check_arrays(step, target)
        items = {"state": ocp.args.StandardRestore(target), "meta": ocp.args.JsonRestore()}
        if iterator is not None:
            if not os.path.isdir(os.path.join(self.directory, str(step), "data")):
                raise CheckpointError(f"{self.directory}/{step} holds no data-iterator "
                                      "position")
            items["data"] = DataIteratorRestore(iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["meta"]

    def close(self):
        self.manager.close()


def _shapes(tree: Any) -> dict[str, tuple]:
    return {_path_name(p): (tuple(np.shape(x)), np.dtype(x.dtype))
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _fmt(shape_dtype) -> str:
    shape, dtype = shape_dtype
    return f"{shape} {dtype}"

