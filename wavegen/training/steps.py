"""Data-parallel training and evaluation steps (jax.pmap over all local devices).

The shape follows the Flax examples: small pure functions `create_learning_rate_fn`,
`make_optimizer`, `create_train_state`, `train_step`, `eval_step`, `compute_metrics`, and
pmapped wrappers. The model is split once with `nnx.split`: its GraphDef stays static
(closed over by the steps) and the parameters travel as a plain nested dict of arrays
inside `TrainState`, a pytree that checkpoints as is.

`train_step` is the per-device function: it sees one device's shard of the batch, and the
only cross-device communication is `jax.lax.pmean` over `axis_name` (gradients and
metrics), so it runs unchanged under `jax.pmap` or `shard_map`.

The loss of one example: the model reads window[:-1] (RF - 1 + T samples) and its last T
outputs are scored against window[RF:]; see `wavegen.data.input_pipeline` for the window.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from wavegen.data import input_pipeline
from wavegen.data.dataset import load_dataset_spec
from wavegen.model.wavenet import ModelConfig, WaveNet, receptive_field, receptive_field_ms

AXIS = "batch"
LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, cosine decay and global-norm clipping (+ optional EMA)."""

    learning_rate: float = 1e-3  # peak, reached after warmup
    warmup_steps: int = 1000
    total_steps: int = 200_000  # the cosine reaches end_learning_rate here
    end_learning_rate: float = 1e-5
    weight_decay: float = 1e-4  # on weight matrices only (not biases)
    clip_norm: float = 1.0  # global gradient norm; 0 = no clipping
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    ema_decay: float = 0.0  # 0 = no EMA of the parameters; e.g. 0.9999

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.total_steps <= self.warmup_steps:
            raise ValueError(f"the warmup must end before the schedule does: need 0 <= "
                             f"warmup_steps < total_steps, got warmup_steps="
                             f"{self.warmup_steps}, total_steps={self.total_steps} (set "
                             "optim.warmup_steps, optim.total_steps or train.steps)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.clip_norm < 0 or self.weight_decay < 0:
            raise ValueError("clip_norm and weight_decay must be >= 0")


@struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree of arrays (checkpoint as is).

    `rng` is raw key data (uint32[2]); step keys are `fold_in(rng, step)`, so the state
    never needs a new key to continue.
    """

    step: jax.Array
    params: dict
    opt_state: Any
    ema_params: dict | None
    rng: jax.Array


# --------------------------------------------------------------------------------------
# Set-up


def check_compatible(model_cfg: ModelConfig, spec) -> None:
    """Refuses, before any step, a model that cannot train on the dataset (one error)."""
    problems = []
    rf = receptive_field(model_cfg)
    if rf > spec.context_samples:
        problems.append(
            f"the model's receptive field of {rf} samples "
            f"({receptive_field_ms(model_cfg, spec.sample_rate):.1f} ms at "
            f"{spec.sample_rate} Hz) exceeds the dataset's context of {spec.context_samples} "
            f"samples per chunk (re-run the pipeline with --context_samples >= {rf}, or use "
            "a smaller model)")
    if model_cfg.num_classes != spec.num_classes:
        problems.append(f"the model has {model_cfg.num_classes} classes but the dataset has "
                        f"2**{spec.bits} = {spec.num_classes}")
    if model_cfg.num_genres not in (0, len(spec.genres)):
        problems.append(f"the model has {model_cfg.num_genres} genres but the dataset has "
                        f"{len(spec.genres)} ({', '.join(spec.genres)})")
    if problems:
        raise ValueError("model and dataset are incompatible: " + "; ".join(problems))


def create_learning_rate_fn(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then cosine decay to end_learning_rate."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps, end_value=cfg.end_learning_rate)


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig,
                   learning_rate_fn: optax.Schedule | None = None
                   ) -> optax.GradientTransformation:
    lr = learning_rate_fn or create_learning_rate_fn(cfg)
    adamw = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                        mask=_decay_mask)
    if cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
    return adamw


def split_model(model: WaveNet) -> tuple[nnx.GraphDef, dict]:
    """(static graph, parameters as a plain nested dict of arrays)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("the model holds state other than parameters; not supported here")
    return graphdef, nnx.to_pure_dict(params)


def merge_model(graphdef: nnx.GraphDef, params: dict) -> WaveNet:
    return nnx.merge(graphdef, params)


def create_train_state(model_cfg: ModelConfig, optim_cfg: OptimConfig,
                       seed: int = 0) -> tuple[nnx.GraphDef, TrainState]:
    """A fresh model's graph and its (unreplicated) train state."""
    model = WaveNet(model_cfg, rngs=nnx.Rngs(params=seed))
    graphdef, params = split_model(model)
    opt_state = make_optimizer(optim_cfg).init(params)
    ema = jax.tree.map(jnp.copy, params) if optim_cfg.ema_decay else None
    rng = jax.random.key_data(jax.random.key(seed + 1))
    return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                opt_state=opt_state, ema_params=ema, rng=rng)


def train_iterator(data_dir: str, model_cfg: ModelConfig, *, per_device_batch: int,
                   targets: int | None = None, seed: int = 0, shuffle_buffer: int = 512,
                   **kwargs) -> input_pipeline.BatchIterator:
    """The training batches for this model and run, after `check_compatible`.

    kwargs go to `input_pipeline.train_batches` (split, num_devices, process_index, ...).
    """
    check_compatible(model_cfg, load_dataset_spec(data_dir))
    return input_pipeline.train_batches(
        data_dir, receptive_field=receptive_field(model_cfg),
        per_device_batch=per_device_batch, targets=targets, seed=seed,
        shuffle_buffer=shuffle_buffer, **kwargs)


# --------------------------------------------------------------------------------------
# Steps (pure, per device)


def model_loss(model: WaveNet, batch: dict) -> jax.Array:
    """Bits per target, (per_device, T): the last T outputs against window[RF:]."""
    rf = receptive_field(model.cfg)
    audio = batch["audio"]
    if audio.shape[-1] <= rf:
        raise ValueError(f"windows of {audio.shape[-1]} samples leave no targets for a "
                         f"receptive field of {rf}")
    genre = batch["genre"] if model.cfg.num_genres else None
    outputs = model(audio[:, :-1], genre)[:, rf - 1:]
    return model.nll_bits(outputs, audio[:, rf:])


def compute_metrics(bits: jax.Array, axis_name: str | None = AXIS,
                    **extra: jax.Array) -> dict[str, jax.Array]:
    """Mean loss in bits per sample (+ extra scalars), averaged across devices."""
    metrics = {"loss_bits": jnp.mean(bits), **extra}
    if axis_name is not None:
        metrics = jax.lax.pmean(metrics, axis_name)
    return metrics


def train_step(state: TrainState, batch: dict, *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, learning_rate_fn: optax.Schedule,
               ema_decay: float = 0.0, axis_name: str | None = AXIS
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on this device's shard; gradients averaged over `axis_name`.

    Every device holds the same number of targets, so the mean of the per-device means
    is the global mean and the step equals one single-device step on the global batch.
    """

    def loss_fn(params):
        bits = model_loss(merge_model(graphdef, params), batch)
        return jnp.mean(bits) * LN2, bits  # nats for the gradient, bits for the metrics

    (_, bits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay and ema is not None:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params)
    metrics = compute_metrics(bits, axis_name, grad_norm=grad_norm,
                              learning_rate=learning_rate_fn(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         ema_params=ema), metrics


def eval_step(params: dict, batch: dict, *, graphdef: nnx.GraphDef,
              axis_name: str | None = AXIS) -> dict[str, jax.Array]:
    """Summed NLL bits and target count over the real (mask=1) examples of the batch."""
    bits = model_loss(merge_model(graphdef, params), batch)
    weights = batch["mask"][:, None] * jnp.ones_like(bits)
    sums = {"nll_bits_sum": jnp.sum(bits * weights), "targets": jnp.sum(weights)}
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    return sums


# --------------------------------------------------------------------------------------
# Data-parallel wrappers


def make_p_train_step(graphdef: nnx.GraphDef, optim_cfg: OptimConfig) -> Callable:
    """jax.pmap'd train_step(state, batch) -> (state, metrics); the state is donated."""
    lr_fn = create_learning_rate_fn(optim_cfg)
    step = functools.partial(train_step, graphdef=graphdef, tx=make_optimizer(optim_cfg, lr_fn),
                             learning_rate_fn=lr_fn, ema_decay=optim_cfg.ema_decay,
                             axis_name=AXIS)
    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))


def make_p_eval_step(graphdef: nnx.GraphDef) -> Callable:
    """jax.pmap'd eval_step(params, batch) -> summed {nll_bits_sum, targets}."""
    return jax.pmap(functools.partial(eval_step, graphdef=graphdef, axis_name=AXIS),
                    axis_name=AXIS)


def replicate(tree: Any, devices: list | None = None) -> Any:
    """One copy per local device, stacked on a new leading axis (what pmap expects)."""
    devices = list(devices or jax.local_devices())
    mesh = jax.sharding.Mesh(np.array(devices), (AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))

    def put(x):
        x = np.asarray(x)
        return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape), sharding)

    return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of every leaf."""
    return jax.tree.map(lambda x: x[0], tree)


# --------------------------------------------------------------------------------------
# Evaluation over a split


def evaluate(p_eval_step: Callable, params: Any, batches: Iterable[dict],
             num_classes: int, receptive_field_samples: int) -> dict[str, float]:
    """NLL (bits/sample) over the batches, and the unigram baseline on the same targets.

    `params` are replicated. The baseline is the entropy of the evaluated targets' bin
    histogram: the best a model ignoring context can do on them.
    """
    nll, count = 0.0, 0.0
    hist = np.zeros(num_classes, np.int64)
    for batch in batches:
        sums = p_eval_step(params, batch)
        nll += float(sums["nll_bits_sum"][0])
        count += float(sums["targets"][0])
        real = batch["mask"].reshape(-1) > 0
        targets = batch["audio"].reshape(real.size, -1)[real, receptive_field_samples:]
        hist += np.bincount(targets.reshape(-1), minlength=num_classes)
    if jax.process_count() > 1:  # every process saw its own part of the split
        from jax.experimental import multihost_utils

        hist = np.asarray(multihost_utils.process_allgather(hist)).sum(axis=0)
    if count == 0:
        raise ValueError("evaluation saw no targets (an empty split?)")
    return {"nll_bits": nll / count, "unigram_bits": input_pipeline.entropy_bits(hist),
            "targets": count}


def evaluate_split(graphdef: nnx.GraphDef, params: Any, data_dir: str, *,
                   split: str = "validation", per_device_batch: int = 4,
                   max_batches: int | None = None,
                   p_eval_step: Callable | None = None) -> dict[str, float]:
    """`evaluate` over a dataset split, with replicated `params` (e.g. state.params)."""
    model_cfg = merge_model(graphdef, unreplicate(params)).cfg
    rf = receptive_field(model_cfg)
    batches = input_pipeline.eval_batches(data_dir, receptive_field=rf,
                                          per_device_batch=per_device_batch, split=split,
                                          max_batches=max_batches)
    return evaluate(p_eval_step or make_p_eval_step(graphdef), params, batches,
                    model_cfg.num_classes, rf)
