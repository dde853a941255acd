"""Training and evaluation steps: data parallelism, optimizer, learning, evaluation.

The 8-device check runs in a subprocess: XLA_FLAGS=--xla_force_host_platform_device_count
must be set before jax initializes its CPU backend, and in a pytest run other test modules
have long initialized it with one device. A fresh interpreter is the one robust place,
whatever the collection order.
"""

from __future__ import annotations

import json
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavegen.data import audio, synth
from wavegen.data import input_pipeline as ip
from wavegen.data.dataset import DatasetSpec, open_dataset
from wavegen.model import wavenet as wm
from wavegen.training import steps as wt

from helpers import run_command


def spec(context=4096, bits=8, genres=("unknown",)):
    return DatasetSpec(sample_rate=16000, quantization="mulaw", bits=bits,
                       chunk_samples=context + 16000, context_samples=context, genres=genres)


# --------------------------------------------------------------------------------------
# Set-up checks


def test_model_and_dataset_mismatches_are_refused_with_one_clear_error():
    small = wm.preset("small", num_classes=256, num_genres=0)
    rf = wm.receptive_field(small)
    ip.Window(spec(context=2047), rf)  # receptive field 2047 fits exactly
    with pytest.raises(ValueError, match=r"receptive field of 2047 samples \(127\.9 ms at "
                                         r"16000 Hz\) exceeds the dataset's context of 2046"):
        ip.Window(spec(context=2046), rf)
    with pytest.raises(ValueError, match=r"num_classes=256 does not match the dataset's "
                                         r"1024 classes \(2\*\*10 bins\)"):
        wm.for_dataset(small, spec(bits=10))
    with pytest.raises(ValueError, match=r"num_genres=3 does not match the dataset's 2 "
                                         r"genres \(rock, unknown\)"):
        wm.for_dataset(wm.preset("tiny", num_classes=256, num_genres=3),
                       spec(genres=("rock", "unknown")))


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    cfg = wt.OptimConfig(lr=1e-3, warmup_steps=100, total_steps=1100, end_lr=1e-5)
    lr = wt.create_learning_rate_fn(cfg)
    assert float(lr(0)) == 0.0
    assert float(lr(50)) == pytest.approx(5e-4)
    assert float(lr(100)) == pytest.approx(1e-3)
    assert float(lr(600)) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5, rel=1e-4)
    assert float(lr(1100)) == pytest.approx(1e-5)
    decay = [float(lr(s)) for s in range(100, 1101, 100)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    with pytest.raises(ValueError, match=r"optim.warmup_steps=10 must be less than "
                                         r"optim.total_steps=10"):
        wt.OptimConfig(warmup_steps=10, total_steps=10)


def test_weight_decay_spares_biases_and_embeddings():
    cfg = wm.preset("tiny", num_classes=256, num_genres=3)
    _, state = wt.create_train_state(cfg, wt.OptimConfig().for_run(10))
    mask = wt.decay_mask(state.params)
    assert mask["input_embedding"] is False and mask["genre_embedding"] is False
    assert mask["head_kernel1"] is True and mask["head_bias1"] is False
    layer = mask["layers"][0]
    assert layer["conv_kernel"] and layer["out_kernel"] and layer["cond_kernel"]
    assert not layer["conv_bias"] and not layer["out_bias"]


def test_an_untrained_model_predicts_a_uniform_distribution():
    """The last head layer starts near zero: the first loss is log2(classes), no more."""
    cfg = wm.preset("small", num_classes=256, num_genres=3)
    graphdef, state = wt.create_train_state(cfg, wt.OptimConfig().for_run(10), seed=4)
    rng = np.random.default_rng(0)
    rf = wm.receptive_field(cfg)
    batch = {"audio": rng.integers(0, 256, (2, rf + 100)).astype(np.int32),
             "genre": np.array([0, 2], np.int32)}
    bits = wt.model_loss(wt.merge_model(graphdef, state.params), batch)
    assert float(jnp.mean(bits)) == pytest.approx(8.0, abs=0.01)


def test_train_state_is_a_pytree_of_arrays():
    cfg = wm.preset("tiny", num_classes=256, num_genres=2)
    graphdef, state = wt.create_train_state(cfg, wt.OptimConfig(ema_decay=0.9).for_run(10), seed=0)
    leaves = jax.tree.leaves(state)
    assert leaves and all(isinstance(x, jax.Array) for x in leaves)
    assert state.ema_params is not None
    # Round trip through numpy (what a checkpoint does) and back into a working model.
    restored = jax.tree.map(np.asarray, state)
    model = wt.merge_model(graphdef, restored.params)
    out = model(jnp.zeros((1, 40), jnp.int32), jnp.array([1]))
    assert out.shape == (1, 40, 256)
    _, no_ema = wt.create_train_state(cfg, wt.OptimConfig().for_run(10), seed=0)
    assert no_ema.ema_params is None


# --------------------------------------------------------------------------------------
# Data parallelism

EIGHT_DEVICES = textwrap.dedent("""
    import functools, json
    import jax, numpy as np
    from wavegen.model import wavenet as wm
    from wavegen.training import steps as wt

    assert jax.local_device_count() == 8, jax.devices()
    cfg = wm.preset("tiny", num_classes=256, num_genres=3)
    # eps=1e-4: Adam's first update is lr * g / (|g| + eps); with the usual 1e-8, a weight
    # whose gradient is ~1e-8 moves by a fraction of lr that float rounding decides, so
    # the comparison would test rounding, not data parallelism.
    optim = wt.OptimConfig(lr=1e-2, warmup_steps=0, total_steps=10, eps=1e-4,
                           clip_norm=0.05, ema_decay=0.5)
    graphdef, state = wt.create_train_state(cfg, optim, seed=3)
    rf = wm.receptive_field(cfg)
    rng = np.random.default_rng(0)
    audio = rng.integers(0, 256, (8, rf + 64)).astype(np.int32)
    genre = rng.integers(0, 3, (8,)).astype(np.int32)

    p_step8 = wt.make_p_train_step(graphdef, optim)
    lr_fn = wt.create_learning_rate_fn(optim)
    p_step1 = jax.pmap(functools.partial(
        wt.train_step, graphdef=graphdef, tx=wt.make_optimizer(optim, lr_fn),
        learning_rate_fn=lr_fn, ema_decay=optim.ema_decay), axis_name=wt.AXIS,
        devices=jax.local_devices()[:1])
    s8, m8 = p_step8(wt.replicate(state),
                     {"audio": audio.reshape(8, 1, -1), "genre": genre.reshape(8, 1)})
    s1, m1 = p_step1(wt.replicate(state, jax.local_devices()[:1]),
                     {"audio": audio.reshape(1, 8, -1), "genre": genre.reshape(1, 8)})
    spread = max(float(np.abs(np.asarray(x) - np.asarray(x)[:1]).max())
                 for x in jax.tree.leaves(s8))
    a, b, p0 = wt.unreplicate(s8), wt.unreplicate(s1), state
    diff = lambda u, v: max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                            for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(v)))
    print(json.dumps({
        "devices": len({d for x in jax.tree.leaves(s8) for d in x.devices()}),
        "replica_spread": spread,
        "param_diff": diff(a.params, b.params), "state_diff": diff(a, b),
        "param_moved": diff(a.params, p0.params),
        "m8": {k: float(v[0]) for k, v in m8.items()},
        "m1": {k: float(v[0]) for k, v in m1.items()}}))
""")


@pytest.mark.slow
def test_one_step_on_8_devices_equals_one_step_on_one_device():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    run = run_command([sys.executable, "-c", EIGHT_DEVICES], env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["devices"] == 8
    assert r["replica_spread"] == 0.0  # all replicas stay identical
    assert r["param_moved"] > 5e-3  # the step did move the parameters (lr 1e-2)
    assert r["param_diff"] < 1e-6, r
    assert r["state_diff"] < 1e-6, r  # optimizer moments and EMA too
    for k in ("loss_bits", "grad_norm", "learning_rate"):
        assert r["m8"][k] == pytest.approx(r["m1"][k], rel=1e-5), k
    assert r["m8"]["grad_norm"] > 0.05  # so clipping was active in this step


# --------------------------------------------------------------------------------------
# Learning


@pytest.mark.slow
def test_tiny_model_overfits_one_short_clip():
    cfg = wm.preset("tiny", num_classes=256, num_genres=0)
    rf = wm.receptive_field(cfg)
    x = synth.render_song("piano_waltz", 1.0, 8000, seed=1).mean(axis=1)
    clip = audio.mulaw_encode(x[2000:2000 + rf + 400], 8).astype(np.int32)
    optim = wt.OptimConfig(lr=1e-2, warmup_steps=10, total_steps=150, end_lr=1e-4,
                           weight_decay=0.0)
    graphdef, state = wt.create_train_state(cfg, optim)
    p_step = wt.make_p_train_step(graphdef, optim)
    state = wt.replicate(state)
    batch = {"audio": clip[None, None], "genre": np.zeros((1, 1), np.int32)}
    first = None
    for _ in range(150):
        state, metrics = p_step(state, batch)
        first = first or float(metrics["loss_bits"][0])
    last = float(metrics["loss_bits"][0])
    assert first > 6.0  # starts near log2(256) = 8 bits
    assert last < 0.05, last


@pytest.mark.slow
def test_bfloat16_mixture_model_trains_with_float32_state():
    cfg = wm.preset("tiny", num_classes=256, num_genres=0, head="mol", num_mixtures=4,
                    dtype="bfloat16")
    optim = wt.OptimConfig(lr=3e-3, warmup_steps=0, total_steps=50)
    graphdef, state = wt.create_train_state(cfg, optim)
    p_step = wt.make_p_train_step(graphdef, optim)
    state = wt.replicate(state)
    x = synth.render_song("ambient_pad", 0.5, 8000, seed=2).mean(axis=1)
    clip = audio.mulaw_encode(x[:wm.receptive_field(cfg) + 300], 8).astype(np.int32)
    batch = {"audio": clip[None, None], "genre": np.zeros((1, 1), np.int32)}
    losses = []
    for _ in range(40):
        state, metrics = p_step(state, batch)
        losses.append(float(metrics["loss_bits"][0]))
    assert {x.dtype for x in jax.tree.leaves(state)} <= {jnp.dtype("float32"),
                                                         jnp.dtype("int32"),
                                                         jnp.dtype("uint32")}
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 1.0


@pytest.mark.slow
def test_ema_is_debiased_so_the_initial_weights_carry_no_weight():
    cfg = wm.preset("tiny", num_classes=256, num_genres=0)
    decay = 0.75
    optim = wt.OptimConfig(lr=1e-2, warmup_steps=0, total_steps=10, ema_decay=decay)
    graphdef, state0 = wt.create_train_state(cfg, optim)
    p_step = wt.make_p_train_step(graphdef, optim)
    rng = np.random.default_rng(0)
    state, params = wt.replicate(state0), []
    for _ in range(3):
        batch = {"audio": rng.integers(0, 256, (1, 2, 60)).astype(np.int32),
                 "genre": np.zeros((1, 2), np.int32)}
        state, _ = p_step(state, batch)
        params.append(jax.tree.map(np.asarray, wt.unreplicate(state).params))
    ema = wt.unreplicate(state).ema_params
    # The zero-started average of the three steps' parameters, divided by 1 - decay**3.
    for e, *ps in zip(jax.tree.leaves(ema), *(jax.tree.leaves(p) for p in params)):
        m = np.zeros_like(ps[0])
        for p in ps:
            m = decay * m + (1 - decay) * p
        np.testing.assert_allclose(e, m / (1 - decay ** 3), rtol=1e-5, atol=1e-7)
    one = wt.ema_update(state0.params, params[0], decay, jnp.int32(1))
    for e, p in zip(jax.tree.leaves(one), jax.tree.leaves(params[0])):
        np.testing.assert_allclose(e, p, rtol=1e-5, atol=1e-7)  # one step: the parameters


@pytest.mark.slow
def test_eval_step_ignores_padding_and_sums_bits():
    cfg = wm.preset("tiny", num_classes=256, num_genres=0)
    graphdef, state = wt.create_train_state(cfg, wt.OptimConfig().for_run(10))
    rf = wm.receptive_field(cfg)
    rng = np.random.default_rng(1)
    audio_ = rng.integers(0, 256, (1, 3, rf + 50)).astype(np.int32)
    batch = {"audio": audio_, "genre": np.zeros((1, 3), np.int32),
             "mask": np.array([[1.0, 1.0, 0.0]], np.float32)}
    sums = wt.make_p_eval_step(graphdef)(wt.replicate(state.params), batch)
    model = wt.merge_model(graphdef, state.params)
    bits = model.nll_bits(model(jnp.asarray(audio_[0, :2, :-1]))[:, rf - 1:],
                          jnp.asarray(audio_[0, :2, rf:]))
    assert float(sums["targets"][0]) == 100.0
    assert float(sums["nll_bits_sum"][0]) == pytest.approx(float(bits.sum()), rel=1e-5)


@pytest.fixture(scope="module")
def music_dir(synth_dataset):
    """Songs from the synthesizer (chords, melodies, rhythm) through the Beam pipeline."""
    return synth_dataset(sample_rate=8000, seconds=8.0, songs_per_style=4,
                         split="train:0.7,validation:0.3")


@pytest.mark.slow
def test_learns_music_below_the_unigram_baseline(music_dir):
    ds = open_dataset(music_dir)
    cfg = wm.for_dataset(wm.ModelConfig(stacks=2, layers_per_stack=7, residual_channels=32,
                                        gate_channels=64, skip_channels=32), ds.spec)
    assert cfg.num_genres == 4  # conditioned on the three styles (+ unknown)
    steps = 300
    optim = wt.OptimConfig(lr=3e-3, warmup_steps=20, total_steps=steps, end_lr=3e-4)
    graphdef, state = wt.create_train_state(cfg, optim, seed=0)
    p_step = wt.make_p_train_step(graphdef, optim)
    state = wt.replicate(state)
    batches = ip.train_batches(ds, ip.Window(ds.spec, wm.receptive_field(cfg), 500),
                               per_device_batch=8)
    p_eval = wt.make_p_eval_step(graphdef)

    def evaluate(params, max_batches=None):
        return wt.evaluate(p_eval, params, ip.eval_batches(
            ds, ip.Window(ds.spec, wm.receptive_field(cfg)), per_device_batch=4,
            max_batches=max_batches))

    before = evaluate(state.params, max_batches=4)
    for _ in range(steps):
        state, metrics = p_step(state, next(batches))
    after = evaluate(state.params)
    baseline = ip.unigram_entropy_bits(ds, "validation")
    assert after["unigram_bits"] == pytest.approx(baseline)  # same targets, same histogram
    assert before["nll_bits"] > baseline  # an untrained model is worse than the histogram
    assert after["nll_bits"] < baseline - 1.0, (after, baseline)
    assert float(metrics["loss_bits"][0]) < baseline - 1.0
