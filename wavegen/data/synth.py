"""A tiny music synthesizer (pure numpy): songs with chords, melodies and rhythm.

Used by the tests (a music-like dataset made on the spot, no downloads) and by the demo.
Each style is a small score generator plus a few instruments; everything is seeded, so
`render_song(style, seconds, sample_rate, seed)` is a pure function of its arguments.

Styles (audibly different on purpose):

- ``piano_waltz``: a major key, 3/4 at a moderate tempo; a left hand playing
  bass-chord-chord ("oom-pah-pah") and a right-hand melody walking on the scale, with
  decaying, slightly inharmonic piano-like partials.
- ``synth_techno``: a minor key, 4/4 at a fast tempo; a four-on-the-floor kick, off-beat
  hi-hats, a sixteenth-note sawtooth bass and a square-wave arpeggio every other bar.
- ``ambient_pad``: slow chords of detuned sines with slow attacks and long releases, and
  a sparse bell melody on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

MAJOR = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)


def midi_to_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def scale_note(root: int, scale: tuple[int, ...], degree: int) -> int:
    """The MIDI note of a scale degree (any integer; wraps into octaves)."""
    octave, step = divmod(degree, len(scale))
    return root + 12 * octave + scale[step]


def triad(root: int, scale: tuple[int, ...], degree: int, size: int = 3) -> list[int]:
    """A chord stacked in thirds on a scale degree."""
    return [scale_note(root, scale, degree + 2 * i) for i in range(size)]


class _Mix:
    """A stereo buffer that notes are added into, each with its own pan."""

    def __init__(self, frames: int, sample_rate: int):
        self.sr = sample_rate
        self.buf = np.zeros((frames, 2), np.float32)

    def add(self, start_s: float, x: np.ndarray, pan: float = 0.0, gain: float = 1.0):
        start = int(round(start_s * self.sr))
        if start >= len(self.buf) or len(x) == 0:
            return
        x = x[:len(self.buf) - start] * gain
        angle = (pan + 1.0) * math.pi / 4.0  # constant-power pan, pan in [-1, 1]
        self.buf[start:start + len(x), 0] += x * math.cos(angle)
        self.buf[start:start + len(x), 1] += x * math.sin(angle)


def _t(seconds: float, sr: int) -> np.ndarray:
    return np.arange(max(1, int(seconds * sr)), dtype=np.float32) / np.float32(sr)


def _piano(freq: float, seconds: float, sr: int, velocity: float) -> np.ndarray:
    """Decaying partials, the higher ones faster, slightly stretched (inharmonic)."""
    t = _t(seconds, sr)
    x = np.zeros_like(t)
    for n in range(1, 7):
        f = freq * n * (1.0 + 0.0004 * n * n)
        if f >= sr / 2:
            break
        x += (n ** -1.3) * np.exp(-t * (1.2 + 0.9 * n)) * np.sin(2 * np.pi * f * t)
    attack = np.minimum(1.0, t / 0.004)
    release = np.minimum(1.0, (t[-1] - t) / 0.03 + 1e-3)
    return (velocity * 0.35) * x * attack * release


def _saw(freq: float, seconds: float, sr: int, cutoff_hz: float) -> np.ndarray:
    """A band-limited sawtooth (sum of harmonics up to the cutoff) with a plucky envelope."""
    t = _t(seconds, sr)
    x = np.zeros_like(t)
    for n in range(1, int(min(cutoff_hz, sr / 2 - 1) / freq) + 1):
        x += ((-1) ** (n + 1)) / n * np.sin(2 * np.pi * freq * n * t)
    env = np.exp(-t * 9.0) * np.minimum(1.0, t / 0.003)
    return 0.45 * x * env


def _square(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = _t(seconds, sr)
    x = np.zeros_like(t)
    for n in range(1, 12, 2):
        if freq * n >= sr / 2:
            break
        x += np.sin(2 * np.pi * freq * n * t) / n
    env = np.exp(-t * 6.0) * np.minimum(1.0, t / 0.005)
    return 0.25 * x * env


def _kick(sr: int) -> np.ndarray:
    t = _t(0.35, sr)
    freq = 45.0 + 110.0 * np.exp(-t * 30.0)  # a falling pitch sweep
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return 0.9 * np.sin(phase) * np.exp(-t * 9.0)


def _hat(sr: int, rng: np.random.Generator) -> np.ndarray:
    n = rng.standard_normal(int(0.06 * sr)).astype(np.float32)
    n = np.diff(n, prepend=0.0)  # crude high-pass: hats are bright
    return 0.12 * n * np.exp(-_t(0.06, sr) * 60.0)


def _pad_voice(freq: float, seconds: float, sr: int, attack: float,
               rng: np.random.Generator) -> np.ndarray:
    """Three slightly detuned sines with a slow attack and a long release."""
    t = _t(seconds, sr)
    x = np.zeros_like(t)
    for cents in (-7.0, 0.0, 6.0):
        f = freq * 2.0 ** (cents / 1200.0)
        x += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    env = np.minimum(1.0, t / attack) * np.minimum(1.0, (t[-1] - t) / (0.4 * seconds) + 1e-3)
    return 0.12 * x * env


def _bell(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = _t(seconds, sr)
    x = (np.sin(2 * np.pi * freq * t) + 0.4 * np.sin(2 * np.pi * freq * 2.76 * t)
         + 0.2 * np.sin(2 * np.pi * freq * 5.4 * t))
    return 0.18 * x * np.exp(-t * 2.5) * np.minimum(1.0, t / 0.002)


# --------------------------------------------------------------------------------------
# Styles


def _piano_waltz(mix: _Mix, seconds: float, rng: np.random.Generator):
    sr = mix.sr
    root = 60 + int(rng.integers(-3, 4))
    beat = 60.0 / rng.uniform(96, 126)
    progression = [0, 3, 4, 0, 5, 3, 4, 0]  # I IV V I vi IV V I
    bar, t, degree = 0, 0.0, 7  # the melody starts on the tonic an octave up
    while t < seconds:
        chord = triad(root - 12, MAJOR, progression[bar % len(progression)])
        mix.add(t, _piano(midi_to_hz(chord[0] - 12), 2.5 * beat, sr, 0.9), pan=-0.4)
        for b in (1, 2):  # "pah-pah"
            for n in chord[1:] + [chord[0] + 12]:
                mix.add(t + b * beat, _piano(midi_to_hz(n), 0.9 * beat, sr, 0.45), pan=-0.2)
        steps = 6 if rng.random() < 0.35 else 3  # quarter notes or eighth notes
        for k in range(steps):
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), 3, 13))
            dur = 3 * beat / steps
            mix.add(t + k * dur, _piano(midi_to_hz(scale_note(root, MAJOR, degree)),
                                        1.6 * dur, sr, 0.8), pan=0.35)
        t += 3 * beat
        bar += 1


def _synth_techno(mix: _Mix, seconds: float, rng: np.random.Generator):
    sr = mix.sr
    root = 33 + int(rng.integers(0, 7))  # A1..E2
    beat = 60.0 / rng.uniform(124, 140)
    progression = [0, 0, 5, 6]  # i i VI VII
    pattern = rng.choice([0, 0, 7, 12, 0, 10, 12, 7], size=16)
    kick, bar, t = _kick(sr), 0, 0.0
    while t < seconds:
        degree = progression[(bar // 2) % len(progression)]
        base = scale_note(root, NATURAL_MINOR, degree)
        for b in range(4):
            mix.add(t + b * beat, kick)
            mix.add(t + (b + 0.5) * beat, _hat(sr, rng), pan=0.3)
        for k in range(16):
            if pattern[k] == 0 and k % 4 and rng.random() < 0.3:
                continue  # ghost rests keep the bass line moving
            mix.add(t + k * beat / 4, _saw(midi_to_hz(base + pattern[k]), beat / 4, sr,
                                           cutoff_hz=1200 + 800 * math.sin(bar)), pan=-0.1)
        if bar % 2 == 1:
            chord = triad(base + 24, NATURAL_MINOR, 0, 4)
            for k in range(8):
                mix.add(t + k * beat / 2, _square(midi_to_hz(chord[k % 4]), beat / 2, sr),
                        pan=0.5)
        t += 4 * beat
        bar += 1


def _ambient_pad(mix: _Mix, seconds: float, rng: np.random.Generator):
    sr = mix.sr
    root = 48 + int(rng.integers(0, 8))
    beat = 60.0 / rng.uniform(56, 72)
    progression = [0, 5, 3, 4] if rng.random() < 0.5 else [0, 3, 5, 4]
    chord_len = 8 * beat
    bar, t = 0, 0.0
    while t < seconds:
        chord = triad(root, MAJOR, progression[bar % len(progression)], 4)
        for i, n in enumerate(chord):
            mix.add(t, _pad_voice(midi_to_hz(n), chord_len * 1.3, sr, 1.5 * beat, rng),
                    pan=-0.6 + 0.4 * i)
        for k in range(8):
            if rng.random() < 0.3:
                degree = int(rng.integers(7, 15))
                mix.add(t + k * beat, _bell(midi_to_hz(scale_note(root, MAJOR, degree)),
                                            3 * beat, sr), pan=float(rng.uniform(-0.7, 0.7)))
        t += chord_len
        bar += 1


STYLES: dict[str, Callable[[_Mix, float, np.random.Generator], None]] = {
    "piano_waltz": _piano_waltz,
    "synth_techno": _synth_techno,
    "ambient_pad": _ambient_pad,
}


def render_song(style: str, seconds: float, sample_rate: int = 16000,
                seed: int = 0) -> np.ndarray:
    """A song of `seconds` in `style`: float32 (frames, 2), peak 0.8. Deterministic."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if sample_rate < 1000:
        raise ValueError(f"sample_rate must be at least 1000 Hz, got {sample_rate}")
    frames = int(round(seconds * sample_rate))
    mix = _Mix(frames, int(sample_rate))
    STYLES[style](mix, seconds, np.random.default_rng(seed))
    peak = float(np.max(np.abs(mix.buf))) or 1.0
    return (mix.buf * (0.8 / peak)).astype(np.float32)
