"""Sampling from a WaveNet with per-layer caches (the "fast WaveNet" queues).

A WaveNet output at time t depends on the last `receptive_field` inputs, but layer i only
reads its own input at t, t - d_i, ..., t - (K-1) d_i. Keeping, per layer, the last
(K-1) d_i inputs it has seen makes every new sample cost one step per layer instead of a
pass over the receptive field (Paine et al. 2016, "Fast Wavenet Generation Algorithm").

The cache (`Cache`) is one flat buffer holding every layer's ring buffer back to back:
layer i owns rows offset_i .. offset_i + (K-1) d_i - 1, and its input at time p lives in
row offset_i + p mod ((K-1) d_i). One write position (`pos`: the time of the next input,
kept modulo the longest ring) serves all layers, so a step reads every layer's past taps
with one gather and writes every layer's new input with one scatter; nothing is shifted.
An all-zero cache is the convolution's zero padding: stepping from `init_cache`
reproduces the parallel forward pass from position 0 (`teacher_force`; tested to 1e-4).

One step, for inputs x (B,) at time t (L layers, kernel K, R/G/S channels):

    h_0    = embed(x)
    past   = every ring's rows at t - (K-1-j) d_i, j < K-1      one gather  (L, K-1, B, R)
    a_past = past . conv_kernel[:K-1]                           one batched matmul (L, B, G)
    layer i:  h_i+1, z_i = gated_residual(h_i, h_i @ conv_kernel[K-1] + a_past[i])
    outputs = head(skip_sum(z_0 .. z_L-1))   one matmul on the concatenated z
    every ring's row at t <- h_i                                          one scatter

The past taps do not depend on this step's input, so their share of every layer's dilated
conv is one batched matmul off the sequential chain. Everything after the dilated conv -
bias and genre, gate, residual 1x1 (`wavenet.gated_residual`), the skip 1x1s
(`wavenet.skip_sum`, in its one-matmul order: on CPU a step costs mostly per
operation) - and `embed`,
`conditioning` and `head` are the model's own functions on the model's own parameters
(merged from `graphdef` and `params`): there is no second copy of the layer's maths here,
and only the order of the sums in the dilated conv differs from the parallel pass.

Generation (`start` then `generate_chunk` as often as wanted, or `generate` for both)
runs `num_streams` independent streams in one jitted `lax.scan` over time (a scan over
blocks of NOISE_BLOCK steps, each making its steps' random numbers in one vectorized
call, then scanning over the steps; no host round trip inside a call):

- Context. A song is taken to start after silence: before the first sample (or before
  the prime) come receptive_field - 1 samples of `start_bin`, the bin of 0.0 for the
  dataset's quantization (`silence_bin(quantization, bits)`). The model was trained on
  windows of real audio, never on the zero padding before a sequence starts, so silence
  is its in-distribution "nothing yet". Without a prime the first input is `start_bin`
  too: the first sample is predicted from receptive_field samples of silence.
- Prime. `prime` (P,) (the same for every stream) or (num_streams, P) is the song so
  far: generation continues after its last sample, and the output holds only the new
  samples, never the prime. The caches after the prime depend on its last
  receptive_field - 1 samples before the final one (no output can see further back), and
  `start` fills them from exactly those (after the silence, for a short prime) with one
  convolutional pass instead of one step per sample; that equals feeding the same
  samples through the caches step by step (`teacher_force`), which the tests check, as they check that naive generation from the whole primed sequence
  draws the same samples.
- Randomness. Stream b has the key fold_in(key, b), and its sample n (counted from the
  first generated sample, across chunks) uses fold_in(stream key, n): streams are
  independent, and a stream's samples depend neither on the chunking nor on how many
  streams run beside it.
- Temperature T. Softmax head: a categorical over logits / T (Gumbel-max), T = 0 is the
  argmax. Mixture of logistics: the mixture logits are divided by T and every logistic's
  scale is multiplied by T, then a component and a logistic sample are drawn and mapped
  to the nearest bin; T = 1 is the model's distribution, T -> 0 concentrates on the most
  likely component's mean, which T = 0 returns.
- Chunks. `generate_chunk(graphdef, params, state, n)` returns the next n samples of
  every stream and the state to continue from; any chunking gives exactly the samples
  of one long call (a script shows progress between chunks).
- Precision. Generation computes in the model's compute dtype (`ModelConfig.dtype`), as
  training does: float32 by default (parameters are always float32); with bfloat16 the
  caches and the layers' matmul inputs are bfloat16, while the skip sum and the head are
  float32 (the model's own rule, in `gated_residual` and `head`). On CPU float32 is the
  fast choice.

`naive_generate` is the reference: for every new sample one full forward pass of the
model over the last receptive_field samples (the same silence before the song, keys and
sampling), so it draws the same samples as the cached generator (tested).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavegen.data import audio
from wavegen.model import losses
from wavegen.model import wavenet as wm

# Steps whose random numbers are made in one vectorized call (the noise of a block for
# 16 streams and 256 classes: 4 MiB), at most NOISE_BLOCK_BYTES of them (a 16-bit softmax
# draws 65,536 numbers per sample). Speed only: any value gives the same samples.
NOISE_BLOCK = 256
NOISE_BLOCK_BYTES = 16 << 20
# lax.scan unroll of the time loop. Speed only.
UNROLL = 1

# --------------------------------------------------------------------------------------
# The cache


class Cache(NamedTuple):
    """Every layer's past inputs, as ring buffers in one array.

    buffer (rows, B, R) in the compute dtype: layer i's ring is rows
    offsets[i] .. offsets[i] + (K-1) d_i - 1 (`layout`), and its input at time p is in
    row offsets[i] + p mod ((K-1) d_i). pos () int32: the time of the next input, modulo
    the longest ring (every ring's length divides it).
    """

    buffer: jax.Array
    pos: jax.Array


class Layout(NamedTuple):
    """Static shape facts of the cache for one model config."""

    lengths: tuple[int, ...]  # (K-1) d_i per layer
    offsets: tuple[int, ...]  # first row of each layer's ring
    rows: int  # sum of the lengths
    period: int  # pos is kept modulo this: the longest ring, which every length divides


def layout(cfg: wm.ModelConfig) -> Layout:
    lengths = tuple((cfg.kernel_size - 1) * d for d in cfg.dilations)
    offsets = tuple(int(x) for x in np.cumsum((0,) + lengths[:-1]))
    period = max(lengths)
    if any(period % n for n in lengths):
        raise ValueError(f"ring lengths {lengths} must all divide the longest")
    return Layout(lengths, offsets, sum(lengths), period)


def init_cache(cfg: wm.ModelConfig, batch: int, dtype=None) -> Cache:
    """An empty cache: zeros, the convolution's padding before position 0.

    dtype defaults to the model's compute dtype (what the step expects)."""
    dtype = cfg.compute_dtype if dtype is None else dtype
    return Cache(jnp.zeros((layout(cfg).rows, batch, cfg.residual_channels), dtype),
                 jnp.zeros((), jnp.int32))


# --------------------------------------------------------------------------------------
# One step


class _Weights(NamedTuple):
    """The model's parameters arranged for stepping, in the compute dtype.

    Per-layer matrices are separate arrays, not slices of one stacked array: inside the
    time loop XLA:CPU would copy such slices on every step (it did: 40% of the time)."""

    layers: tuple[wm.LayerWeights, ...]  # what `wm.gated_residual` takes, per layer
    w_cur: tuple[jax.Array, ...]  # L x (R, G): the conv tap on the current input
    w_past: jax.Array  # (L, K-1, R, G): the taps on past inputs, oldest first
    skips: tuple[jax.Array, jax.Array]  # `wm.stacked_skips`: (L*G/2, S) kernel, (S,) bias


def _merge(graphdef: nnx.GraphDef, params: Any) -> wm.WaveNet:
    return nnx.merge(graphdef, params)


def _weights(model: wm.WaveNet, genre: jax.Array | None) -> _Weights:
    cond = model.conditioning(genre)
    layers = tuple(layer.weights(cond, model.cfg.compute_dtype) for layer in model.layers)
    return _Weights(layers, tuple(w.conv[-1] for w in layers),
                    jnp.stack([w.conv[:-1] for w in layers]), wm.stacked_skips(layers))


def _step(model: wm.WaveNet, w: _Weights, cache: Cache, bins_t: jax.Array):
    """One time step of every stream: (outputs (B, C) float32, cache)."""
    cfg = model.cfg
    lay = layout(cfg)
    k, num_layers = cfg.kernel_size, cfg.num_layers
    lengths = np.asarray(lay.lengths, np.int32)
    offsets = np.asarray(lay.offsets, np.int32)
    # Tap j < K-1 of layer i reads the input at t - (K-1-j) d_i.
    delays = (np.asarray(cfg.dilations, np.int32)[:, None]
              * (k - 1 - np.arange(k - 1, dtype=np.int32))[None, :])
    pos = cache.pos
    read = (offsets[:, None] + (pos - delays) % lengths[:, None]).reshape(-1)
    write = offsets + pos % lengths
    past = cache.buffer.at[read].get(unique_indices=True, mode="promise_in_bounds")
    past = past.reshape((num_layers, k - 1) + cache.buffer.shape[1:])  # (L, K-1, B, R)
    a_past = jnp.einsum("ljbr,ljrg->lbg", past, w.w_past)

    h = model.embed(bins_t)
    inputs, zs = [], []
    for i in range(num_layers):
        inputs.append(h)
        h, z = wm.gated_residual(w.layers[i], h, h @ w.w_cur[i] + a_past[i],
                                 need_residual=i < num_layers - 1)
        zs.append(z)
    skip = wm.skip_sum(w.layers, zs, stacked=w.skips)
    outputs = model.head(skip)
    buffer = cache.buffer.at[write].set(jnp.stack(inputs), unique_indices=True,
                                        indices_are_sorted=True, mode="promise_in_bounds")
    return outputs, Cache(buffer, (pos + 1) % lay.period)


@functools.partial(jax.jit, static_argnums=0)
def _teacher_force_jit(graphdef, params, cache, bins, genre):
    model = _merge(graphdef, params)
    w = _weights(model, genre)

    def body(c, x):
        out, c = _step(model, w, c, x)
        return c, out

    cache, outs = jax.lax.scan(body, cache, bins.T)
    return jnp.swapaxes(outs, 0, 1), cache


@functools.partial(jax.jit, static_argnums=0)
def _prefill_jit(graphdef, params, bins, genre):
    model = _merge(graphdef, params)
    cfg = model.cfg
    lay = layout(cfg)
    batch, width = bins.shape
    cond = model.conditioning(genre)
    h = model.embed(bins)  # (B, W, R): layer 0's inputs
    rings = []
    for i, layer in enumerate(model.layers):
        n = lay.lengths[i]
        last = h[:, -n:] if width >= n else jnp.pad(h, ((0, 0), (n - width, 0), (0, 0)))
        # Positions width-n+m (m = 0..n-1) belong in rows (width-n+m) mod n.
        rings.append(jnp.roll(jnp.swapaxes(last, 0, 1), width % n, axis=0))
        if i < len(model.layers) - 1:
            h, _ = layer(h, cond)
    buffer = jnp.concatenate(rings, axis=0).astype(cfg.compute_dtype)
    return Cache(buffer, jnp.asarray(width % lay.period, jnp.int32))


def teacher_force(graphdef: nnx.GraphDef, params: Any, cache: Cache, bins,
                  genre=None) -> tuple[jax.Array, Cache]:
    """Feeds known bins (B, T) through the caches: one cached step for every t, as one
    jitted `lax.scan` (T = 1: a single step). Returns the outputs of every step (B, T, C) float32 (output t predicts
    bins[:, t + 1]) and the cache after the last input. From `init_cache` the outputs
    are the parallel forward pass `model(bins, genre)`."""
    cfg = config(graphdef, params)
    bins = jnp.asarray(wm.check_bins(bins, cfg.num_classes, ndim=2))
    g = wm.check_genre(cfg, genre, bins.shape[0])
    return _teacher_force_jit(graphdef, params, cache, bins, _device(g))


# --------------------------------------------------------------------------------------
# Sampling


def silence_bin(quantization: str, bits: int) -> int:
    """The bin of 0.0 for a dataset's quantization: the usual `start_bin`."""
    return int(audio.quantize(np.zeros(1, np.float32), quantization, bits)[0])


def _check_temperature(temperature) -> float:
    t = float(temperature)
    if not 0.0 <= t < float("inf"):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    return t


def noise_size(cfg: wm.ModelConfig) -> int:
    """Random numbers one draw uses: one per class (softmax), or one per mixture
    component plus one for the logistic sample (mol)."""
    return cfg.num_mixtures + 1 if cfg.head == "mol" else cfg.num_classes


def draw_noise(cfg: wm.ModelConfig, key: jax.Array) -> jax.Array:
    """The randomness of one draw from one key, (noise_size(cfg),) float32: standard
    Gumbel noise per class (softmax) or per component, then (mol) one standard logistic
    sample log(u / (1 - u)), u clipped to [1e-5, 1 - 1e-5].
    Drawn at every temperature, 0 included, so the keys' use never depends on it.

    Apart from `draw` so that generation makes a block of steps' noise in one
    vectorized call instead of small random-number kernels on every step."""
    u = jax.random.uniform(key, (noise_size(cfg),), jnp.float32,
                           minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    gumbel = -jnp.log(-jnp.log(u))
    if cfg.head == "softmax":
        return gumbel
    v = jnp.clip(u[-1:], 1e-5, 1.0 - 1e-5)
    return jnp.concatenate([gumbel[:-1], jnp.log(v) - jnp.log1p(-v)])


def draw(cfg: wm.ModelConfig, outputs: jax.Array, noise: jax.Array,
         temperature: float | jax.Array = 1.0) -> jax.Array:
    """Bins (int32) from outputs (..., C) at a temperature T >= 0 (a float or a traced
    scalar), given `draw_noise` (..., noise_size) (ignored at T = 0).

    softmax: argmax(logits / T + gumbel), a categorical over logits / T; T = 0: argmax.
    mol: component c = argmax(mixture logits / T + gumbel); x = mean_c + T * scale_c *
    logistic; the nearest bin to x. T = 0: the mean of the most likely component."""
    outputs = outputs.astype(jnp.float32)
    t = jnp.asarray(temperature, jnp.float32)
    hot = t > 0
    inv_t = 1.0 / jnp.where(hot, t, 1.0)

    def gumbel_max(logits, gumbel):
        return jnp.argmax(jnp.where(hot, logits * inv_t + gumbel, logits), axis=-1)

    if cfg.head == "softmax":
        return gumbel_max(outputs, noise).astype(jnp.int32)
    m = cfg.num_mixtures
    logit_probs, means, log_scales = losses.split_mol(outputs, m, cfg.mol_log_scale_min)
    comp = gumbel_max(logit_probs, noise[..., :m])

    def pick(a):  # each stream's chosen mixture component of `a`
        return jnp.take_along_axis(a, comp[..., None], axis=-1)[..., 0]

    x = pick(means) + t * jnp.exp(pick(log_scales)) * noise[..., m]
    return losses.unit_to_bins(x, cfg.num_classes)


def stream_keys(key: jax.Array, num_streams: int) -> jax.Array:
    """Stream b's key: fold_in(key, b), so it does not depend on num_streams."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        key, jnp.arange(num_streams, dtype=jnp.uint32))


def _stream_noise(cfg: wm.ModelConfig, keys: jax.Array, first: jax.Array,
                  size: int) -> jax.Array:
    """Noise of samples first .. first + size - 1 of every stream: (size, B, noise).

    Sample n of stream b uses the key fold_in(keys[b], n)."""
    n = first + jnp.arange(size, dtype=jnp.int32)
    fold = jax.vmap(jax.vmap(jax.random.fold_in, in_axes=(0, None)), in_axes=(None, 0))
    return jax.vmap(jax.vmap(lambda k: draw_noise(cfg, k)))(fold(keys, n))


# --------------------------------------------------------------------------------------
# Generation


class GenState(NamedTuple):
    """Where generation stands, enough to continue exactly (a pytree).

    cache: the layers' past inputs; inputs (B,) int32: each stream's latest sample, the
    next input; keys (B,): the streams' PRNG keys; count () int32: samples generated so
    far; genre (B,) int32 or None."""

    cache: Cache
    inputs: jax.Array
    keys: jax.Array
    count: jax.Array
    genre: jax.Array | None


def config(graphdef: nnx.GraphDef, params: Any) -> wm.ModelConfig:
    """The ModelConfig of a split model."""
    return nnx.merge(graphdef, params).cfg


def _device(x):
    return None if x is None else jnp.asarray(x)


def _context(cfg: wm.ModelConfig, num_streams: int, start_bin, prime) -> np.ndarray:
    """The last receptive_field samples before the first new one, (B, receptive_field):
    silence (start_bin), then the prime."""
    if (isinstance(start_bin, bool) or not isinstance(start_bin, (int, np.integer))
            or not 0 <= start_bin < cfg.num_classes):
        raise ValueError(f"start_bin must be a bin in 0..{cfg.num_classes - 1} (e.g. "
                         f"silence_bin(quantization, bits)), got {start_bin!r}")
    rf = wm.receptive_field(cfg)
    seq = np.full((num_streams, rf), start_bin, np.int32)
    if prime is None:
        return seq
    p = wm.check_bins(prime, cfg.num_classes, "prime")
    if p.ndim == 1:
        p = np.broadcast_to(p, (num_streams,) + p.shape)
    if p.ndim != 2 or p.shape[0] != num_streams or p.shape[1] == 0:
        raise ValueError(f"prime must be (P,) or ({num_streams}, P) bins with P >= 1, got "
                         f"shape {np.shape(prime)}")
    return np.concatenate([seq, p[:, -rf:]], axis=1)[:, -rf:]


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    return int(n)


def start(graphdef: nnx.GraphDef, params: Any, key: jax.Array, *, num_streams: int,
          start_bin: int, genre=None, prime=None) -> GenState:
    """The state before the first generated sample. Checks genre and prime on the host.

    key: one PRNG key (stream b uses fold_in(key, b)). start_bin: the bin taken to
    precede the song, silence: `silence_bin(quantization, bits)`. genre: None (an
    unconditioned model), one index, or (num_streams,) indices. prime: None, (P,) bins
    for every stream or (num_streams, P); generation continues after its last sample."""
    cfg = config(graphdef, params)
    num_streams = _check_count("num_streams", num_streams)
    g = _device(wm.check_genre(cfg, genre, num_streams))
    context = _context(cfg, num_streams, start_bin, prime)
    cache = _prefill_jit(graphdef, params, jnp.asarray(context[:, :-1]), g)
    return GenState(cache, jnp.asarray(context[:, -1]), stream_keys(key, num_streams),
                    jnp.zeros((), jnp.int32), g)


@functools.partial(jax.jit, static_argnums=(0, 3), static_argnames=("unroll", "block"))
def _generate_chunk(graphdef, params, state, n, temperature, *, unroll, block):
    model = _merge(graphdef, params)
    cfg = model.cfg
    w = _weights(model, state.genre)

    def one_step(carry, noise):
        cache, x = carry
        outputs, cache = _step(model, w, cache, x)
        x = draw(cfg, outputs, noise, temperature)
        return (cache, x), x

    def run(carry, size):
        cache, x, count = carry
        noise = _stream_noise(cfg, state.keys, count, size)
        (cache, x), bins = jax.lax.scan(one_step, (cache, x), noise, length=size,
                                        unroll=max(1, min(unroll, size)))
        return (cache, x, count + size), bins  # bins (size, B)

    carry = (state.cache, state.inputs, state.count)
    parts = []
    full, rest = divmod(n, block)
    if full == 1:
        carry, bins = run(carry, block)
        parts.append(bins)
    elif full:
        carry, bins = jax.lax.scan(lambda c, _: run(c, block), carry, None, length=full)
        parts.append(bins.reshape((full * block,) + bins.shape[2:]))
    if rest:
        carry, bins = run(carry, rest)
        parts.append(bins)
    cache, x, count = carry
    bins = jnp.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    return bins.T, state._replace(cache=cache, inputs=x, count=count)


def generate_chunk(graphdef: nnx.GraphDef, params: Any, state: GenState, n: int, *,
                   temperature: float = 1.0, unroll: int = UNROLL,
                   block: int = NOISE_BLOCK) -> tuple[jax.Array, GenState]:
    """The next n samples of every stream, (B, n) int32, and the state to continue from.

    One jitted `lax.scan` over time, compiled once per n and batch size (not per
    temperature); the state passed in stays valid (it is not donated). Calls of n and
    then m samples give exactly the samples of one call of n + m. `unroll` (of the time
    loop) and `block` (steps whose noise is drawn at once) change the speed, never the
    samples."""
    n = _check_count("n", n)
    per_step = state.inputs.shape[0] * noise_size(config(graphdef, params)) * 4
    block = max(1, min(_check_count("block", block), NOISE_BLOCK_BYTES // per_step, n))
    return _generate_chunk(graphdef, params, state, n,
                           jnp.float32(_check_temperature(temperature)),
                           unroll=_check_count("unroll", unroll), block=block)


def generate(graphdef: nnx.GraphDef, params: Any, key: jax.Array, *, num_streams: int,
             length: int, start_bin: int, temperature: float = 1.0, genre=None,
             prime=None) -> jax.Array:
    """num_streams streams of `length` new samples: (num_streams, length) int32 bins.

    `start` then one `generate_chunk` (see the module docstring for the silence before
    the song, the prime, the keys and the temperature). The prime is not in the output."""
    state = start(graphdef, params, key, num_streams=num_streams, start_bin=start_bin,
                  genre=genre, prime=prime)
    bins, _ = generate_chunk(graphdef, params, state, _check_count("length", length),
                             temperature=temperature)
    return bins


# --------------------------------------------------------------------------------------
# The reference


@functools.partial(jax.jit, static_argnums=(0, 4))
def _naive_jit(graphdef, params, context, keys, length, genre, temperature):
    model = _merge(graphdef, params)
    cfg = model.cfg
    rf = wm.receptive_field(cfg)
    batch, width = context.shape
    seq = jnp.concatenate([context, jnp.zeros((batch, length), jnp.int32)], axis=1)

    def body(seq, n):
        window = jax.lax.dynamic_slice_in_dim(seq, width - rf + n, rf, axis=1)
        outputs = model(window, genre)[:, -1]
        noise = _stream_noise(cfg, keys, n, 1)[0]
        x = draw(cfg, outputs, noise, temperature)
        return jax.lax.dynamic_update_slice_in_dim(seq, x[:, None], width + n, axis=1), None

    seq, _ = jax.lax.scan(body, seq, jnp.arange(length, dtype=jnp.int32))
    return seq[:, width:]


def naive_generate(graphdef: nnx.GraphDef, params: Any, key: jax.Array, *, num_streams: int,
                   length: int, start_bin: int, temperature: float = 1.0, genre=None,
                   prime=None) -> jax.Array:
    """`generate` without caches: every new sample is one full forward pass of the model
    over the last receptive_field samples of the sequence (silence, prime, generated
    samples), with the same keys and sampling. The same samples as `generate`, slowly:
    for tests and the benchmark."""
    cfg = config(graphdef, params)
    num_streams = _check_count("num_streams", num_streams)
    g = _device(wm.check_genre(cfg, genre, num_streams))
    context = _context(cfg, num_streams, start_bin, prime)
    return _naive_jit(graphdef, params, jnp.asarray(context), stream_keys(key, num_streams),
                      _check_count("length", length), g,
                      jnp.float32(_check_temperature(temperature)))
