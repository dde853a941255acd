"""Cached generation: equivalence with the parallel forward pass and with naive sampling,
chunking, priming, temperature, the mixture head, and bad input."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wavegen.generation import generator as gen
from wavegen.model import wavenet as wm
from wavegen.training.steps import merge_model, split_model

from random_params import randomized_split

START = gen.silence_bin("mulaw", 8)  # 128: the mu-law bin of 0.0


def tiny(**kw) -> wm.ModelConfig:
    return wm.preset("tiny", **{"num_classes": 256, "num_genres": 0, **kw})


@functools.lru_cache(maxsize=None)
def split(kernel_size=2, num_genres=0, head="softmax", seed=0, dtype="float32"):
    """(cfg, model, graphdef, params) of a tiny model with every parameter random
    (biases and embeddings included: a generator that dropped one would fail)."""
    cfg = tiny(kernel_size=kernel_size, num_genres=num_genres, head=head, num_mixtures=4,
               dtype=dtype)
    model, graphdef, params = randomized_split(cfg, seed)
    return cfg, model, graphdef, params


def forward(kernel_size=2, num_genres=0, head="softmax", dtype="float32"):
    """The parallel forward pass of `split(...)`'s model, jitted (faster than eager)."""
    _, _, graphdef, params = split(kernel_size, num_genres, head, 0, dtype)
    fwd = jax.jit(lambda p, b, g: merge_model(graphdef, p)(b, g))
    return lambda bins, genre: fwd(params, bins, genre)


def random_bins(shape, seed=0):
    return np.asarray(jax.random.randint(jax.random.key(seed), shape, 0, 256), np.int32)


def test_silence_bin_comes_from_the_quantizer():
    assert gen.silence_bin("mulaw", 8) == 128
    assert gen.silence_bin("linear", 8) == 128
    assert gen.silence_bin("mulaw", 16) == 32768


def test_cache_layout():
    lay = gen.layout(tiny(kernel_size=3))  # dilations 1, 2, 4, 8 twice
    assert lay.lengths == (2, 4, 8, 16) * 2
    assert lay.offsets[:3] == (0, 2, 6) and lay.rows == 60 and lay.period == 16
    cache = gen.init_cache(tiny(kernel_size=3), batch=5)
    assert cache.buffer.shape == (60, 5, 16) and cache.buffer.dtype == jnp.float32


# --------------------------------------------------------------------------------------
# The cached step against the convolutional forward pass


@pytest.mark.parametrize("kernel_size,num_genres", [
    pytest.param(2, 0, marks=pytest.mark.slow), pytest.param(3, 0, marks=pytest.mark.slow),
    (2, 3), pytest.param(3, 3, marks=pytest.mark.slow)])
def test_cached_outputs_equal_the_parallel_forward_pass(kernel_size, num_genres):
    cfg, model, graphdef, params = split(kernel_size, num_genres)
    # Longer than the receptive field (31 / 61): every ring wraps around several times.
    bins = random_bins((2, 3 * wm.receptive_field(cfg)))
    genre = np.array([0, 2]) if num_genres else None
    fwd = forward(kernel_size, num_genres)
    full = fwd(bins, genre)
    cached, cache = gen.teacher_force(graphdef, params, gen.init_cache(cfg, 2), bins, genre)
    assert cached.shape == full.shape == (2, bins.shape[1], 256)
    assert float(jnp.max(jnp.abs(cached - full))) < 1e-4
    # Single steps (T = 1), one call per time step, continuing the cache.
    nxt = random_bins((2, 3), seed=1)
    longer = fwd(np.concatenate([bins, nxt], 1), genre)
    for t in range(3):
        out, cache = gen.teacher_force(graphdef, params, cache, nxt[:, t:t + 1], genre)
        assert float(jnp.max(jnp.abs(out[:, 0] - longer[:, bins.shape[1] + t]))) < 1e-4


def cache_history(cfg, cache):
    """Each layer's ring in time order, oldest first: equal for two caches holding the
    same past whatever their write positions."""
    lay = gen.layout(cfg)
    return [jnp.roll(cache.buffer[off:off + n], -(cache.pos % n), axis=0)
            for off, n in zip(lay.offsets, lay.lengths)]


def _zeroed(params, path):
    """params with the array at `path` (a tuple of keys) set to zeros."""
    out = jax.tree.map(lambda x: x, params)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = jnp.zeros_like(node[path[-1]])
    return out


@pytest.mark.parametrize("path", [("layers", 0, "conv_bias"), ("layers", 5, "out_bias"),
                                  ("head_bias1",), ("head_bias2",), ("genre_embedding",)])
def test_the_equivalence_test_catches_a_generator_that_drops_a_bias(path):
    """With random parameters a cache that drops any one bias or embedding misses the
    forward pass by far more than the tolerance the equivalence tests use (1e-4); with
    freshly initialised parameters (zero biases) it would not."""
    cfg, _, graphdef, params = split(2, 3)
    bins, genre = random_bins((2, 40)), np.array([0, 2])
    full = forward(2, 3)(bins, genre)
    dropped, _ = gen.teacher_force(graphdef, _zeroed(params, path), gen.init_cache(cfg, 2),
                                   bins, genre)
    assert float(jnp.max(jnp.abs(dropped - full))) > 1e-2
    if path[-1] != "genre_embedding":  # freshly initialised, a bias is zero: dropping it
        fresh = split_model(wm.create_model(cfg, seed=0))[1]  # would change nothing
        assert not np.any(np.asarray(functools.reduce(lambda n, k: n[k], path, fresh)))


@pytest.mark.parametrize("prime_len", [5, pytest.param(200, marks=pytest.mark.slow)])
def test_start_fills_the_caches_as_teacher_forcing_does(prime_len):
    """`start` fills the caches with one parallel pass; stepping through the silence and
    the prime (all but its last sample) leaves the same past."""
    cfg, _, graphdef, params = split(3, 3)
    rf = wm.receptive_field(cfg)
    prime = random_bins((2, prime_len), seed=2)
    state = gen.start(graphdef, params, jax.random.key(0), num_streams=2, start_bin=START,
                      genre=[0, 1], prime=prime)
    history = np.concatenate([np.full((2, rf - 1), START, np.int32), prime[:, :-1]], 1)
    _, stepped = gen.teacher_force(graphdef, params, gen.init_cache(cfg, 2), history, [0, 1])
    for a, b in zip(cache_history(cfg, state.cache), cache_history(cfg, stepped)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_bfloat16_generation_runs_in_bfloat16():
    cfg, model, graphdef, params = split(dtype="bfloat16")
    bins = random_bins((1, 50))
    cached, cache = gen.teacher_force(graphdef, params, gen.init_cache(cfg, 1), bins)
    assert cache.buffer.dtype == jnp.bfloat16 and cached.dtype == jnp.float32
    full = forward(dtype="bfloat16")(bins, None)
    err = float(jnp.max(jnp.abs(cached - full)))
    assert 0 < err < 0.05 * float(jnp.max(jnp.abs(full)))


# --------------------------------------------------------------------------------------
# Cached against naive generation


@pytest.mark.parametrize("kernel_size,num_genres,head,prime_len,temperature", [
    (2, 0, "softmax", 0, 1.0),
    (3, 3, "softmax", 150, 0.7),  # a prime longer than the receptive field (61)
    (2, 3, "softmax", 10, 1.0),  # shorter (31)
    (3, 0, "mol", 40, 1.0),
])
@pytest.mark.slow
def test_cached_and_naive_generation_draw_the_same_samples(kernel_size, num_genres, head,
                                                           prime_len, temperature):
    cfg, _, graphdef, params = split(kernel_size, num_genres, head)
    genre = np.array([2, 0, 1]) if num_genres else None
    prime = random_bins((3, prime_len), seed=3) if prime_len else None
    kw = dict(num_streams=3, length=2 * wm.receptive_field(cfg) + 7, start_bin=START,
              temperature=temperature, genre=genre, prime=prime)
    cached = gen.generate(graphdef, params, jax.random.key(4), **kw)
    naive = gen.naive_generate(graphdef, params, jax.random.key(4), **kw)
    assert cached.shape == (3, kw["length"]) and cached.dtype == jnp.int32
    np.testing.assert_array_equal(cached, naive)
    # Streams differ (independent keys), and a sequence is not stuck on one bin.
    assert not np.array_equal(cached[0], cached[1])
    assert len(np.unique(np.asarray(cached[0]))) > 5


@pytest.mark.slow
def test_chunked_generation_equals_one_call():
    cfg, _, graphdef, params = split(3, 3)
    state = gen.start(graphdef, params, jax.random.key(5), num_streams=2, start_bin=START,
                      genre=[1, 2], prime=random_bins((2, 20)))
    whole, end = gen.generate_chunk(graphdef, params, state, 148)
    # Uneven chunks, with the noise drawn in blocks that do not line up with them.
    parts, s = [], state
    for _ in range(4):  # 37 = 2 blocks of 16 + 5
        bins, s = gen.generate_chunk(graphdef, params, s, 37, block=16, unroll=2)
        parts.append(bins)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    assert int(s.count) == int(end.count) == 148
    np.testing.assert_array_equal(s.inputs, whole[:, -1])
    # The state passed in stays valid: generating from it again repeats itself.
    again, _ = gen.generate_chunk(graphdef, params, state, 148)
    np.testing.assert_array_equal(again, whole)
    np.testing.assert_array_equal(
        whole, gen.generate(graphdef, params, jax.random.key(5), num_streams=2, length=148,
                            start_bin=START, genre=[1, 2], prime=random_bins((2, 20))))


@pytest.mark.slow
def test_a_stream_does_not_depend_on_the_others():
    _, _, graphdef, params = split()
    kw = dict(length=69, start_bin=START)  # shapes compiled by the naive test above
    three = gen.generate(graphdef, params, jax.random.key(4), num_streams=3, **kw)
    one = gen.generate(graphdef, params, jax.random.key(4), num_streams=1, **kw)
    np.testing.assert_array_equal(one[0], three[0])


# --------------------------------------------------------------------------------------
# Priming


@pytest.mark.slow
def test_prime_is_fed_through_the_caches_and_generation_continues_from_it():
    cfg, _, graphdef, params = split(2, 3)
    rf = wm.receptive_field(cfg)
    prime = random_bins((2, 100), seed=7)
    state = gen.start(graphdef, params, jax.random.key(8), num_streams=2, start_bin=START,
                      genre=2, prime=prime)
    np.testing.assert_array_equal(state.inputs, prime[:, -1])
    # Teacher forcing the silence and the whole prime (but its last sample, the next
    # input) through `step` from an empty cache leaves the same past in the caches.
    history = np.concatenate([np.full((2, rf - 1), START, np.int32), prime[:, :-1]], 1)
    _, forced = gen.teacher_force(graphdef, params, gen.init_cache(cfg, 2), history, [2, 2])
    for a, b in zip(cache_history(cfg, state.cache), cache_history(cfg, forced)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Continuing from the teacher-forced cache draws the same samples.
    forced_state = state._replace(cache=forced)
    np.testing.assert_array_equal(gen.generate_chunk(graphdef, params, state, 50)[0],
                                  gen.generate_chunk(graphdef, params, forced_state, 50)[0])
    # Only the prime's last receptive field matters: the first new sample's outputs.
    def first_outputs(prime):
        s = gen.start(graphdef, params, jax.random.key(8), num_streams=2, start_bin=START,
                      genre=2, prime=prime)
        return gen.teacher_force(graphdef, params, s.cache, s.inputs[:, None], [2, 2])[0]

    changed = prime.copy()
    changed[:, :100 - rf] = (changed[:, :100 - rf] + 99) % 256
    np.testing.assert_array_equal(first_outputs(changed), first_outputs(prime))
    changed[:, -rf] = (changed[:, -rf] + 99) % 256  # the oldest sample the output sees
    assert not np.array_equal(first_outputs(changed), first_outputs(prime))
    # The output excludes the prime; one prime (P,) serves every stream.
    kw = dict(num_streams=2, length=50, start_bin=START, genre=2)
    a = gen.generate(graphdef, params, jax.random.key(8), prime=prime, **kw)
    np.testing.assert_array_equal(a, gen.generate_chunk(graphdef, params, state, 50)[0])
    one = gen.generate(graphdef, params, jax.random.key(8), prime=prime[1], **kw)
    np.testing.assert_array_equal(one[1], a[1])


def test_the_song_starts_after_silence():
    """Without a prime the context is start_bin; a prime of silence is the same thing."""
    _, _, graphdef, params = split()
    kw = dict(num_streams=3, length=69, start_bin=START)  # shapes compiled already
    plain = gen.generate(graphdef, params, jax.random.key(9), **kw)
    silent = gen.generate(graphdef, params, jax.random.key(9), prime=np.full(5, START), **kw)
    np.testing.assert_array_equal(plain, silent)


# --------------------------------------------------------------------------------------
# Sampling


def draw(cfg, key, outputs, temperature=1.0):
    """One bin from outputs (C,) with one key: what generation does for each sample."""
    return gen.draw(cfg, outputs, gen.draw_noise(cfg, key), temperature)


def entropy_bits(samples: np.ndarray) -> float:
    p = np.bincount(samples.ravel(), minlength=256) / samples.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_temperature_controls_the_entropy_of_draws():
    cfg = tiny()
    logits = jnp.asarray(np.random.default_rng(0).normal(0.0, 2.0, 256), jnp.float32)
    keys = jax.random.split(jax.random.key(10), 4000)
    entropies = []
    for t in (0.25, 0.5, 1.0, 2.0):
        draws = jax.vmap(lambda k: draw(cfg, k, logits, t))(keys)
        entropies.append(entropy_bits(np.asarray(draws)))
    assert entropies == sorted(entropies) and entropies[-1] - entropies[0] > 2.0
    # T = 1 is the categorical of the logits; T = 0 the argmax.
    freq = np.bincount(np.asarray(jax.vmap(lambda k: draw(cfg, k, logits))(
        keys)), minlength=256) / 4000
    np.testing.assert_allclose(freq, jax.nn.softmax(logits), atol=0.03)
    assert int(draw(cfg, keys[0], logits, 0.0)) == int(jnp.argmax(logits))


@pytest.mark.slow
def test_lower_temperature_generates_lower_entropy_songs():
    _, _, graphdef, params = split()
    # A freshly initialised head predicts nearly uniform bins; make the model opinionated.
    params = {**params, "head_kernel2": params["head_kernel2"] * 100}
    kw = dict(num_streams=4, length=300, start_bin=START)
    ent = [entropy_bits(np.asarray(gen.generate(graphdef, params, jax.random.key(11),
                                                temperature=t, **kw)))
           for t in (0.3, 1.0, 3.0)]
    assert ent[0] < ent[1] < ent[2]
    greedy = gen.generate(graphdef, params, jax.random.key(12), temperature=0.0, **kw)
    np.testing.assert_array_equal(greedy[0], greedy[1])  # T = 0: no randomness left


@pytest.mark.slow
def test_mixture_head_sampling_gives_valid_bins():
    cfg = tiny(head="mol", num_mixtures=2)
    # Component 0: logit 3, mean 0.5, scale e^-6 (a third of a bin); component 1:
    # logit 0, mean -0.5.
    out = jnp.array([3.0, 0.0, 0.5, -0.5, -6.0, -6.0])
    keys = jax.random.split(jax.random.key(13), 4000)
    draws = np.asarray(jax.vmap(lambda k: draw(cfg, k, out))(keys))
    assert draws.dtype == np.int32 and draws.min() >= 0 and draws.max() <= 255
    near0 = np.abs(draws - 191) <= 5  # the bin of 0.5: (0.5 + 1) * 255 / 2 = 191.25
    near1 = np.abs(draws - 64) <= 5
    assert (near0 | near1).all()
    assert abs(near0.mean() - float(jax.nn.sigmoid(3.0))) < 0.03
    cold = np.asarray(jax.vmap(lambda k: draw(cfg, k, out, 0.3))(keys))
    assert np.mean(np.abs(cold - 191) <= 5) > near0.mean()  # the likelier component gains
    assert int(draw(cfg, keys[0], out, 0.0)) == 191  # its mean
    assert np.abs(cold[np.abs(cold - 191) <= 5] - 191).mean() \
        < np.abs(draws[near0] - 191).mean()  # narrower components
    # Generation with a mixture head (shapes compiled by the naive test): bins in range.
    _, _, graphdef, params = split(3, 0, "mol")
    bins = np.asarray(gen.generate(graphdef, params, jax.random.key(14), num_streams=3,
                                   length=129, start_bin=START, prime=np.zeros(40, int)))
    assert bins.min() >= 0 and bins.max() <= 255 and len(np.unique(bins)) > 10


# --------------------------------------------------------------------------------------
# Bad input


def test_wrong_genre_is_an_error():
    _, _, graphdef, params = split(2, 3)
    kw = dict(num_streams=2, length=5, start_bin=START)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"genre index 3 is out of range.*3 genres"):
        gen.generate(graphdef, params, key, genre=[0, 3], **kw)
    with pytest.raises(ValueError, match=r"genre index -1 is out of range"):
        gen.generate(graphdef, params, key, genre=-1, **kw)
    with pytest.raises(ValueError, match="conditioned on 3 genres"):
        gen.generate(graphdef, params, key, **kw)
    with pytest.raises(ValueError, match="one per sequence"):
        gen.generate(graphdef, params, key, genre=[0, 1, 2], **kw)
    with pytest.raises(ValueError, match="genre index 7"):
        gen.teacher_force(graphdef, params, gen.init_cache(split(2, 3)[0], 1),
                          np.zeros((1, 4), np.int32), [7])
    _, _, graphdef0, params0 = split()
    with pytest.raises(ValueError, match="unconditioned"):
        gen.generate(graphdef0, params0, key, genre=0, **kw)


def test_bad_arguments_are_errors():
    _, _, graphdef, params = split()
    key = jax.random.key(0)
    kw = dict(num_streams=2, length=5)
    with pytest.raises(ValueError, match=r"start_bin must be a bin in 0\.\.255"):
        gen.generate(graphdef, params, key, start_bin=256, **kw)
    with pytest.raises(ValueError, match=r"prime must be bins in 0\.\.255"):
        gen.generate(graphdef, params, key, start_bin=START, prime=[1, 300], **kw)
    with pytest.raises(ValueError, match=r"prime must be \(P,\) or \(2, P\)"):
        gen.generate(graphdef, params, key, start_bin=START, prime=np.zeros((3, 4), int), **kw)
    with pytest.raises(ValueError, match="temperature"):
        gen.generate(graphdef, params, key, start_bin=START, temperature=-1.0, **kw)
    with pytest.raises(ValueError, match="length must be a positive int"):
        gen.generate(graphdef, params, key, start_bin=START, num_streams=1, length=0)
