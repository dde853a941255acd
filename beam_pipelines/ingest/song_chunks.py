"""Per-song preprocessing as pure functions: song -> stream of binned chunks, splits, shards.

The Beam pipeline (`beam_pipelines/preprocess.py`) only wires these into transforms.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np

from beam_pipelines.ingest import fetch
from wavegen.data import audio
from wavegen.data.dataset import DatasetSpec, genre_names

# Why a song was not written. Stable names: they key failed.jsonl, the summary and metrics.
UNDECODABLE = "undecodable"  # not audio, corrupt, or a decoder error before any audio
NO_AUDIO = "no_audio"  # opened, but decoded zero frames (empty or truncated stream)
SILENT = "silent"  # peak below the silence threshold over the whole song
TOO_SHORT = "too_short"  # fewer samples than one chunk
UNREADABLE = "unreadable"  # the file could not be read (I/O error, permission denied)
NON_FINITE = "non_finite"  # decoded audio holds NaN or infinity
NOT_A_FILE = "not_a_file"  # a dangling or looping link, a pipe, socket, device or folder
ENCRYPTED = "encrypted_member"  # an archive member that needs a password
UNSUPPORTED_COMPRESSION = "unsupported_compression"  # a member's method zipfile lacks
NESTED_ARCHIVE = "nested_archive"  # an archive inside an archive (not opened)
CORRUPT_MEMBER = "corrupt_member"  # a member whose data fails its CRC or inflation
DUPLICATE_MEMBER = "duplicate_member"  # a later archive member of an earlier one's name
BAD_NAME = "bad_name"  # a song id or genre holding control characters (newlines, tabs...)
TOO_LARGE = fetch.TOO_LARGE  # over --max_song_bytes (a file, a member or a download)
NO_METADATA = "no_metadata"  # --split_from=fma, and the metadata has no split for it
INTERNAL_ERROR = "internal_error"  # a bug: the traceback's last line is in the detail
# Every reason a song can get, for checks that each one is known.
REASONS = (UNDECODABLE, NO_AUDIO, SILENT, TOO_SHORT, UNREADABLE, NON_FINITE, NOT_A_FILE,
           ENCRYPTED, UNSUPPORTED_COMPRESSION, NESTED_ARCHIVE, CORRUPT_MEMBER,
           DUPLICATE_MEMBER, BAD_NAME,
           TOO_LARGE, NO_METADATA, INTERNAL_ERROR, fetch.REJECTED_URL, fetch.HTTP_ERROR,
           fetch.TIMEOUT, fetch.CONNECTION, fetch.CHECKSUM)


class SongFailure(Exception):
    """A song that gives no chunks, with a stable reason code and a readable detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ChunkingConfig:
    """How songs become chunks: the pipeline's audio settings, their defaults (the command
    line's flags read them from here) and their checks (made here, once)."""

    sample_rate: int = 16000  # Hz of the dataset
    quantization: str = "mulaw"  # one of audio.QUANTIZATIONS
    bits: int = 8  # 2**bits classes, 1..16
    chunk_seconds: float = 1.0  # new audio (training targets) per chunk, context excluded
    context_samples: int = 4096  # samples of preceding audio each chunk carries
    silence_db: float = -60.0  # a song whose peak stays below this (dBFS) is rejected
    trim_silence: bool = True  # drop leading and trailing samples below silence_db

    # Upper bounds that keep one chunk's arithmetic and memory sane.
    MAX_SAMPLE_RATE = 384_000
    MAX_CHUNK_SAMPLES = 1 << 26

    def __post_init__(self):
        def bad(name, want):
            return ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")

        def whole(name):
            v = getattr(self, name)
            return isinstance(v, int) and not isinstance(v, bool)

        def finite(name):
            v = getattr(self, name)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        if not whole("sample_rate") or not 1 <= self.sample_rate <= self.MAX_SAMPLE_RATE:
            raise bad("sample_rate", f"a whole number of Hz in 1..{self.MAX_SAMPLE_RATE}")
        if self.quantization not in audio.QUANTIZATIONS:
            raise bad("quantization", f"one of {', '.join(audio.QUANTIZATIONS)}")
        if not whole("bits") or not 1 <= self.bits <= 16:
            raise bad("bits", "a whole number in 1..16")
        if not finite("chunk_seconds") or self.target_samples < 1:
            raise bad("chunk_seconds", f"finite and at least one sample "
                      f"({1 / self.sample_rate:g} s at {self.sample_rate} Hz)")
        if not whole("context_samples") or self.context_samples < 0:
            raise bad("context_samples", "a whole number >= 0")
        if self.target_samples + self.context_samples > self.MAX_CHUNK_SAMPLES:
            raise bad("chunk_seconds", f"such that a chunk, context included, holds at most "
                      f"{self.MAX_CHUNK_SAMPLES} samples")
        if not finite("silence_db") or self.silence_db > 0:
            raise bad("silence_db", "a finite level in dBFS, <= 0")
        if not isinstance(self.trim_silence, bool):
            raise bad("trim_silence", "true or false")

    @property
    def target_samples(self) -> int:
        """Target samples per chunk (chunk_seconds at sample_rate, rounded)."""
        return int(round(self.chunk_seconds * self.sample_rate))

    def spec(self, genres) -> DatasetSpec:
        """The dataset's facts for songs with these genres."""
        return DatasetSpec(sample_rate=self.sample_rate, quantization=self.quantization,
                           bits=self.bits, chunk_samples=self.target_samples
                           + self.context_samples, context_samples=self.context_samples,
                           genres=genre_names(genres))


@dataclasses.dataclass
class SongStats:
    """Filled in while a song streams through `song_chunks`."""

    source_rate: int = 0
    channels: int = 0
    frames_in: int = 0  # decoded frames at the source rate
    samples_out: int = 0  # mono samples at the dataset rate
    trimmed: int = 0  # of those, leading and trailing silence dropped before chunking
    chunks: int = 0
    peak: float = 0.0
    truncated: str = ""  # a decode error after usable audio: the audio before it is kept

    @property
    def seconds_in(self) -> float:
        return self.frames_in / self.source_rate if self.source_rate else 0.0


def song_chunks(source: str | BinaryIO, name: str, spec: DatasetSpec, stats: SongStats,
                silence_db: float = ChunkingConfig.silence_db,
                block_frames: int = audio.DEFAULT_BLOCK_FRAMES,
                trim_silence: bool = ChunkingConfig.trim_silence) -> Iterator[np.ndarray]:
    """Decodes, mixes down, resamples, trims, quantizes and chunks one song, streaming.

    Yields `spec.chunk_samples`-long arrays of bins as they complete; memory holds one
    decode block and one chunk, whatever the song's length (or its silent intro; a silent
    stretch held back while trimming spills to disk past a few MiB). With `trim_silence`
    the song's leading and trailing samples at or below `silence_db` are dropped before
    chunking (counted in `stats.trimmed`). The verdict comes at the end: SongFailure is
    raised for a song that gives no chunks, and also, after its chunks were yielded, for
    one that stayed below the silence threshold throughout. Consumers treat the chunks as
    provisional until the generator finishes (the pipeline spills them and emits their
    references only then).
    """
    try:
        handle = audio.open_audio(source, name)
    except audio.AudioDecodeError as e:
        raise SongFailure(UNDECODABLE, str(e)) from e
    threshold = audio.db_to_amplitude(silence_db)
    chunker = audio.Chunker(spec.chunk_samples, spec.context_samples)
    trimmer = audio.SilenceTrimmer(threshold if trim_silence else -1.0)
    with handle, trimmer:
        for y in _resampled(handle, name, spec.sample_rate, stats, block_frames):
            stats.peak = max(stats.peak, float(np.max(np.abs(y))))
            for kept in trimmer.push(y):
                for chunk in chunker.push(audio.quantize(kept, spec.quantization, spec.bits)):
                    stats.chunks += 1
                    yield chunk
        trimmer.finish()
        stats.trimmed = trimmer.leading + trimmer.trailing
    _verdict(name, spec, stats, threshold, silence_db)


def _resampled(handle, name: str, rate: int, stats: SongStats,
               block_frames: int) -> Iterator[np.ndarray]:
    """The song's mono blocks at `rate`. A decode error after some audio ends the song
    there (stats.truncated); NaN or infinity fails it (non_finite)."""
    stats.source_rate, stats.channels = handle.samplerate, handle.channels
    resampler = audio.StreamResampler(handle.samplerate, rate)
    blocks = audio.mono_blocks(handle, name, block_frames)
    while True:
        try:
            block = next(blocks, None)
        except audio.NonFiniteAudio as e:
            raise SongFailure(NON_FINITE, str(e)) from e
        except audio.AudioDecodeError as e:
            if stats.frames_in == 0:
                raise SongFailure(UNDECODABLE, str(e)) from e
            stats.truncated = str(e)
            block = None
        if block is None:
            y = resampler.flush()
        else:
            stats.frames_in += len(block)
            y = resampler.process(block)
        if len(y):
            stats.samples_out += len(y)
            yield y
        if block is None:
            return


def _verdict(name: str, spec: DatasetSpec, stats: SongStats, threshold: float,
             silence_db: float) -> None:
    """Raises SongFailure for a song that gave no usable chunks."""
    if stats.frames_in == 0:
        raise SongFailure(NO_AUDIO, f"{name}: decoded no audio (empty or truncated stream)")
    if stats.peak <= threshold:
        peak_db = 20 * np.log10(stats.peak) if stats.peak > 0 else float("-inf")
        raise SongFailure(SILENT, f"{name}: silent, peak {peak_db:.1f} dBFS is below "
                                  f"the threshold of {silence_db:g} dBFS")
    if stats.chunks == 0:
        kept = (stats.samples_out - stats.trimmed) / spec.sample_rate
        trimmed = (f" once {stats.trimmed / spec.sample_rate:.2f} s of leading and trailing "
                   "silence are trimmed" if stats.trimmed else "")
        raise SongFailure(TOO_SHORT, f"{name}: {kept:.2f} s{trimmed} is shorter than one "
                                     f"chunk ({spec.chunk_samples / spec.sample_rate:.2f} s)")


# --------------------------------------------------------------------------------------
# Splits


DEFAULT_SPLIT = "train:0.9,validation:0.05,test:0.05"  # NAME:FRACTION,... (parse_splits)
_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    """'train:0.9,validation:0.05,test:0.05' -> (('train', 0.9), ...); fractions sum to 1."""
    out = []
    for part in text.split(","):
        name, sep, frac = part.strip().partition(":")
        if not sep or not _SPLIT_NAME.match(name):
            raise ValueError(f"--split {text!r}: expected NAME:FRACTION,..., got {part!r}")
        try:
            f = float(frac)
        except ValueError:
            raise ValueError(f"--split {text!r}: {frac!r} is not a number") from None
        if not 0 <= f <= 1:
            raise ValueError(f"--split {text!r}: fraction {f} is outside [0, 1]")
        out.append((name, f))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"--split {text!r}: a split is named twice")
    if abs(sum(f for _, f in out) - 1.0) > 1e-6:
        raise ValueError(f"--split {text!r}: fractions sum to {sum(f for _, f in out):g}, "
                         "not 1")
    return tuple(out)


def unit_hash(text: str) -> float:
    """A stable hash of a string, uniform in [0, 1) (the same on every machine and run)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(song_id: str, splits: Sequence[tuple[str, float]]) -> str:
    """The split of a song, by a stable hash of its id: all its chunks go there."""
    u = unit_hash(song_id)
    acc = 0.0
    for name, frac in splits:
        acc += frac
        if u < acc:
            return name
    return [n for n, f in splits if f > 0][-1]


# --------------------------------------------------------------------------------------
# Shards


def example_key(song_id: str, chunk_index: int) -> int:
    """A 63-bit hash of an example's identity: picks its shard and its place in it.

    (63 bits: Beam's integer coder takes signed 64-bit values.)
    """
    digest = hashlib.blake2b(f"{song_id}#{chunk_index}".encode("utf-8"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


def spill_name(song_id: str) -> str:
    """A flat, safe file name for a song's spilled examples (never the id itself)."""
    return hashlib.sha1(song_id.encode("utf-8")).hexdigest() + ".examples"


AUTO_NUM_SHARDS = 0  # a requested shard count of 0: about target_shard_bytes per shard


def num_shards_for(num_examples: int, example_bytes: int, requested: int = AUTO_NUM_SHARDS,
                   target_shard_bytes: int = 128 << 20) -> int:
    """Shards for a split: as requested (or ~128 MiB each), never more than examples."""
    if num_examples <= 0:
        return 0
    n = requested if requested > 0 else -(-num_examples * example_bytes // target_shard_bytes)
    return int(max(1, min(n, num_examples)))


# --------------------------------------------------------------------------------------
# Accounting


WRITTEN, FAILED = "written", "failed"


def song_record(song, status: str, *, reason: str = "", detail: str = "",
                stats: SongStats | None = None, spec: DatasetSpec | None = None,
                extra: dict | None = None) -> dict:
    """The one line every input song gets in songs.jsonl (and failed.jsonl if failed)."""
    stats = stats or SongStats()
    written = status == WRITTEN
    rec = {
        "song_id": song.song_id, "path": song.where, "input": song.input,
        "split": song.split, "genre": song.genre, "status": status,
        "chunks": stats.chunks if written else 0,
        "seconds": round(stats.seconds_in, 3),
        "target_seconds": round(stats.chunks * spec.target_samples / spec.sample_rate, 3)
        if spec and written else 0.0,
        "trimmed_seconds": round(stats.trimmed / spec.sample_rate, 3)
        if spec and written else 0.0,
    }
    if reason:
        rec["reason"], rec["detail"] = reason, detail
    if stats.truncated:
        rec["truncated"] = stats.truncated
    rec.update(extra or {})
    return rec


def summarize(records: Sequence[dict]) -> dict:
    """summary.json: songs in/written/failed, failures by reason, chunks/seconds by split."""
    failures: dict[str, int] = {}
    splits: dict[str, dict] = {}
    written = failed = truncated = 0
    trimmed = 0.0
    for r in records:
        if r["status"] == WRITTEN:
            written += 1
            trimmed += r.get("trimmed_seconds", 0.0)
            s = splits.setdefault(r["split"], {"songs": 0, "chunks": 0, "seconds": 0.0})
            s["songs"] += 1
            s["chunks"] += r["chunks"]
            s["seconds"] += r["target_seconds"]
            truncated += bool(r.get("truncated"))
        else:
            failed += 1
            failures[r["reason"]] = failures.get(r["reason"], 0) + 1
    for s in splits.values():
        s["seconds"] = round(s["seconds"], 3)
    return {
        "songs_in": len(records), "songs_written": written, "songs_failed": failed,
        "songs_truncated": truncated,
        "silence_trimmed_seconds": round(trimmed, 3),
        "failures": dict(sorted(failures.items())),
        "splits": dict(sorted(splits.items())),
    }
