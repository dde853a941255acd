"""One scoring function: `wavegen.training.steps.score` against an independent NumPy
computation, and every evaluation that uses it (training's periodic one, `evaluate.py`'s
report, the benchmark's) giving the same numbers on the same batch.

The case is small and fixed: random parameters (biases included, not the zeros of a fresh
model) and a batch whose padded examples hold different audio from the real ones, so
counting a padded target would move every figure.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from experiments.bench import plain_wavenet as pw
from wavegen.data import input_pipeline as ip
from wavegen.data.dataset import DatasetSpec
from wavegen.model import wavenet as wm
from wavegen.training import evaluation, loop
from wavegen.training import steps as wt

TARGETS = 40
MASK = np.array([[1, 1, 0, 1, 0, 1]], np.float32)  # two padded examples among six
SONGS = np.array([[b"s1", b"s2", b"s1", b"s3", b"s9", b"s1"]], object)


@pytest.fixture(scope="module")
def case():
    cfg0 = wm.preset("tiny")
    rf = wm.receptive_field(cfg0)
    spec = DatasetSpec(sample_rate=8000, quantization="mulaw", bits=8,
                       chunk_samples=rf + 20 + TARGETS, context_samples=rf + 20,
                       genres=("unknown", "a", "b"))
    cfg = wm.for_dataset(cfg0, spec)
    graphdef, state = wt.create_train_state(cfg, wt.OptimConfig().for_run(10), seed=3)
    rng = np.random.default_rng(7)
    params = jax.tree.map(
        lambda p: np.asarray(p) + 0.3 * rng.standard_normal(p.shape).astype(np.float32),
        state.params)
    batch = {"audio": rng.integers(0, 256, (1, 6, rf + TARGETS)).astype(np.int32),
             "genre": rng.integers(0, 3, (1, 6)).astype(np.int32), "mask": MASK}
    return SimpleNamespace(cfg=cfg, rf=rf, spec=spec, graphdef=graphdef, params=params,
                           batch=batch)


def numpy_bits(case) -> np.ndarray:
    """-log2 p(target) per target (examples, T) from the model's logits, in float64."""
    model = wt.merge_model(case.graphdef, case.params)
    audio, genre = case.batch["audio"][0], case.batch["genre"][0]
    logits = np.asarray(model(audio[:, :-1], genre), np.float64)[:, case.rf - 1:]
    logits -= logits.max(axis=-1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    targets = audio[:, case.rf:]
    return -np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0] / math.log(2)


def test_score_is_the_masked_nll_in_bits_and_the_real_targets_histogram(case):
    bits = numpy_bits(case)
    real = MASK[0] > 0
    expected = bits[real].mean()
    assert abs(bits.mean() - expected) > 0.01  # the case tells masked from unmasked
    model = wt.merge_model(case.graphdef, case.params)
    step = jax.jit(functools.partial(wt.score, num_classes=case.cfg.num_classes,
                                     axis_name=None))
    batch = {k: v[0] for k, v in case.batch.items()}
    sums = step(wt.model_loss(model, batch), batch)
    assert float(sums["targets"]) == real.sum() * TARGETS
    assert float(sums["nll_bits_sum"]) / float(sums["targets"]) == pytest.approx(
        expected, rel=1e-5)
    np.testing.assert_allclose(sums["example_bits"], np.where(real, bits.sum(-1), 0.0),
                               rtol=1e-5)
    counts = np.bincount(batch["audio"][real, case.rf:].reshape(-1),
                         minlength=case.cfg.num_classes)
    np.testing.assert_array_equal(sums["target_counts"], counts)


def test_training_report_and_bench_evaluations_agree(case, monkeypatch):
    def eval_batches(*args, song_ids=False, **kwargs):
        extra = {"song_id": SONGS} if song_ids else {}
        return iter([{**case.batch, **extra}])

    monkeypatch.setattr(ip, "eval_batches", eval_batches)
    monkeypatch.setattr(ip, "bin_histogram", lambda *a, **k: np.ones(case.spec.num_classes))
    bits = numpy_bits(case)
    real = MASK[0] > 0
    counts = np.bincount(case.batch["audio"][0][real, case.rf:].reshape(-1),
                         minlength=case.spec.num_classes)
    dataset = SimpleNamespace(spec=case.spec, dir="ds", num_examples=lambda split: 4)
    params = wt.replicate(case.params)

    # Training's periodic evaluation.
    setup = SimpleNamespace(
        graphdef=case.graphdef, dataset=dataset, window=ip.Window(case.spec, case.rf),
        run=SimpleNamespace(global_eval_batch=6, eval_batches=None), total_devices=1,
        data=SimpleNamespace(eval_split="validation"), devices=jax.local_devices())
    training = loop._Evaluator(setup)(params)
    # evaluate.py's whole-split report.
    cfg = evaluation.EvalConfig(checkpoint="run", split="validation", batch_size=6,
                                progress=False)
    rows, hist = evaluation._score(cfg, dataset, case.graphdef, case.params, case.cfg)
    report = evaluation._report(cfg, "run", 1, False, dataset, rows, hist, "train")
    # The benchmark's learning check, which scores wavegen on the plain baseline's batches.
    bench = wt.evaluate(wt.make_p_eval_step(case.graphdef), params,
                        pw.split_batches(dataset, case.rf))

    expected = bits[real].mean()
    for nll in (training["nll_bits"], report["bits_per_sample"], bench["nll_bits"]):
        assert nll == pytest.approx(expected, rel=1e-5)
    assert training["nll_bits"] == bench["nll_bits"]
    assert training["targets"] == bench["targets"] == report["targets"] == real.sum() * TARGETS
    np.testing.assert_array_equal(hist, counts)
    assert training["unigram_bits"] == bench["unigram_bits"] == pytest.approx(
        report["split_entropy_bits"]) == pytest.approx(ip.entropy_bits(counts))
    # Per song and per genre: the real examples only, each its own bits sum.
    genres = case.batch["genre"][0]
    assert [(s, g) for s, g, _ in rows] == [
        (SONGS[0, i].decode(), int(genres[i])) for i in np.flatnonzero(real)]
    np.testing.assert_allclose([b for _, _, b in rows], bits[real].sum(-1), rtol=1e-5)
    songs = {r["song_id"]: r for r in report["per_song"]}
    assert set(songs) == {"s1", "s2", "s3"}  # s9 is padding
    assert songs["s1"]["bits_per_sample"] == pytest.approx(
        bits[[0, 5]].mean(), rel=1e-5)
    for name, g in report["per_genre"].items():
        chosen = real & (genres == case.spec.genres.index(name))
        assert g["bits_per_sample"] == pytest.approx(bits[chosen].mean(), rel=1e-5)


@pytest.mark.slow
def test_the_plain_baseline_is_scored_on_the_same_targets(case, monkeypatch):
    monkeypatch.setattr(ip, "eval_batches", lambda *a, **k: iter([dict(case.batch)]))
    dataset = SimpleNamespace(spec=case.spec)
    plain = pw.PlainConfig.like(case.cfg)
    params = pw.init_params(plain)
    ours = wt.evaluate(wt.make_p_eval_step(case.graphdef), wt.replicate(case.params),
                       pw.split_batches(dataset, case.rf))
    theirs = pw.evaluate_split(plain, params, dataset)
    assert theirs["targets"] == ours["targets"]
    np.testing.assert_array_equal(theirs["target_counts"], ours["target_counts"])
    real = MASK[0] > 0
    audio, genre = case.batch["audio"][0], case.batch["genre"][0]
    bits = np.asarray(pw.loss_bits(plain, params, audio[real], genre[real]), np.float64)
    assert theirs["nll_bits"] == pytest.approx(bits.mean(), rel=1e-5)
