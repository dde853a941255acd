"""The WaveNet: a fully convolutional, causal, dilated, gated stack over audio bins (Flax NNX).

Shape of the network (van den Oord et al. 2016; sizes follow r9y9's wavenet_vocoder)::

    bins (B, L) --embedding--> h (B, L, R)
    for each of `stacks` x `layers_per_stack` layers, dilation d = 1, 2, 4, ... 2**(n-1):
        a   = causal dilated conv(h; kernel (K, R, G)) + bias  [+ genre vector @ (E, G)]
        z   = tanh(a[..., :G/2]) * sigmoid(a[..., G/2:])                     (B, L, G/2)
        o   = z @ out_kernel (G/2, R + S) + bias
        h   = h + o[..., :R]                        the residual path
        s  += o[..., R:]                            the skip path
    out = relu(relu(s) @ (S, S) + b) @ (S, C) + b                             (B, L, C)

`gate_channels` (G) is the conv's output width, split in halves for the tanh and the
sigmoid (as in r9y9's implementation), so the gated activation has G/2 channels.

Output index t predicts input t + 1: every layer pads on the left only, so the output at
t depends on inputs t - receptive_field + 1 .. t and nothing later. The first
receptive_field - 1 outputs of a sequence see zero padding; training feeds each chunk's
last receptive_field - 1 + T samples and scores only the last T outputs, whose context is
entirely real audio (see `wavegen.data.input_pipeline`).

Input: an embedding of the previous bin (default), not a one-hot vector. The two are the
same function (a one-hot times a matrix is a row lookup), but the lookup skips a
(2**bits x R) matmul per sample - as much work as a whole layer's dilated conv for 8 bits -
and scales to 16-bit audio; `input_kind="scalar"` instead feeds the bin's value in [-1, 1]
through a 1x1 projection (r9y9's choice for the mixture head on 16-bit audio).

Step-wise generation (the "fast WaveNet" queues) reuses these parameters as they are: each
layer's dilated conv is one (K, R, G) array whose tap j multiplies the layer's input at
t - (K-1-j) * d, and the 1x1 projections are plain matrices. `gated_residual` is a layer's
arithmetic once its dilated conv is known: the parallel pass gets that conv from
`causal_conv`, the generator from its caches, and both run the same function on it;
`skip_sum` projects and sums the layers' skips for both.
`WaveNet.embed`, `conditioning` and `head` are the pieces before and after the stack.
tests/model/test_wavenet.py and tests/generation/test_generator.py check, with every
parameter randomised, that stepping through time reproduces the convolutional forward
pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavegen.model import losses

HEADS = ("softmax", "mol")
INPUT_KINDS = ("embedding", "scalar")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One WaveNet shape. `num_classes`/`num_genres` come from the dataset (`for_dataset`)."""

    stacks: int = 2
    layers_per_stack: int = 10
    residual_channels: int = 64
    gate_channels: int = 128  # the dilated conv's outputs, halved by the gate
    skip_channels: int = 64
    kernel_size: int = 2
    head: str = "softmax"  # "softmax" over 2**bits classes, or "mol" (mixture of logistics)
    num_mixtures: int = 10  # mol only
    # mol only: the smallest log-scale of a component; None derives it from num_classes
    # (`losses.log_scale_floor`) so that one component can put almost all its mass in one
    # bin at any bit depth.
    log_scale_min: float | None = None
    num_classes: int | None = None  # 2**bits; None until filled from the dataset
    num_genres: int | None = None  # None: from the dataset; 0: unconditioned
    genre_embed_dim: int = 16
    input_kind: str = "embedding"  # or "scalar"
    dtype: str = "float32"  # compute dtype; parameters are always float32

    def __post_init__(self):
        for name in ("stacks", "layers_per_stack", "residual_channels", "gate_channels",
                     "skip_channels", "num_mixtures", "genre_embed_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.kernel_size, int) or self.kernel_size < 2:
            raise ValueError(f"ModelConfig.kernel_size must be an int >= 2, "
                             f"got {self.kernel_size!r}")
        if self.gate_channels % 2:
            raise ValueError(f"ModelConfig.gate_channels must be even (it is split in halves "
                             f"for tanh and sigmoid), got {self.gate_channels}")
        if self.head not in HEADS:
            raise ValueError(f"ModelConfig.head must be one of {HEADS}, got {self.head!r}")
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"ModelConfig.input_kind must be one of {INPUT_KINDS}, "
                             f"got {self.input_kind!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"ModelConfig.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.num_classes is not None and (not isinstance(self.num_classes, int)
                                             or self.num_classes < 2):
            raise ValueError(f"ModelConfig.num_classes must be an int >= 2 or None, "
                             f"got {self.num_classes!r}")
        if self.num_genres is not None and (not isinstance(self.num_genres, int)
                                            or self.num_genres < 0):
            raise ValueError(f"ModelConfig.num_genres must be an int >= 0 or None, "
                             f"got {self.num_genres!r}")

    @property
    def num_layers(self) -> int:
        return self.stacks * self.layers_per_stack

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(self.layers_per_stack)) * self.stacks

    @property
    def out_channels(self) -> int:
        if self.head == "mol":
            return losses.mol_channels(self.num_mixtures)
        if self.num_classes is None:
            raise ValueError("ModelConfig.num_classes is unset; fill it from the dataset "
                             "with model.for_dataset(config, spec)")
        return self.num_classes

    @property
    def mol_log_scale_min(self) -> float:
        """The smallest log-scale of a mixture component (given or derived)."""
        if self.log_scale_min is not None:
            return float(self.log_scale_min)
        if self.num_classes is None:
            raise ValueError("ModelConfig.num_classes is unset; fill it from the dataset "
                             "with model.for_dataset(config, spec)")
        return losses.log_scale_floor(self.num_classes)

    @property
    def compute_dtype(self):
        return jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32


PRESETS: dict[str, ModelConfig] = {
    # For tests: receptive field 31.
    "tiny": ModelConfig(stacks=2, layers_per_stack=4, residual_channels=16, gate_channels=32,
                        skip_channels=16),
    # Receptive field 2,047 (128 ms at 16 kHz).
    "small": ModelConfig(stacks=2, layers_per_stack=10, residual_channels=64,
                         gate_channels=128, skip_channels=64),
    # Receptive field 3,070 (192 ms at 16 kHz).
    "medium": ModelConfig(stacks=3, layers_per_stack=10, residual_channels=128,
                          gate_channels=256, skip_channels=128),
    # Music: receptive field 16,381 (1.02 s at 16 kHz).
    "large": ModelConfig(stacks=4, layers_per_stack=12, residual_channels=128,
                         gate_channels=256, skip_channels=256),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named size preset, with fields overridden (e.g. head="mol", dtype="bfloat16")."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def receptive_field(cfg: ModelConfig) -> int:
    """How many input samples one output depends on: (K - 1) * sum(dilations) + 1."""
    return (cfg.kernel_size - 1) * sum(cfg.dilations) + 1


def receptive_field_ms(cfg: ModelConfig, sample_rate: int) -> float:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return 1000.0 * receptive_field(cfg) / sample_rate


def for_dataset(cfg: ModelConfig, spec) -> ModelConfig:
    """Fills num_classes (2**bits) and num_genres from a DatasetSpec; refuses mismatches.

    num_genres=None takes the dataset's genre count, 0 keeps the model unconditioned.
    """
    classes = spec.num_classes
    if cfg.num_classes is not None and cfg.num_classes != classes:
        raise ValueError(f"model num_classes={cfg.num_classes} does not match the dataset's "
                         f"{classes} classes (2**{spec.bits} bins)")
    genres = len(spec.genres)
    if cfg.num_genres not in (None, 0, genres):
        raise ValueError(f"model num_genres={cfg.num_genres} does not match the dataset's "
                         f"{genres} genres ({', '.join(spec.genres)})")
    return dataclasses.replace(cfg, num_classes=classes,
                               num_genres=genres if cfg.num_genres is None else cfg.num_genres)


def flops_per_sample(cfg: ModelConfig, training: bool = True) -> int:
    """Model FLOPs per output sample, counted from the matmuls (2 FLOPs per multiply-add).

    Forward, per layer: K*R*G (dilated conv) + G/2*(R+S) (residual and skip 1x1s; the
    last layer computes only its skip); head: S*S + S*C; the embedding is a lookup (0).
    Training counts forward + backward as 3 x forward. Elementwise work is not counted.
    """
    r, g, s, k = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.kernel_size
    h = g // 2
    macs = cfg.num_layers * (k * r * g + h * (r + s)) - h * r
    macs += s * s + s * cfg.out_channels
    return 2 * macs * (3 if training else 1)


# --------------------------------------------------------------------------------------
# Building blocks


def gated_activation(a: jax.Array) -> jax.Array:
    """tanh(first half) * sigmoid(second half) over the last axis.

    (Plain autodiff: on XLA:CPU a custom VJP recomputing tanh/sigmoid in the backward
    pass measured no faster.)
    """
    h = a.shape[-1] // 2
    return jnp.tanh(a[..., :h]) * jax.nn.sigmoid(a[..., h:])


def causal_conv(h: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
    """Dilated causal conv, same length: (B, L, Cin) * (K, Cin, Cout) -> (B, L, Cout).

    out[t] = sum_j h[t - (K-1-j) * dilation] @ kernel[j], with zeros before the start.
    """
    k = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        h, kernel, window_strides=(1,), padding=[((k - 1) * dilation, 0)],
        rhs_dilation=(dilation,), dimension_numbers=("NWC", "WIO", "NWC"))


def _normal(rngs: nnx.Rngs, shape, fan_in: int, scale: float = 1.0) -> jax.Array:
    return jax.random.normal(rngs.params(), shape, jnp.float32) * (scale / math.sqrt(fan_in))


# --------------------------------------------------------------------------------------
# Input validation: one check per input form, on the host, where the value enters (the
# generator's entry points, an eager model call); jitted code trusts its inputs.


def check_bins(bins, num_classes: int, name: str = "bins",
               ndim: int | None = None) -> np.ndarray:
    """Bins as int32 after checking them: integers in 0..num_classes-1 (and `ndim` axes)."""
    if isinstance(bins, jax.core.Tracer):
        raise TypeError(f"{name} must be concrete values, not traced (check them before jit)")
    bins = np.asarray(bins)
    if not np.issubdtype(bins.dtype, np.integer):
        raise ValueError(f"{name} must be integer bins, got {bins.dtype}")
    if ndim is not None and bins.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {bins.shape}")
    if bins.size and (bins.min() < 0 or bins.max() >= num_classes):
        raise ValueError(f"{name} must be bins in 0..{num_classes - 1}, got values in "
                         f"{bins.min()}..{bins.max()}")
    return bins.astype(np.int32)


def check_genre(cfg: ModelConfig, genre, batch: int) -> np.ndarray | None:
    """Genre indices as (batch,) int32 (or None for an unconditioned model) after checking
    them: None exactly when the model is unconditioned, else one index for every sequence
    or (batch,) indices, each in 0..num_genres-1. Names map to indices with
    `DatasetSpec.genre_index`, which lists the valid names."""
    if not cfg.num_genres:
        if genre is not None:
            raise ValueError("this model is unconditioned (num_genres=0) but a genre was "
                             "given")
        return None
    if genre is None:
        raise ValueError(f"this model is conditioned on {cfg.num_genres} genres: pass a "
                         "genre index (one for every sequence, or one per sequence)")
    if isinstance(genre, jax.core.Tracer):
        raise TypeError("genre must be concrete values, not traced (check it before jit)")
    g = np.asarray(genre)
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"genre must be integer indices, got {g.dtype}")
    if g.ndim == 0:
        g = np.full((batch,), g)
    if g.shape != (batch,):
        raise ValueError(f"genre must be one index or {batch} indices (one per sequence), "
                         f"got shape {g.shape}")
    bad = [x for x in g.tolist() if not 0 <= x < cfg.num_genres]
    if bad:
        raise ValueError(f"genre index {bad[0]} is out of range: the model has "
                         f"{cfg.num_genres} genres (0..{cfg.num_genres - 1})")
    return g.astype(np.int32)


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


# --------------------------------------------------------------------------------------
# One layer's arithmetic


class LayerWeights(NamedTuple):
    """One residual layer's parameters arranged for `gated_residual`, in the compute dtype.

    conv (K, R, G): the dilated conv's taps; gate_bias (G,) or (B, G): the conv bias plus,
    when conditioned, each sequence's genre vector @ cond_kernel; res_kernel (G/2, R) and
    res_bias (R,): the residual 1x1; skip_kernel (G/2, S) and skip_bias (S,): the skip 1x1
    (skip_bias stays float32: the skips are accumulated in float32).
    """

    conv: jax.Array
    gate_bias: jax.Array
    res_kernel: jax.Array
    res_bias: jax.Array
    skip_kernel: jax.Array
    skip_bias: jax.Array


def gated_residual(w: LayerWeights, h: jax.Array, dilated: jax.Array,
                   need_residual: bool = True) -> tuple[jax.Array | None, jax.Array]:
    """The layer's arithmetic once its dilated conv is known - the one home of it, run
    by the parallel forward pass (`WaveNet.run_layers`) and by the cached step
    (`wavegen.generation.generator`), which differ only in how they get `dilated`.

    h (..., R): the layer's input at each position; dilated (..., G): sum over taps j of
    the input at t - (K-1-j) d @ conv[j] (no bias). Returns (the next layer's input
    h + residual 1x1 (..., R), or None for the last layer; the gated activation z
    (..., G/2), which `skip_sum` projects onto the skip path).
    """
    bias = w.gate_bias
    if bias.ndim == 2 and dilated.ndim == 3:  # per-sequence (B, G) over (B, L, G)
        bias = bias[:, None]
    z = gated_activation(dilated + bias)
    if not need_residual:
        return None, z
    return h + (z @ w.res_kernel + w.res_bias), z


def stacked_skips(ws: Sequence[LayerWeights]) -> tuple[jax.Array, jax.Array]:
    """The layers' skip 1x1s side by side, for `skip_sum(..., stacked=...)`: the kernels
    stacked (layers * G/2, S) and the biases summed (S,)."""
    return (jnp.concatenate([w.skip_kernel for w in ws], axis=0),
            sum(w.skip_bias for w in ws[1:]) + ws[0].skip_bias)


def skip_sum(ws: Sequence[LayerWeights], zs: Sequence[jax.Array],
             stacked: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """The skip path summed over the layers, float32: sum_i z_i @ skip_kernel_i +
    skip_bias_i (zs from `gated_residual`). The skips come out in float32 whatever the
    compute dtype, so the sum and the head are never rounded to bfloat16.

    Two orders of the same sum. Per layer (the parallel pass): one matmul per layer, as
    the activations come; a (positions, layers * G/2) concatenation would double the
    memory the backward pass keeps and measured no faster. With `stacked` (the cached
    generator's one time step; `stacked_skips(ws)`, made once outside the time loop):
    one matmul of all the layers' z side by side on the stacked kernels - one operation
    instead of one per layer in the sequential step, whose cost on CPU is mostly per
    operation.
    """
    if stacked is not None:
        kernel, bias = stacked
        return jnp.dot(jnp.concatenate(zs, axis=-1), kernel,
                       preferred_element_type=jnp.float32) + bias
    total = None
    for w, z in zip(ws, zs):
        s = jnp.dot(z, w.skip_kernel, preferred_element_type=jnp.float32)
        total = s if total is None else total + s
    return total + sum(w.skip_bias for w in ws[1:]) + ws[0].skip_bias


class ResidualLayer(nnx.Module):
    """One gated residual layer's parameters (all float32, plain arrays):

    conv_kernel (K, R, G), conv_bias (G), out_kernel (G/2, R+S) (columns :R residual,
    R: skip), out_bias (R+S), and cond_kernel (E, G) when conditioned. Calling it runs
    `causal_conv` and `gated_residual`; `skip_sum` takes its z and `weights()`.
    """

    def __init__(self, cfg: ModelConfig, dilation: int, *, rngs: nnx.Rngs):
        k, r, g, s = cfg.kernel_size, cfg.residual_channels, cfg.gate_channels, cfg.skip_channels
        self.dilation = dilation
        self.residual_channels = r
        self.conv_kernel = nnx.Param(_normal(rngs, (k, r, g), fan_in=k * r))
        self.conv_bias = nnx.Param(jnp.zeros((g,), jnp.float32))
        self.out_kernel = nnx.Param(_normal(rngs, (g // 2, r + s), fan_in=g // 2))
        self.out_bias = nnx.Param(jnp.zeros((r + s,), jnp.float32))
        self.cond_kernel = (nnx.Param(_normal(rngs, (cfg.genre_embed_dim, g),
                                              fan_in=cfg.genre_embed_dim))
                            if cfg.num_genres else None)

    def weights(self, cond: jax.Array | None, dtype) -> LayerWeights:
        """This layer's parameters for `gated_residual`; cond: genre vectors (B, E) or None."""
        r = self.residual_channels
        gate_bias = self.conv_bias[...]
        if cond is not None:
            gate_bias = gate_bias + cond @ self.cond_kernel[...]
        out_k, out_b = self.out_kernel[...], self.out_bias[...]
        parts = (self.conv_kernel[...], gate_bias, out_k[:, :r], out_b[:r], out_k[:, r:])
        return LayerWeights(*(x.astype(dtype) for x in parts), out_b[r:])

    def __call__(self, h: jax.Array, cond: jax.Array | None = None,
                 need_residual: bool = True) -> tuple[jax.Array | None, jax.Array]:
        """h (B, L, R) -> (next h (B, L, R) or None, gated activation z (B, L, G/2))."""
        return self.run(self.weights(cond, h.dtype), h, need_residual)

    def run(self, w: LayerWeights, h: jax.Array,
            need_residual: bool = True) -> tuple[jax.Array | None, jax.Array]:
        """`__call__` on weights already arranged by `weights()` (the stack keeps them for
        `skip_sum`)."""
        return gated_residual(w, h, causal_conv(h, w.conv, self.dilation), need_residual)


class WaveNet(nnx.Module):
    """The network. `__call__(bins (B, L), genre (B,) or None) -> (B, L, out) float32`."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        if cfg.num_classes is None or cfg.num_genres is None:
            raise ValueError("ModelConfig.num_classes and num_genres must be set (fill them "
                             "from the dataset with model.for_dataset(config, spec)); got "
                             f"num_classes={cfg.num_classes}, num_genres={cfg.num_genres}")
        self.cfg = cfg
        r, s = cfg.residual_channels, cfg.skip_channels
        if cfg.input_kind == "embedding":
            self.input_embedding = nnx.Param(
                jax.random.normal(rngs.params(), (cfg.num_classes, r), jnp.float32))
        else:
            self.input_kernel = nnx.Param(_normal(rngs, (1, r), fan_in=1))
            self.input_bias = nnx.Param(jnp.zeros((r,), jnp.float32))
        self.genre_embedding = (nnx.Param(jax.random.normal(
            rngs.params(), (cfg.num_genres, cfg.genre_embed_dim), jnp.float32))
            if cfg.num_genres else None)
        self.layers = nnx.List([ResidualLayer(cfg, d, rngs=rngs) for d in cfg.dilations])
        self.head_kernel1 = nnx.Param(_normal(rngs, (s, s), fan_in=s))
        self.head_bias1 = nnx.Param(jnp.zeros((s,), jnp.float32))
        # Scaled down 100x: the untrained model predicts almost exactly the head's bias (a
        # uniform distribution), not ~0.8 bits worse than uniform, and learns much faster
        # per step from there; not zero, so every input still reaches it.
        self.head_kernel2 = nnx.Param(_normal(rngs, (s, cfg.out_channels), fan_in=s,
                                              scale=0.01))
        self.head_bias2 = nnx.Param(jnp.zeros((cfg.out_channels,), jnp.float32))

    # The pieces, public for the step-wise generator.

    def embed(self, bins: jax.Array) -> jax.Array:
        """Bins (...) -> the first layer's input (..., R) in the compute dtype."""
        cfg = self.cfg
        if cfg.input_kind == "embedding":
            h = jnp.take(self.input_embedding[...], bins.astype(jnp.int32), axis=0)
        else:
            x = losses.bins_to_unit(bins, cfg.num_classes)[..., None]
            h = x * self.input_kernel[...][0] + self.input_bias[...]
        return h.astype(cfg.compute_dtype)

    def conditioning(self, genre: jax.Array | None) -> jax.Array | None:
        """The genre vectors (B, E) float32 fed to every layer's gate, or None if
        unconditioned. Takes checked indices (`check_genre`); under jit an out-of-range
        index gives NaN vectors (a NaN output and loss), never a silent clamp."""
        if not self.cfg.num_genres:
            return None
        return jnp.take(self.genre_embedding[...], jnp.asarray(genre, jnp.int32), axis=0,
                        mode="fill", fill_value=jnp.nan)

    def head(self, skips: jax.Array) -> jax.Array:
        """Summed skips (..., S) -> outputs (..., out), computed in float32 whatever the
        compute dtype (a bfloat16 head would round every output: up to 28 bins of error
        on a mixture's means at 16 bits)."""
        # No 1/sqrt(layers) scale on the skip sum and no sqrt(1/2) on the residual path
        # (r9y9 has both; the 1x1s learn any scale): with them XLA:CPU fuses the long
        # chains of adds into transposing consumers and recomputes them there - a
        # training step of `small` took 1.5 s (residual scale: 4.9 s) instead of 1.2 s.
        y = jax.nn.relu(skips.astype(jnp.float32))
        y = jax.nn.relu(y @ self.head_kernel1[...] + self.head_bias1[...])
        return y @ self.head_kernel2[...] + self.head_bias2[...]

    def __call__(self, bins: jax.Array, genre: jax.Array | None = None) -> jax.Array:
        """Outputs (B, L, out) float32; output t predicts bins[:, t + 1]. Concrete inputs
        (an eager call) are checked here (`check_bins`, `check_genre`); traced ones are
        trusted: whoever jits checks them where they enter."""
        if _concrete(bins):
            bins = check_bins(bins, self.cfg.num_classes, ndim=2)
            if _concrete(genre):
                genre = check_genre(self.cfg, genre, bins.shape[0])
        cond = self.conditioning(genre)
        return self.head(self.run_layers(self.embed(jnp.asarray(bins)), cond))

    def run_layers(self, h: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        """The residual stack: embedded inputs (B, L, R) -> summed skips (B, L, S)."""
        ws, zs = [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            ws.append(layer.weights(cond, h.dtype))
            h, z = layer.run(ws[-1], h, need_residual=i < last)
            zs.append(z)
        return skip_sum(ws, zs)

    def nll_bits(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """-log2 p(target) per position: outputs (..., out), targets (...) -> (...)."""
        cfg = self.cfg
        if cfg.head == "mol":
            return losses.mol_nll_bits(outputs, targets, cfg.num_classes, cfg.num_mixtures,
                                       cfg.mol_log_scale_min)
        return losses.softmax_cross_entropy_bits(outputs, targets)


def create_model(cfg: ModelConfig, seed: int = 0) -> WaveNet:
    return WaveNet(cfg, rngs=nnx.Rngs(params=seed))
