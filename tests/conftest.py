"""Shared test helpers: audio files made on the spot with soundfile, and pipeline runs."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import soundfile as sf

FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"),
           ".ogg": ("OGG", "VORBIS"), ".mp3": ("MP3", "MPEG_LAYER_III")}


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1,
         amp: float = 0.5, seed: int = 0) -> np.ndarray:
    """A sine with a little noise: (frames, channels) float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    rng = np.random.default_rng(seed)
    x = amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    cols = [x * (1.0 - 0.3 * c) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write_audio(path, x: np.ndarray, sr: int) -> str:
    """Writes audio in the format its extension names (wav, flac, ogg, mp3)."""
    fmt, subtype = FORMATS[os.path.splitext(str(path))[1].lower()]
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    sf.write(str(path), x, sr, format=fmt, subtype=subtype)
    return str(path)


def run_pipeline(*args: str, workers: int = 1) -> int:
    """Runs the Beam pipeline in this process (fast: no worker processes)."""
    from beam_pipelines import preprocess

    beam = ["--runner=FnApiRunner", "--direct_running_mode=in_memory",
            f"--direct_num_workers={workers}"] if workers == 1 else []
    return preprocess.run(list(args) + beam)


@pytest.fixture(autouse=True)
def _quiet_beam():
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    yield
