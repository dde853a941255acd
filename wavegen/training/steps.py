"""Data-parallel training steps (jax.pmap over all local devices).

The shape follows the Flax examples: small pure functions `create_learning_rate_fn`,
`make_optimizer`, `create_train_state`, `train_step`, `compute_metrics`, and pmapped
wrappers. The model is split once with `nnx.split`: its GraphDef stays static (closed over
by the steps) and the parameters travel as a plain nested dict of arrays inside
`TrainState`, a pytree that checkpoints as is. Evaluation (`eval_step`, `score`,
`evaluate`) is in `wavegen.training.scoring`, which knows no optimizer.

`train_step` is the per-device function: it sees one device's shard of the batch, and the
only cross-device communication is `jax.lax.pmean` over `axis_name` (gradients and
metrics), so it runs unchanged under `jax.pmap` or `shard_map`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from wavegen.errors import UserError
from wavegen.model.losses import LN2
from wavegen.model.wavenet import ModelConfig, WaveNet

# Evaluation lives in scoring (it needs no optimizer); its names are used here and
# through this module by training's callers.
from wavegen.training.scoring import (  # noqa: F401
    AXIS,
    evaluate,
    make_p_eval_step,
    merge_model,
    model_loss,
    replicate,
    score,
    unreplicate,
)

# Warmup when optim.warmup_steps is unset: this fraction of the run, at most the cap.
WARMUP_FRACTION = 0.05
WARMUP_CAP = 1000


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, cosine decay and global-norm clipping (+ optional EMA).

    The fields are Hydra's `optim.*` keys. `total_steps` None: the run's train.steps;
    `warmup_steps` None: WARMUP_FRACTION of total_steps, at most WARMUP_CAP. The loop
    fills both with `for_run(steps)`; a schedule needs them filled. `end_lr` None (the
    default): no decay, the rate stays at `lr` after warmup - a plain WaveNet's constant
    Adam rate, which learns far faster per step in runs of a few hundred steps than a
    cosine decay over the run; set it to decay by cosine to `end_lr`.
    """

    lr: float = 1e-3  # peak, reached after warmup
    warmup_steps: int | None = None
    total_steps: int | None = None  # the cosine reaches end_lr here
    end_lr: float | None = None  # None: no decay (lr throughout after warmup)
    weight_decay: float = 1e-4  # on weight matrices only (see decay_mask)
    clip_norm: float = 1.0  # global gradient norm; 0 = no clipping
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    ema_decay: float = 0.0  # 0 = no EMA of the parameters; e.g. 0.9999

    def __post_init__(self):
        for name in ("lr", "end_lr", "eps"):
            value = getattr(self, name)
            if name == "end_lr" and (value is None or value == 0):
                continue
            if not (_finite(value) and value > 0):
                raise UserError(f"optim.{name} must be a positive finite number, got {value!r}")
        for name in ("weight_decay", "clip_norm"):
            value = getattr(self, name)
            if not (_finite(value) and value >= 0):
                raise UserError(f"optim.{name} must be a finite number >= 0, got {value!r}")
        for name in ("b1", "b2", "ema_decay"):
            value = getattr(self, name)
            if not (_finite(value) and 0 <= value < 1):
                raise UserError(f"optim.{name} must be in [0, 1), got {value!r}")
        if self.total_steps is not None and self.total_steps < 1:
            raise UserError(f"optim.total_steps must be >= 1 (or null: train.steps), "
                            f"got {self.total_steps}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise UserError(f"optim.warmup_steps must be >= 0 (or null: automatic), "
                            f"got {self.warmup_steps}")
        if (self.warmup_steps is not None and self.total_steps is not None
                and self.warmup_steps >= self.total_steps):
            raise UserError(f"optim.warmup_steps={self.warmup_steps} must be less than "
                            f"optim.total_steps={self.total_steps} (the schedule's length; "
                            "null: train.steps); lower optim.warmup_steps or leave it null")

    def for_run(self, steps: int) -> "OptimConfig":
        """total_steps and warmup_steps filled for a run of `steps` steps."""
        total = self.total_steps or steps
        warmup = self.warmup_steps
        if warmup is None:
            warmup = min(WARMUP_CAP, int(WARMUP_FRACTION * total))
        return dataclasses.replace(self, total_steps=total, warmup_steps=warmup)


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


def create_learning_rate_fn(cfg: OptimConfig) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then cosine decay to end_lr (None: constant)."""
    if cfg.total_steps is None or cfg.warmup_steps is None:
        raise ValueError("the schedule needs optim.total_steps and optim.warmup_steps: fill "
                         "them with OptimConfig.for_run(steps)")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.total_steps, end_value=cfg.lr if cfg.end_lr is None else cfg.end_lr)


def decay_mask(params):
    """Weight decay on weight matrices only: not on biases, and not on the embeddings
    (rows of a lookup table, each updated only when its bin or genre occurs: decay
    would pull rare ones to zero between their updates)."""
    def decays(path, p):
        return p.ndim >= 2 and "embedding" not in str(getattr(path[-1], "key", path[-1]))

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: OptimConfig,
                   learning_rate_fn: optax.Schedule | None = None
                   ) -> optax.GradientTransformation:
    lr = learning_rate_fn or create_learning_rate_fn(cfg)
    adamw = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                        mask=decay_mask)
    if cfg.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)
    return adamw


def split_model(model: WaveNet) -> tuple[nnx.GraphDef, dict]:
    """(static graph, parameters as a plain nested dict of arrays)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("the model holds state other than parameters; not supported here")
    return graphdef, nnx.to_pure_dict(params)


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


# --------------------------------------------------------------------------------------
# Steps (pure, per device)


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
        ema = ema_update(ema, params, ema_decay, state.step + 1)
    metrics = compute_metrics(bits, axis_name, grad_norm=grad_norm,
                              learning_rate=learning_rate_fn(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         ema_params=ema), metrics


def ema_update(ema: dict, params: dict, decay: float, t: jax.Array) -> dict:
    """The debiased EMA after update t (1, 2, ...): the zero-started average
    m_t = decay * m_(t-1) + (1 - decay) * p_t divided by (1 - decay**t), kept in its
    debiased form: ema_t = ema_(t-1) + w_t * (p_t - ema_(t-1)), w_t = (1 - decay) /
    (1 - decay**t). So ema_1 = p_1 and the initial weights carry no weight at all."""
    # 1 - decay**t as -expm1(t log decay): exact where decay is close to 1.
    w = (1.0 - decay) / -jnp.expm1(t.astype(jnp.float32) * math.log(decay))
    return jax.tree.map(lambda e, p: e + w * (p - e), ema, params)


# --------------------------------------------------------------------------------------
# Data-parallel wrappers


def make_p_train_step(graphdef: nnx.GraphDef, optim_cfg: OptimConfig) -> Callable:
    """jax.pmap'd train_step(state, batch) -> (state, metrics); the state is donated."""
    lr_fn = create_learning_rate_fn(optim_cfg)
    step = functools.partial(train_step, graphdef=graphdef, tx=make_optimizer(optim_cfg, lr_fn),
                             learning_rate_fn=lr_fn, ema_decay=optim_cfg.ema_decay,
                             axis_name=AXIS)
    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,))
