"""experiments/bench/plain_wavenet.py: the plain-JAX WaveNet the learning bench compares
wavegen's defaults with - causal, the same shape as wavegen's model, it learns, and it is
scored on exactly the targets (and unigram) wavegen's evaluation uses."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments.bench import plain_wavenet as pw
from wavegen.data.dataset import open_dataset
from wavegen.model import wavenet as wm
from wavegen.training import steps as wt


def small_cfg(**kw) -> pw.PlainConfig:
    return pw.PlainConfig(**{"num_classes": 16, "num_genres": 2, "stacks": 2,
                             "layers_per_stack": 3, "residual_channels": 8,
                             "gate_channels": 8, "skip_channels": 8, "genre_embed_dim": 4,
                             **kw})


@pytest.mark.slow
def test_output_t_depends_on_inputs_up_to_t_only():
    cfg = small_cfg()
    params = pw.init_params(cfg, seed=1)
    rng = np.random.default_rng(0)
    bins = rng.integers(0, cfg.num_classes, (2, 40)).astype(np.int32)
    genre = np.array([0, 1], np.int32)
    out = np.asarray(pw.forward(cfg, params, bins, genre))
    rf = cfg.receptive_field
    assert rf == 2 * (1 + 2 + 4) + 1
    for t in (0, 5, rf, 38):
        changed = bins.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % cfg.num_classes
        out2 = np.asarray(pw.forward(cfg, params, changed, genre))
        np.testing.assert_array_equal(out2[:, :t + 1], out[:, :t + 1])  # t+1.. unseen
        assert not np.allclose(out2[:, t + 1], out[:, t + 1])  # input t+1 reaches t+1
    # ... and nothing older than the receptive field reaches output t.
    t = 35
    changed = bins.copy()
    changed[:, :t - rf + 1] = (changed[:, :t - rf + 1] + 1) % cfg.num_classes
    out2 = np.asarray(pw.forward(cfg, params, changed, genre))
    np.testing.assert_array_equal(out2[:, t:], out[:, t:])
    assert not np.array_equal(out2[:, t - 1], out[:, t - 1])  # the oldest it sees
    # The genre reaches every output.
    out3 = np.asarray(pw.forward(cfg, params, bins, genre[::-1]))
    assert not np.allclose(out3[:, 0], out[:, 0])


def test_pytorch_default_init_bounds():
    cfg = small_cfg()
    params = pw.init_params(cfg, seed=0)
    assert float(np.abs(params["input_w"]).max()) <= 1 / np.sqrt(cfg.num_classes)
    assert float(np.abs(params["layers"][0]["conv_w"]).max()) <= 1 / np.sqrt(
        cfg.kernel_size * cfg.residual_channels)
    assert float(np.abs(params["head_w2"]).max()) <= 1 / np.sqrt(cfg.skip_channels)
    # biases are drawn too (torch's Conv1d), not zero
    assert float(np.abs(params["layers"][0]["res_b"]).max()) > 0
    assert float(np.abs(params["head_b2"]).max()) > 0


@pytest.mark.slow
def test_a_few_adam_steps_lower_the_loss_on_a_fixed_batch():
    cfg = small_cfg()
    state = pw.create_state(cfg, seed=0)
    step = pw.make_train_step(cfg)
    rng = np.random.default_rng(1)
    # A learnable batch: a repeating pattern (predictable from the previous bins).
    pattern = np.tile(np.array([0, 3, 7, 12, 7, 3], np.int32), 20)[: cfg.receptive_field + 32]
    audio = np.stack([pattern, np.roll(pattern, 2)])
    genre = rng.integers(0, cfg.num_genres, 2).astype(np.int32)
    losses = []
    for _ in range(8):
        state, bits = step(state, audio, genre)
        losses.append(float(bits))
    assert all(np.isfinite(losses))
    # Adam at 1e-3 moves every weight by about 1e-3 a step: small, steady steps down.
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.03, losses


@pytest.mark.slow
def test_same_shape_as_wavegen_small():
    cfg = wm.preset("small", num_classes=256, num_genres=3)
    plain = pw.PlainConfig.like(cfg)
    assert plain.receptive_field == wm.receptive_field(cfg) == 2047
    ours = sum(x.size for x in jax.tree.leaves(wt.split_model(wm.create_model(cfg))[1]))
    theirs = sum(x.size for x in jax.tree.leaves(pw.init_params(plain)))
    # The same parameters, plus the one-hot input's bias (wavegen's lookup has none).
    assert theirs == ours + cfg.residual_channels
    with pytest.raises(ValueError, match="softmax head"):
        pw.PlainConfig.like(wm.preset("small", head="mol", num_classes=256, num_genres=0))


@pytest.mark.slow
def test_evaluation_scores_wavegens_targets_and_unigram(synth_dataset):
    ds = open_dataset(synth_dataset())
    cfg = wm.for_dataset(wm.preset("tiny"), ds.spec)
    graphdef, state = wt.create_train_state(cfg, wt.OptimConfig().for_run(10), seed=0)
    ours = wt.evaluate(wt.make_p_eval_step(graphdef), wt.replicate(state.params),
                       pw.split_batches(ds, wm.receptive_field(cfg), per_device_batch=4))
    plain = pw.PlainConfig.like(cfg)
    theirs = pw.evaluate_split(plain, pw.init_params(plain), ds, per_device_batch=4)
    assert theirs["targets"] == ours["targets"] > 0
    assert theirs["unigram_bits"] == ours["unigram_bits"]
    # An untrained torch-initialised model is near uniform: a few bits, finite.
    assert np.isfinite(theirs["nll_bits"]) and 0 < theirs["nll_bits"] < 12
