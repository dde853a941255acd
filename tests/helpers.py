"""Plain test helpers (imported as `from helpers import ...`): the repository's root,
commands run as a user runs them, audio files made on the spot with soundfile, and
in-process pipeline runs."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import soundfile as sf

# The repository's root folder: where a user runs `python -m ...` and `experiments/*.py`.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiment_script(name: str) -> str:
    """The path of `experiments/NAME.py`."""
    return os.path.join(ROOT, "experiments", f"{name}.py")


def run_command(args, *, cwd=ROOT, env: dict | None = None, timeout: float = 300,
                check: bool = False) -> subprocess.CompletedProcess:
    """Runs a command as a user would, from the repository root unless `cwd` says
    otherwise, with `env` laid over this process's environment. A hang fails the test at
    `timeout` instead of stalling the suite. The result's `output` is stdout and stderr
    together; with `check`, a non-zero status fails the test showing the output's end."""
    res = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                         timeout=timeout, env=None if env is None else {**os.environ, **env})
    res.output = res.stdout + res.stderr
    if check:
        assert res.returncode == 0, res.output[-4000:]
    return res


def preprocess_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """`python -m beam_pipelines.preprocess ARGS` as a user runs it (see `run_command`)."""
    return run_command([sys.executable, "-m", "beam_pipelines.preprocess", *args], **kw)


def run_experiment(name: str, *args: str, **kw) -> subprocess.CompletedProcess:
    """`python experiments/NAME.py ARGS` as a user runs it (see `run_command`)."""
    return run_command([sys.executable, experiment_script(name), *args], **kw)

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


def synth_songs(folder, *, sample_rate: int, seconds: float, songs_per_style: int,
                seed: int = 0, ext: str = ".wav") -> str:
    """Songs from the synthesizer, `songs_per_style` per style, in genre folders."""
    from wavegen.data import synth

    for i, style in enumerate(sorted(synth.STYLES)):
        for k in range(songs_per_style):
            write_audio(os.path.join(str(folder), style, f"{style}_{k}{ext}"),
                        synth.render_song(style, seconds, sample_rate, seed=seed + 100 * i + k),
                        sample_rate)
    return str(folder)


# Reference implementations the tests compare the streaming code with (the product streams,
# so these live here, not in wavegen).


def num_chunks(total: int, chunk_samples: int, context_samples: int) -> int:
    """How many whole chunks a song of `total` samples gives (the short tail is dropped)."""
    if total < chunk_samples:
        return 0
    return 1 + (total - chunk_samples) // (chunk_samples - context_samples)


def chunk_array(x: np.ndarray, chunk_samples: int, context_samples: int) -> np.ndarray:
    """All chunks of a whole array at once, (n, chunk_samples): the reference for Chunker."""
    n = num_chunks(len(x), chunk_samples, context_samples)
    stride = chunk_samples - context_samples
    if n == 0:
        return np.zeros((0, chunk_samples), x.dtype)
    return np.stack([x[k * stride:k * stride + chunk_samples] for k in range(n)])


def read_records(f):
    """TFRecord records read back from a binary file, both checksums checked."""
    import struct

    from beam_pipelines.ingest.tfrecord_framing import masked_crc

    while True:
        head = f.read(12)
        if not head:
            return
        assert len(head) == 12, "truncated TFRecord header"
        length, crc = struct.unpack("<QI", head)
        assert masked_crc(head[:8]) == crc, "TFRecord length checksum mismatch"
        data = f.read(length)
        (dcrc,) = struct.unpack("<I", f.read(4))
        assert len(data) == length and masked_crc(data) == dcrc, "TFRecord data checksum"
        yield data
