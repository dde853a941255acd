"""The music synthesizer: deterministic songs in audibly different styles."""

from __future__ import annotations

import numpy as np
import pytest

from wavegen.data import synth

SR = 16000


def spectral_centroid(x: np.ndarray, sr: int) -> float:
    mag = np.abs(np.fft.rfft(x))
    return float((mag * np.fft.rfftfreq(len(x), 1 / sr)).sum() / mag.sum())


def spectral_flux(x: np.ndarray) -> float:
    """How much the spectrum rises from frame to frame, per unit of spectrum: high for
    percussive, busy music, low for slowly swelling sounds."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::512] * np.hanning(1024)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    return float(np.maximum(np.diff(mag, axis=0), 0.0).sum() / mag.sum())


@pytest.mark.parametrize("style", sorted(synth.STYLES))
def test_songs_are_stereo_float_and_deterministic(style):
    x = synth.render_song(style, 4.0, SR, seed=3)
    assert x.shape == (4 * SR, 2) and x.dtype == np.float32
    assert np.max(np.abs(x)) == pytest.approx(0.8, abs=1e-6)
    np.testing.assert_array_equal(x, synth.render_song(style, 4.0, SR, seed=3))
    assert not np.array_equal(x, synth.render_song(style, 4.0, SR, seed=4))
    assert not np.array_equal(x[:, 0], x[:, 1])  # panned voices


def test_styles_differ_in_brightness_and_rhythm():
    mono = {s: synth.render_song(s, 8.0, SR, seed=1).mean(axis=1) for s in synth.STYLES}
    centroid = {s: spectral_centroid(x, SR) for s, x in mono.items()}
    flux = {s: spectral_flux(x) for s, x in mono.items()}
    # Techno (saw bass, hats) is the brightest and busiest; the pad the calmest.
    assert centroid["synth_techno"] > 1.3 * max(centroid["piano_waltz"],
                                                 centroid["ambient_pad"])
    assert flux["synth_techno"] > 1.5 * flux["piano_waltz"]
    assert flux["piano_waltz"] > 1.4 * flux["ambient_pad"]


def test_music_theory_helpers():
    assert synth.midi_to_hz(69) == pytest.approx(440.0)
    assert synth.triad(60, synth.MAJOR, 0) == [60, 64, 67]  # C major
    assert synth.triad(57, synth.NATURAL_MINOR, 0) == [57, 60, 64]  # A minor
    assert synth.scale_note(60, synth.MAJOR, 7) == 72  # the octave


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown style 'polka'"):
        synth.render_song("polka", 1.0, SR)
    with pytest.raises(ValueError, match="seconds must be positive"):
        synth.render_song("piano_waltz", 0.0, SR)
    with pytest.raises(ValueError, match="sample_rate"):
        synth.render_song("piano_waltz", 1.0, 100)
