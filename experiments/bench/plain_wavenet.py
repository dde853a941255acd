"""A deliberately plain, untuned WaveNet in pure JAX (jax.numpy + optax, no Flax): the
baseline that `bench_training`'s learning check sets beside wavegen's defaults (do they
learn as fast as a plain WaveNet?).

What a new user would write from the paper and r9y9's wavenet_vocoder, nothing tuned:

- Input: a one-hot vector of the previous bin through a dense (C, R) matrix + bias (r9y9's
  first 1x1 conv on one-hot input), not a lookup table.
- Layers: `stacks` x `layers_per_stack`, dilation 1, 2, ..., 2**(n-1); a causal dilated
  conv (K, R, G) + bias, written as K shifted matmuls (tap j sees the input at
  t - (K-1-j) d, zeros before the start); the genre conditioning adds
  genre_embedding[g] @ (E, G) (no bias) to the gate's pre-activation, as wavegen does;
  z = tanh(first G/2) * sigmoid(last G/2); residual 1x1 (G/2, R) + bias added to the
  layer's input, skip 1x1 (G/2, S) + bias summed over the layers. No sqrt(1/2) on the
  residual path and no 1/sqrt(layers) on the skip sum (the plainest form; wavegen has
  neither either).
- Head: relu -> 1x1 (S, S) + bias -> relu -> 1x1 (S, C) + bias -> softmax cross-entropy.
- Initialisation: PyTorch's defaults, as a torch Conv1d / Linear gets them: every weight
  and bias uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in = in channels x taps); the
  genre table N(0, 1), torch's nn.Embedding default.
- Optimizer: Adam at a constant 1e-3 (optax.adam), no warmup, no clipping, no weight
  decay, on the mean cross-entropy (nats) of the scored targets.

So the comparison is fair, everything around the model is wavegen's: the batches
(`wavegen.data.input_pipeline.train_batches`, same Window and seed: identical data), the
scoring of a window (it reads window[:-1] and its last T outputs are scored against
window[RF:], every scored output with full context, as `wavegen.training.steps.model_loss`)
and the evaluation (`evaluate_split` here scores this model's bits with
`wavegen.training.steps.score` over `split_batches`, wavegen's own eval batches, and sums
them with `wavegen.training.steps.evaluate`: the same targets and the same unigram figure
as wavegen's evaluation).

Single-host only: a train step runs on one device (jit) over the whole global batch;
evaluation is pmapped like wavegen's so `evaluate` can be reused as is.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

LN2 = math.log(2.0)
AXIS = "batch"


@dataclasses.dataclass(frozen=True)
class PlainConfig:
    """The baseline's shape; `like` copies it from a wavegen ModelConfig."""

    num_classes: int
    num_genres: int = 0
    stacks: int = 2
    layers_per_stack: int = 10
    residual_channels: int = 64
    gate_channels: int = 128
    skip_channels: int = 64
    kernel_size: int = 2
    genre_embed_dim: int = 16
    lr: float = 1e-3

    @classmethod
    def like(cls, cfg, **overrides) -> "PlainConfig":
        """The same shape as a (dataset-filled) `wavegen.model.wavenet.ModelConfig`."""
        if cfg.head != "softmax" or cfg.input_kind != "embedding":
            raise ValueError("the plain baseline has a softmax head on one-hot input only")
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)
                  if f.name != "lr"}
        return dataclasses.replace(cls(**fields), **overrides)

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(self.layers_per_stack)) * self.stacks

    @property
    def receptive_field(self) -> int:
        return (self.kernel_size - 1) * sum(self.dilations) + 1


def _uniform(key, shape, fan_in: int) -> jax.Array:
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def init_params(cfg: PlainConfig, seed: int = 0) -> dict:
    """PyTorch-default initialisation (see the module docstring)."""
    c, r, g, s, k = (cfg.num_classes, cfg.residual_channels, cfg.gate_channels,
                     cfg.skip_channels, cfg.kernel_size)
    keys = iter(jax.random.split(jax.random.key(seed), 8 + 7 * len(cfg.dilations)))
    params: dict[str, Any] = {
        "input_w": _uniform(next(keys), (c, r), c), "input_b": _uniform(next(keys), (r,), c),
        "head_w1": _uniform(next(keys), (s, s), s), "head_b1": _uniform(next(keys), (s,), s),
        "head_w2": _uniform(next(keys), (s, c), s), "head_b2": _uniform(next(keys), (c,), s),
        "layers": [],
    }
    if cfg.num_genres:
        params["genre_embedding"] = jax.random.normal(
            next(keys), (cfg.num_genres, cfg.genre_embed_dim), jnp.float32)
    for _ in cfg.dilations:
        layer = {"conv_w": _uniform(next(keys), (k, r, g), k * r),
                 "conv_b": _uniform(next(keys), (g,), k * r),
                 "res_w": _uniform(next(keys), (g // 2, r), g // 2),
                 "res_b": _uniform(next(keys), (r,), g // 2),
                 "skip_w": _uniform(next(keys), (g // 2, s), g // 2),
                 "skip_b": _uniform(next(keys), (s,), g // 2)}
        if cfg.num_genres:
            layer["cond_w"] = _uniform(next(keys), (cfg.genre_embed_dim, g),
                                       cfg.genre_embed_dim)
        params["layers"].append(layer)
    return params


def _shift(h: jax.Array, n: int) -> jax.Array:
    """h delayed by n steps along time (B, L, C): out[t] = h[t - n], zeros before 0."""
    if n == 0:
        return h
    if n >= h.shape[1]:
        return jnp.zeros_like(h)
    return jnp.pad(h, ((0, 0), (n, 0), (0, 0)))[:, :h.shape[1]]


def forward(cfg: PlainConfig, params: dict, bins: jax.Array,
            genre: jax.Array | None = None) -> jax.Array:
    """Logits (B, L, C) float32; output t predicts bins[:, t + 1] from bins[:, :t + 1]."""
    x = jax.nn.one_hot(bins, cfg.num_classes, dtype=jnp.float32)
    h = x @ params["input_w"] + params["input_b"]
    cond = None
    if cfg.num_genres:
        cond = params["genre_embedding"][genre]  # (B, E)
    skips = 0.0
    k = cfg.kernel_size
    for d, layer in zip(cfg.dilations, params["layers"]):
        a = layer["conv_b"]
        for j in range(k):
            a = a + _shift(h, (k - 1 - j) * d) @ layer["conv_w"][j]
        if cond is not None:
            a = a + (cond @ layer["cond_w"])[:, None, :]
        half = cfg.gate_channels // 2
        z = jnp.tanh(a[..., :half]) * jax.nn.sigmoid(a[..., half:])
        skips = skips + z @ layer["skip_w"] + layer["skip_b"]
        h = h + z @ layer["res_w"] + layer["res_b"]
    y = jax.nn.relu(skips)
    y = jax.nn.relu(y @ params["head_w1"] + params["head_b1"])
    return y @ params["head_w2"] + params["head_b2"]


def loss_bits(cfg: PlainConfig, params: dict, audio: jax.Array,
              genre: jax.Array | None) -> jax.Array:
    """Bits per target (B, T): reads audio[:, :-1], scores its last T outputs against
    audio[:, RF:] (as wavegen.training.steps.model_loss)."""
    rf = cfg.receptive_field
    logits = forward(cfg, params, audio[:, :-1], genre if cfg.num_genres else None)[:, rf - 1:]
    nats = optax.softmax_cross_entropy_with_integer_labels(logits, audio[:, rf:])
    return nats / LN2


# --------------------------------------------------------------------------------------
# Training and evaluation


class PlainState(NamedTuple):
    params: dict
    opt_state: Any


def make_optimizer(cfg: PlainConfig) -> optax.GradientTransformation:
    return optax.adam(cfg.lr)


def create_state(cfg: PlainConfig, seed: int = 0) -> PlainState:
    params = init_params(cfg, seed)
    return PlainState(params, make_optimizer(cfg).init(params))


def make_train_step(cfg: PlainConfig):
    """jit'd step(state, audio (B, L), genre (B,)) -> (state, mean bits); state donated."""
    tx = make_optimizer(cfg)

    def loss_fn(params, audio, genre):
        bits = loss_bits(cfg, params, audio, genre)
        return jnp.mean(bits) * LN2, jnp.mean(bits)

    def step(state: PlainState, audio, genre):
        (_, bits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, audio,
                                                                     genre)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return PlainState(optax.apply_updates(state.params, updates), opt_state), bits

    return jax.jit(step, donate_argnums=(0,))


def flat_batch(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """A (devices, per_device, ...) batch of `train_batches` as one (global, ...) batch."""
    audio = np.asarray(batch["audio"])
    genre = np.asarray(batch["genre"])
    return audio.reshape((-1, audio.shape[-1])), genre.reshape(-1)


def make_p_eval_step(cfg: PlainConfig):
    """pmap'd eval step: `wavegen.training.steps.score` of this model's bits, so
    `wavegen.training.steps.evaluate` sums it exactly as it sums wavegen's."""
    from wavegen.training import steps as wt

    def step(params, batch):
        bits = loss_bits(cfg, params, batch["audio"], batch["genre"])
        return wt.score(bits, batch, cfg.num_classes, AXIS)

    return jax.pmap(step, axis_name=AXIS)


@functools.lru_cache(maxsize=None)
def _cached_eval_step(cfg: PlainConfig):
    return make_p_eval_step(cfg)


def split_batches(dataset, receptive_field: int, *, split: str = "validation",
                  per_device_batch: int = 4, max_batches: int | None = None):
    """wavegen's own eval batches of the split (Window(spec, RF), `eval_batches`) for a
    model of this receptive field: the baseline and wavegen are scored on these, so on
    the same targets with the same unigram figure."""
    from wavegen.data import input_pipeline

    window = input_pipeline.Window(dataset.spec, receptive_field)
    return input_pipeline.eval_batches(dataset, window, per_device_batch=per_device_batch,
                                       split=split, max_batches=max_batches)


def evaluate_split(cfg: PlainConfig, params: dict, dataset, *, split: str = "validation",
                   per_device_batch: int = 4, max_batches: int | None = None) -> dict:
    """`wavegen.training.steps.evaluate` of this model over `split_batches`; `params`
    unreplicated."""
    from wavegen.training import steps as wt

    batches = split_batches(dataset, cfg.receptive_field, split=split,
                            per_device_batch=per_device_batch, max_batches=max_batches)
    return wt.evaluate(_cached_eval_step(cfg), wt.replicate(params), batches)
