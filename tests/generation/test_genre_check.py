"""The genre classifier: band statistics of 1 s windows, fitted on real songs."""

from __future__ import annotations

import numpy as np
import pytest

from wavegen.data import synth
from wavegen.generation import genre_check

SR = 16000


def songs(seed: int, seconds: float = 6.0) -> dict[str, list[np.ndarray]]:
    return {style: [synth.render_song(style, seconds, SR, seed=seed + i).mean(axis=1)
                    for i in range(2)] for style in sorted(synth.STYLES)}


@pytest.fixture(scope="module")
def classifier():
    return genre_check.fit(songs(seed=0), SR)


def test_features_are_band_statistics_of_a_window():
    x = np.random.default_rng(0).normal(0, 0.1, SR)
    f = genre_check.features(x, SR)
    assert f.shape == (3 * genre_check.BANDS,) and np.isfinite(f).all()
    # A louder window has higher band levels, the same spread.
    g = genre_check.features(10 * x, SR)
    np.testing.assert_allclose(g[:genre_check.BANDS] - f[:genre_check.BANDS], 20.0, atol=1e-6)
    np.testing.assert_allclose(g[genre_check.BANDS:], f[genre_check.BANDS:], atol=1e-6)


def test_real_songs_of_other_seeds_are_named_right(classifier):
    held_out = songs(seed=100)
    waves = [x for g in sorted(held_out) for x in held_out[g]]
    genres = [g for g in sorted(held_out) for _ in held_out[g]]
    assert classifier.accuracy(waves, genres, SR) >= 0.9
    # The same songs under shuffled labels: mostly wrong.
    wrong = genres[2:] + genres[:2]
    assert classifier.accuracy(waves, wrong, SR) <= 0.2


def test_noise_is_not_any_one_genre_reliably(classifier):
    rng = np.random.default_rng(1)
    noise = [rng.normal(0, 0.2, 4 * SR) for _ in range(3)]
    named = [n for x in noise for n in classifier.predict(x)]
    assert len(named) == 12
    accuracies = [classifier.accuracy(noise, [g] * 3, SR) for g in classifier.genres]
    assert sum(accuracies) == pytest.approx(1.0)  # every window is named some genre


def test_short_audio_and_bad_input(classifier):
    assert classifier.predict(np.zeros(SR - 1)) == []
    assert classifier.accuracy([np.zeros(100)], ["piano_waltz"], SR) is None
    with pytest.raises(ValueError, match="fitted at 16000 Hz"):
        classifier.accuracy([np.zeros(SR)], ["piano_waltz"], 8000)
    with pytest.raises(ValueError, match="at least two genres"):
        genre_check.fit({"piano_waltz": [np.zeros(3 * SR)]}, SR)
