"""The WaveNet: causality, receptive field, step-wise equivalence, heads, conditioning."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavegen.data.dataset import DatasetSpec
from wavegen.model import losses
from wavegen.model import wavenet as wm

from random_params import randomized_split


def tiny(**kw) -> wm.ModelConfig:
    return wm.preset("tiny", **{"num_classes": 256, "num_genres": 0, **kw})


# --------------------------------------------------------------------------------------
# Configuration


def test_receptive_field_of_presets():
    assert wm.receptive_field(wm.PRESETS["small"]) == 2047
    assert wm.receptive_field(wm.PRESETS["medium"]) == 3070
    assert wm.receptive_field_ms(wm.PRESETS["large"], 16000) >= 1000.0
    assert wm.receptive_field_ms(wm.PRESETS["small"], 16000) == pytest.approx(127.9375)
    # (K-1) * sum of dilations + 1, for kernel 3: 2 stacks of 1+2+4+8
    assert wm.receptive_field(tiny(kernel_size=3)) == 2 * 2 * 15 + 1
    assert wm.PRESETS["small"].num_layers == 20 and wm.PRESETS["medium"].num_layers == 30


def test_config_refuses_bad_values():
    with pytest.raises(ValueError, match="gate_channels must be even"):
        wm.ModelConfig(gate_channels=63)
    with pytest.raises(ValueError, match="head must be one of"):
        wm.ModelConfig(head="wavelet")
    with pytest.raises(ValueError, match="kernel_size"):
        wm.ModelConfig(kernel_size=1)
    with pytest.raises(ValueError, match="dtype"):
        wm.ModelConfig(dtype="float16")
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        wm.preset("huge")
    with pytest.raises(ValueError, match="for_dataset"):
        wm.create_model(wm.preset("tiny"))


def test_for_dataset_fills_and_refuses_mismatches():
    spec = DatasetSpec(sample_rate=16000, quantization="mulaw", bits=8, chunk_samples=5000,
                       context_samples=1000, genres=("jazz", "rock", "unknown"))
    cfg = wm.for_dataset(wm.preset("tiny"), spec)
    assert (cfg.num_classes, cfg.num_genres) == (256, 3)
    assert wm.for_dataset(wm.preset("tiny", num_genres=0), spec).num_genres == 0
    with pytest.raises(ValueError, match=r"num_classes=1024 .* 256 classes"):
        wm.for_dataset(wm.preset("tiny", num_classes=1024), spec)
    with pytest.raises(ValueError, match=r"num_genres=5 .* 3 genres"):
        wm.for_dataset(wm.preset("tiny", num_genres=5), spec)


def test_flops_per_sample_counts_the_matmuls():
    cfg = wm.preset("small", num_classes=256)
    per_layer = 2 * 64 * 128 + 64 * (64 + 64)  # conv taps + residual/skip 1x1s
    forward = 2 * (20 * per_layer - 64 * 64 + 64 * 64 + 64 * 256)
    assert wm.flops_per_sample(cfg, training=False) == forward
    assert wm.flops_per_sample(cfg) == 3 * forward


# --------------------------------------------------------------------------------------
# Causality and receptive field


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_output_depends_exactly_on_the_receptive_field(kernel_size):
    cfg = tiny(kernel_size=kernel_size, stacks=2, layers_per_stack=3)
    rf = wm.receptive_field(cfg)
    model = wm.create_model(cfg, seed=1)
    length, t = rf + 24, rf + 10
    h = jax.random.normal(jax.random.key(0), (1, length, cfg.residual_channels))
    weights = jax.random.normal(jax.random.key(1), (cfg.out_channels,))

    def output_at_t(h):
        return model.head(model.run_layers(h))[0, t] @ weights

    grad = jax.grad(output_at_t)(h)[0]
    depends = np.asarray(jnp.max(jnp.abs(grad), axis=-1) > 0)
    # Nothing after t, everything from t - (rf - 1) to t, nothing before.
    assert not depends[t + 1:].any()
    assert depends[t - rf + 1:t + 1].all()
    assert not depends[:t - rf + 1].any()
    assert depends.sum() == rf


def test_output_t_predicts_the_next_input_causally_from_bins():
    """Changing the bin at position p changes outputs p.. and never outputs before p."""
    cfg = tiny()
    model = wm.create_model(cfg, seed=2)
    bins = jax.random.randint(jax.random.key(0), (1, 80), 0, 256)
    p = 40
    changed = bins.at[0, p].set((bins[0, p] + 128) % 256)
    diff = np.abs(np.asarray(model(changed) - model(bins))).max(axis=-1)[0]
    assert (diff[:p] == 0).all()
    assert (diff[p:p + wm.receptive_field(cfg)] > 0).all()


@pytest.mark.parametrize("kernel_size", [2, 3])
def test_layer_maths_on_taps_reproduce_the_forward_pass(kernel_size):
    """`gated_residual` given each position's dilated conv from its K taps (what the cached
    generator computes) gives the convolutional forward pass, with every parameter random
    (biases and embeddings included)."""
    cfg = tiny(kernel_size=kernel_size, num_genres=3, head="mol", num_mixtures=4)
    model, _, _ = randomized_split(cfg, seed=3)
    bins = jax.random.randint(jax.random.key(0), (2, 40), 0, 256)
    genre = np.array([0, 2])
    full = model(bins, genre)

    cond = model.conditioning(genre)
    h = model.embed(bins)
    ws, zs = [], []
    for i, layer in enumerate(model.layers):
        d, k = layer.dilation, cfg.kernel_size
        w = layer.weights(cond, h.dtype)
        past = jnp.pad(h, ((0, 0), ((k - 1) * d, 0), (0, 0)))  # zeros before the start
        taps = jnp.stack([past[:, j * d:j * d + bins.shape[1]] for j in range(k)], axis=2)
        dilated = jnp.einsum("btkr,krg->btg", taps, w.conv)
        h, z = wm.gated_residual(w, h, dilated, need_residual=i < len(model.layers) - 1)
        ws.append(w)
        zs.append(z)
    # The generator's order of the skip sum (one matmul on the concatenated z).
    skip = wm.skip_sum(ws, zs, stacked=wm.stacked_skips(ws))
    np.testing.assert_allclose(model.head(skip), full, rtol=1e-4, atol=1e-4)
    assert float(jnp.std(full)) > 0.1  # not a degenerate comparison


# --------------------------------------------------------------------------------------
# Conditioning and bad input


def test_conditioning_changes_the_output():
    model = wm.create_model(tiny(num_genres=3), seed=4)
    bins = jax.random.randint(jax.random.key(0), (2, 50), 0, 256)
    a = model(bins, jnp.array([0, 0]))
    b = model(bins, jnp.array([1, 0]))
    assert np.abs(np.asarray(a[0] - b[0])).max() > 1e-3  # genre 1 vs 0 differ
    np.testing.assert_array_equal(a[1], b[1])  # the other sequence is untouched


def test_wrong_genre_is_an_error():
    """Checked on the host where the value enters (an eager call, or `check_genre`)."""
    model = wm.create_model(tiny(num_genres=3), seed=4)
    bins = jnp.zeros((2, 40), jnp.int32)
    with pytest.raises(ValueError, match=r"genre index 3 is out of range.*3 genres"):
        model(bins, jnp.array([0, 3]))
    with pytest.raises(ValueError, match="genre index -1 is out of range"):
        wm.check_genre(model.cfg, -1, 2)
    with pytest.raises(ValueError, match="conditioned on 3 genres"):
        model(bins)
    with pytest.raises(ValueError, match=r"one per sequence"):
        model(bins, jnp.array([0, 1, 2]))
    np.testing.assert_array_equal(wm.check_genre(model.cfg, 2, 3), [2, 2, 2])
    # Under jit the index cannot be checked: it poisons the output with NaN, never clamps.
    from wavegen.training.steps import merge_model, split_model

    graphdef, params = split_model(model)
    out = jax.jit(lambda p, g: merge_model(graphdef, p)(bins, g))(params, jnp.array([0, 7]))
    assert np.isfinite(np.asarray(out[0])).all() and np.isnan(np.asarray(out[1])).all()
    unconditioned = wm.create_model(tiny(num_genres=0))
    with pytest.raises(ValueError, match="unconditioned"):
        unconditioned(bins, jnp.array([0, 0]))


def test_bad_bins_are_an_error():
    model = wm.create_model(tiny())
    with pytest.raises(ValueError, match=r"0\.\.255, got values in 0\.\.300"):
        model(jnp.array([[0, 300]]))
    with pytest.raises(ValueError, match="integer bins"):
        model(jnp.zeros((2, 10), jnp.float32))
    with pytest.raises(ValueError, match=r"2 axes"):
        model(jnp.zeros((10,), jnp.int32))


def test_bfloat16_compute_keeps_float32_parameters():
    cfg = tiny(dtype="bfloat16")
    model = wm.create_model(cfg, seed=5)
    from wavegen.training.steps import split_model

    _, params = split_model(model)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}


@pytest.mark.parametrize("head,classes,per_target,overall", [
    ("softmax", 256, 0.033, 0.003), ("mol", 65536, 0.053, 0.004)])
@pytest.mark.slow
def test_bfloat16_compute_scores_close_to_float32(head, classes, per_target, overall):
    """Same (random) parameters, bf16 vs f32 compute: the skip sum and the head run in
    float32, so the outputs are not rounded to bfloat16 and the bits/sample differ
    little (with a bf16 skip sum and head: 0.038/0.011 and 0.060/0.0074)."""
    cfg = tiny(head=head, num_classes=classes, num_genres=3, num_mixtures=4)
    model32, graphdef, params = randomized_split(cfg, seed=1)
    from wavegen.training.steps import merge_model, split_model

    graphdef16, _ = split_model(wm.create_model(dataclasses.replace(cfg, dtype="bfloat16")))
    model16 = merge_model(graphdef16, params)
    bins = jax.random.randint(jax.random.key(1), (2, 3000), 0, classes)
    genre = np.array([0, 1])
    out32, out16 = model32(bins, genre), model16(bins, genre)
    assert out16.dtype == jnp.float32
    rounded = out16.astype(jnp.bfloat16).astype(jnp.float32)
    assert float(jnp.mean(rounded != out16)) > 0.5  # a float32 head, not bf16 values
    bits32 = model32.nll_bits(out32[:, :-1], bins[:, 1:])
    bits16 = model16.nll_bits(out16[:, :-1], bins[:, 1:])
    assert 0 < float(jnp.mean(jnp.abs(bits16 - bits32))) < per_target
    assert abs(float(bits16.mean() - bits32.mean())) < overall


def test_scalar_input_kind():
    model = wm.create_model(tiny(input_kind="scalar"), seed=6)
    bins = jax.random.randint(jax.random.key(0), (1, 50), 0, 256)
    out = model(bins)
    assert out.shape == (1, 50, 256) and np.isfinite(np.asarray(out)).all()


# --------------------------------------------------------------------------------------
# Losses


def test_softmax_cross_entropy_in_bits():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 16))
    targets = jax.random.randint(jax.random.key(1), (3, 5), 0, 16)
    ref = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                              np.asarray(targets)[..., None], -1)[..., 0] / math.log(2)
    np.testing.assert_allclose(losses.softmax_cross_entropy_bits(logits, targets), ref,
                               rtol=1e-5)
    uniform = losses.softmax_cross_entropy_bits(jnp.zeros((256,)), jnp.array(7))
    assert float(uniform) == pytest.approx(8.0)


@pytest.mark.parametrize("num_classes", [256, 65536])
def test_mixture_of_logistics_is_a_distribution_over_the_bins(num_classes):
    m = 3
    logits, means = np.array([0.5, -1.0, 0.2]), np.array([-0.3, 0.1, 0.6])
    params = jnp.asarray(np.concatenate([logits, means, [-3.0, -5.0, -4.0]]), jnp.float32)
    bins = jnp.arange(num_classes)
    bits = losses.mol_nll_bits(jnp.broadcast_to(params, (num_classes, 3 * m)), bins,
                               num_classes, m, losses.log_scale_floor(num_classes))
    p = 2.0 ** (-np.asarray(bits, np.float64))
    assert p.sum() == pytest.approx(1.0, abs=2e-3)
    # Components far from the edges: the mean is the weighted mean of the means.
    x = np.asarray(losses.bins_to_unit(bins, num_classes), np.float64)
    weights = np.exp(logits) / np.exp(logits).sum()
    assert (p * x).sum() == pytest.approx((weights * means).sum(), abs=2e-3)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.slow
def test_a_sharp_mixture_scores_near_zero_bits_at_any_depth(bits):
    """One component at the smallest scale centred on the target bin: almost all the mass
    in that bin, at 8 and at 16 bits (the floor comes from the number of classes; a fixed
    -7 floors a 16-bit model at about 6.9 bits/sample)."""
    k = 2 ** bits
    cfg = tiny(head="mol", num_mixtures=2, num_classes=k)
    targets = jnp.array([0, 1, k // 3, k // 2 + 7, k - 2, k - 1])
    x = losses.bins_to_unit(targets, k)
    one = jnp.ones_like(x)
    # Component 0: weight ~1, mean on the target, log-scale far below the floor.
    params = jnp.stack([20 * one, -20 * one, x, -x, -60 * one, 0 * one], axis=-1)
    scored = np.asarray(losses.mol_nll_bits(params, targets, k, 2, cfg.mol_log_scale_min))
    assert (scored < 0.01).all(), scored
    assert cfg.mol_log_scale_min == pytest.approx(math.log(1 / ((k - 1) * 8)))
    # One bin off, the mass is gone: the floor is sharp, not just low.
    wrong = np.asarray(losses.mol_nll_bits(params[2:4], targets[2:4] + 1, k, 2,
                                           cfg.mol_log_scale_min))
    assert (wrong > 5).all()
    # The old fixed floor at 16 bits could not get below ~6.9 bits.
    if bits == 16:
        fixed = np.asarray(losses.mol_nll_bits(params, targets, k, 2, -7.0))
        assert (fixed[1:-1] > 6).all()


@pytest.mark.slow
def test_model_heads_shapes():
    for head in ("softmax", "mol"):
        cfg = tiny(head=head, num_mixtures=5)
        model = wm.create_model(cfg)
        bins = jax.random.randint(jax.random.key(0), (2, 40), 0, 256)
        out = model(bins)
        assert out.shape == (2, 40, 256 if head == "softmax" else 15)
        bits = model.nll_bits(out[:, :-1], bins[:, 1:])
        assert bits.shape == (2, 39) and np.isfinite(np.asarray(bits)).all()
