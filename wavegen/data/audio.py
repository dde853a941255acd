"""Audio: streaming decode, mixdown, resampling, quantization, chunking, WAV output.

Everything the pipeline does to a song lives here as small functions, so the Beam
pipeline, the benchmarks and sampling's priming all run the same code. Decoding is a
stream of blocks: memory stays flat however long the song is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from wavegen.errors import UserError, one_line

AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg")
QUANTIZATIONS = ("mulaw", "linear")
DEFAULT_BLOCK_FRAMES = 1 << 16


class AudioDecodeError(UserError):
    """An input that is not decodable audio. The message names the input."""


class NonFiniteAudio(AudioDecodeError):
    """Decoded audio holding NaN or infinity (a float file's garbage, never music); unlike
    a decode error part-way, nothing decoded before it is worth keeping (catch it before
    AudioDecodeError where the two are told apart)."""


def is_audio_path(path: str) -> bool:
    """Whether `path` has one of the supported audio extensions (any case)."""
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS


# --------------------------------------------------------------------------------------
# Decoding


def open_audio(source: str | BinaryIO, name: str | None = None) -> sf.SoundFile:
    """Opens a file path or a binary file object for reading; raises AudioDecodeError."""
    name = name or str(source)
    try:
        handle = sf.SoundFile(source)
    except Exception as e:  # libsndfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioDecodeError(f"{name}: {_not_audio(source, e)}") from e
    if handle.samplerate <= 0 or handle.channels <= 0:
        handle.close()
        raise AudioDecodeError(
            f"{name}: header declares {handle.samplerate} Hz, {handle.channels} channels")
    return handle


_PEEK_BYTES = 64


def _not_audio(source: str | BinaryIO, error: Exception) -> str:
    """What an input that libsndfile cannot open is, in a few words.

    libsndfile names the symptom, not the input: opened by path, a file named .mp3 that
    is empty or not mp3 is "File does not exist or is not a regular file". So the input's
    first bytes are looked at: nothing at all, text, or bytes of no known format, is
    said as such."""
    head = _peek(source)
    if head == b"":
        return "empty (0 bytes)"
    text = _as_text(head) if head is not None else None
    if text is not None:
        return f"not audio (text: {text!r})"
    if head is not None and "not a regular file" in str(error):  # it is one: say so
        return (f"not audio (no format libsndfile reads; it starts with bytes "
                f"{head[:8].hex(' ')})")
    return f"not decodable audio ({one_line(error)})"


def _peek(source: str | BinaryIO) -> bytes | None:
    """The first bytes of a regular file or a seekable file object (put back where it
    was), or None where they cannot be read without side effects."""
    try:
        if isinstance(source, (str, os.PathLike)):
            if not os.path.isfile(source):  # never open a pipe or a device
                return None
            with open(source, "rb") as f:
                return f.read(_PEEK_BYTES)
        if not source.seekable():
            return None
        where = source.tell()
        source.seek(0)
        try:
            return source.read(_PEEK_BYTES)
        finally:
            source.seek(where)
    except (OSError, ValueError, AttributeError):
        return None


def _as_text(head: bytes) -> str | None:
    """The start of `head` if it reads as printable UTF-8 text, else None."""
    for cut in range(4):  # the last character may be cut in the middle
        try:
            text = head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text and all(c.isprintable() or c in "\t\r\n" for c in text):
            return text.split("\n")[0][:40] or text.strip()[:40]
        return None
    return None


def mono_blocks(handle: sf.SoundFile, name: str,
                block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Yields float32 mono blocks (channels averaged) until the end of the stream.

    A decode error part-way through raises AudioDecodeError; callers decide whether the
    audio decoded before it is worth keeping. A block holding NaN or infinity raises
    NonFiniteAudio, checked as decoded (before any resampling spreads it).
    """
    done = 0
    while True:
        try:
            block = handle.read(block_frames, dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioDecodeError(f"{name}: decode failed after {handle.tell()} frames "
                                   f"({one_line(e)})") from e
        if block.shape[0] == 0:
            return
        mono = mixdown(block)  # NaN or infinity in any channel stays non-finite here
        finite = np.isfinite(mono)
        if not finite.all():
            raise NonFiniteAudio(f"{name}: NaN or infinite sample at frame "
                                 f"{done + int(np.argmin(finite))}")
        done += len(mono)
        yield mono
        if block.shape[0] < block_frames:
            return


def mixdown(block: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32, the mean of the channels."""
    if block.ndim == 1:
        return block.astype(np.float32, copy=False)
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0], dtype=np.float32)
    return block.mean(axis=1, dtype=np.float32)


# --------------------------------------------------------------------------------------
# Resampling


class StreamResampler:
    """Streaming high-quality resampling (soxr 'HQ'); a pass-through at equal rates."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ"):
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self._stream = None
        if self.in_rate != self.out_rate:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1,
                                               dtype="float32", quality=quality)

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block, last=last)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resamples a whole mono signal (same quality as the streaming path)."""
    if in_rate == out_rate:
        return np.asarray(x, np.float32)
    return soxr.resample(np.asarray(x, np.float32), in_rate, out_rate, quality="HQ")


# --------------------------------------------------------------------------------------
# Quantization


def num_classes(bits: int) -> int:
    return 1 << bits


def bins_dtype(bits: int) -> np.dtype:
    """The smallest unsigned dtype holding 2**bits classes."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def mulaw_encode(x: np.ndarray, bits: int) -> np.ndarray:
    """Mu-law companding of [-1, 1] audio into 2**bits classes (mu = 2**bits - 1)."""
    mu = num_classes(bits) - 1
    x = np.clip(np.asarray(x, np.float32), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.float32(math.log1p(mu))
    return np.rint((y + 1.0) * (mu / 2.0)).astype(bins_dtype(bits))


def mulaw_decode(q: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of mulaw_encode: classes back to float32 audio in [-1, 1]."""
    mu = num_classes(bits) - 1
    y = np.asarray(q, np.float32) * (2.0 / mu) - 1.0
    x = np.sign(y) * np.expm1(np.abs(y) * np.float32(math.log1p(mu))) / mu
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def linear_encode(x: np.ndarray, bits: int) -> np.ndarray:
    """Uniform binning of [-1, 1] audio into 2**bits classes."""
    top = num_classes(bits) - 1
    x = np.clip(np.asarray(x, np.float32), -1.0, 1.0)
    return np.rint((x + 1.0) * (top / 2.0)).astype(bins_dtype(bits))


def linear_decode(q: np.ndarray, bits: int) -> np.ndarray:
    top = num_classes(bits) - 1
    return (np.asarray(q, np.float32) * (2.0 / top) - 1.0).astype(np.float32)


def _codec(quantization: str):
    """(encode, decode) of a quantization name."""
    codecs = {"mulaw": (mulaw_encode, mulaw_decode), "linear": (linear_encode, linear_decode)}
    if quantization not in codecs:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    return codecs[quantization]


def quantize(x: np.ndarray, quantization: str, bits: int) -> np.ndarray:
    return _codec(quantization)[0](x, bits)


def dequantize(q: np.ndarray, quantization: str, bits: int) -> np.ndarray:
    return _codec(quantization)[1](q, bits)


# --------------------------------------------------------------------------------------
# Chunking


def chunk_stride(chunk_samples: int, context_samples: int) -> int:
    """Chunks overlap by their context: chunk k starts at k * (chunk - context)."""
    if not 0 <= context_samples < chunk_samples:
        raise ValueError(f"context_samples ({context_samples}) must be >= 0 and smaller "
                         f"than chunk_samples ({chunk_samples})")
    return chunk_samples - context_samples


class Chunker:
    """Streaming chunker: push arrays of any length, get whole chunks as soon as complete.

    Chunk k covers samples [k*stride, k*stride + chunk) with stride = chunk - context, so
    its first `context` samples repeat the end of chunk k-1 and every target sample (the
    last `stride` of each chunk) has the full context before it inside its own chunk.
    The first `context` samples of a song are context only; a tail shorter than a
    chunk's targets is dropped. Memory holds at most one chunk plus one pushed array.
    """

    def __init__(self, chunk_samples: int, context_samples: int):
        self.chunk = int(chunk_samples)
        self.stride = chunk_stride(chunk_samples, context_samples)
        self._parts: list[np.ndarray] = []
        self._held = 0

    def push(self, x: np.ndarray) -> Iterator[np.ndarray]:
        if len(x) == 0:
            return
        self._parts.append(x)
        self._held += len(x)
        if self._held < self.chunk:
            return
        buf = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        start = 0
        while len(buf) - start >= self.chunk:
            yield buf[start:start + self.chunk].copy()
            start += self.stride
        rest = buf[start:]
        self._parts = [rest.copy()] if len(rest) else []
        self._held = len(rest)


class SilenceTrimmer:
    """Streaming trim of a song's leading and trailing silence (|x| <= threshold).

    push() yields the audio to keep as it becomes certain: samples before the first
    audible one are dropped (counted in `leading`); a silent stretch after an audible
    sample is held back until more audio shows it is not the end, then released; what is
    still held at finish() is the trailing silence (counted in `trailing`). Held samples
    stay in memory up to `spool_bytes`, then spill to a temporary file, so a long silent
    gap costs no memory. A negative threshold keeps everything.
    """

    def __init__(self, threshold: float, spool_bytes: int = 8 << 20):
        self.threshold = threshold
        self.spool_bytes = spool_bytes
        self.leading = self.trailing = 0
        self._started = threshold < 0
        self._held = None  # a SpooledTemporaryFile of float32 samples
        self._held_n = 0

    def push(self, x: np.ndarray) -> Iterator[np.ndarray]:
        loud = np.flatnonzero(np.abs(x) > self.threshold)
        if not self._started:
            if len(loud) == 0:
                self.leading += len(x)
                return
            self.leading += int(loud[0])
            x, loud, self._started = x[loud[0]:], loud - loud[0], True
        if len(loud) == 0:
            self._hold(x)
            return
        yield from self._release()
        end = int(loud[-1]) + 1
        yield x[:end]
        if end < len(x):
            self._hold(x[end:])

    def finish(self) -> None:
        """The song ended: what is held is trailing silence."""
        self.trailing = self._held_n
        self.close()

    def _hold(self, x: np.ndarray) -> None:
        if self._held is None:
            import tempfile

            self._held = tempfile.SpooledTemporaryFile(max_size=self.spool_bytes,
                                                       prefix="wavegen-silence-")
        self._held.write(np.ascontiguousarray(x, np.float32).tobytes())
        self._held_n += len(x)

    def _release(self, block: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
        if self._held is None:
            return
        self._held.seek(0)
        while data := self._held.read(block * 4):
            yield np.frombuffer(data, np.float32)
        self.close()

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
        self._held, self._held_n = None, 0

    def __enter__(self) -> "SilenceTrimmer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# Whole songs


def db_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def decode_resampled(source: str | BinaryIO, sample_rate: int, name: str | None = None,
                     block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Decodes any supported file to a stream of mono float32 blocks at `sample_rate`."""
    name = name or str(source)
    with open_audio(source, name) as handle:
        resampler = StreamResampler(handle.samplerate, sample_rate)
        for block in mono_blocks(handle, name, block_frames):
            out = resampler.process(block)
            if len(out):
                yield out
        tail = resampler.flush()
        if len(tail):
            yield tail


def load_audio(source: str | BinaryIO, sample_rate: int, max_seconds: float | None = None,
               name: str | None = None) -> np.ndarray:
    """Decodes, mixes down and resamples a whole file (or its first max_seconds)."""
    name = name or str(source)
    limit = None if max_seconds is None else int(round(max_seconds * sample_rate))
    parts, have = [], 0
    for block in decode_resampled(source, sample_rate, name):
        parts.append(block)
        have += len(block)
        if limit is not None and have >= limit:
            break
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if len(x) == 0:
        raise AudioDecodeError(f"{name}: decoded no audio")
    return x[:limit] if limit is not None else x


def write_wav(path: str, x: np.ndarray, sample_rate: int) -> None:
    """Writes mono float audio in [-1, 1] as 16-bit PCM WAV."""
    sf.write(path, np.clip(np.asarray(x, np.float32), -1.0, 1.0), int(sample_rate),
             subtype="PCM_16", format="WAV")
