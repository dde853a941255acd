"""Per-sample losses (in bits) for the two output heads (drawing from them:
`wavegen.generation.generator.draw`).

- softmax: a categorical distribution over the 2**bits bins; the loss is the cross-entropy.
- mol: a discretized mixture of logistics (PixelCNN++ / r9y9's wavenet_vocoder), for
  16-bit audio where a 65,536-way softmax is too big. The bins are mapped to [-1, 1]
  (`bins_to_unit`); the probability of bin b is the mixture's mass on
  [x_b - 1/(K-1), x_b + 1/(K-1)], the two edge bins taking the tails, so the K masses sum
  to one and the loss is an exact NLL in bits per sample, comparable with the softmax's.

All functions are pure jax.numpy and work on any leading shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LN2 = math.log(2.0)


def bins_to_unit(bins: jax.Array, num_classes: int) -> jax.Array:
    """Bin indices 0..K-1 to their centres in [-1, 1] (float32)."""
    return bins.astype(jnp.float32) * (2.0 / (num_classes - 1)) - 1.0


def unit_to_bins(x: jax.Array, num_classes: int) -> jax.Array:
    """Values in [-1, 1] to the nearest bin index (int32); clips outside values."""
    x = jnp.clip(x, -1.0, 1.0)
    return jnp.round((x + 1.0) * ((num_classes - 1) / 2.0)).astype(jnp.int32)


# --------------------------------------------------------------------------------------
# Softmax head


def softmax_cross_entropy_bits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log2 p(target): logits (..., K), integer targets (...) -> bits (...), float32."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)
    return (jax.nn.logsumexp(logits, axis=-1) - picked[..., 0]) / LN2


# --------------------------------------------------------------------------------------
# Discretized mixture of logistics


# A component at the smallest scale, centred on a bin, puts tanh(SHARPNESS / 2) of its
# mass in that bin: 1 - 6.7e-4 for 8, i.e. about 0.001 bits/sample.
SHARPNESS = 8.0


def log_scale_floor(num_classes: int) -> float:
    """The smallest log-scale of a mixture component for K classes: log(h / SHARPNESS),
    h = 1/(K-1) the half-width of a bin in [-1, 1]. A fixed floor cannot serve every
    depth: -7 (PixelCNN++'s) is a scale of 9e-4, 60 bins wide at 16 bits, which floors a
    16-bit model at about 6.9 bits/sample; this one is -7.6 at 8 bits, -13.2 at 16."""
    return math.log(1.0 / ((num_classes - 1) * SHARPNESS))


def mol_channels(num_mixtures: int) -> int:
    """Output channels of the mixture head: logits, means and log-scales per component."""
    return 3 * num_mixtures


def split_mol(params: jax.Array, num_mixtures: int, log_scale_min: float):
    """(..., 3M) -> mixture logits, means, log-scales (each (..., M), float32)."""
    params = params.astype(jnp.float32)
    if params.shape[-1] != 3 * num_mixtures:
        raise ValueError(f"mixture parameters have {params.shape[-1]} channels, expected "
                         f"3 * num_mixtures = {3 * num_mixtures}")
    logit_probs, means, log_scales = jnp.split(params, 3, axis=-1)
    return logit_probs, means, jnp.maximum(log_scales, log_scale_min)


def mol_log_probs(params: jax.Array, targets: jax.Array, num_classes: int,
                  num_mixtures: int, log_scale_min: float) -> jax.Array:
    """log p(target bin) in nats under the discretized mixture: (..., 3M), (...) -> (...)."""
    logit_probs, means, log_scales = split_mol(params, num_mixtures, log_scale_min)
    x = bins_to_unit(targets, num_classes)[..., None]
    half = 1.0 / (num_classes - 1)
    centered = x - means
    inv_s = jnp.exp(-log_scales)
    plus_in = inv_s * (centered + half)
    min_in = inv_s * (centered - half)
    log_cdf_plus = plus_in - jax.nn.softplus(plus_in)  # log sigmoid: the lowest bin
    log_one_minus_cdf_min = -jax.nn.softplus(min_in)  # log (1 - sigmoid): the highest bin
    cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
    # Where the mass is too small for float32 differences, use density x bin width.
    mid_in = inv_s * centered
    log_pdf_mid = mid_in - log_scales - 2.0 * jax.nn.softplus(mid_in)
    log_mass = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                         log_pdf_mid + jnp.log(2.0 * half))
    t = targets[..., None]
    log_probs = jnp.where(t <= 0, log_cdf_plus,
                          jnp.where(t >= num_classes - 1, log_one_minus_cdf_min, log_mass))
    return jax.nn.logsumexp(log_probs + jax.nn.log_softmax(logit_probs, axis=-1), axis=-1)


def mol_nll_bits(params: jax.Array, targets: jax.Array, num_classes: int, num_mixtures: int,
                 log_scale_min: float) -> jax.Array:
    """-log2 p(target bin) under the discretized mixture of logistics, per sample."""
    return -mol_log_probs(params, targets, num_classes, num_mixtures, log_scale_min) / LN2
