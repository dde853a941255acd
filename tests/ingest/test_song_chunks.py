"""Unit tests of per-song preprocessing, splits, shards and input discovery."""

import os
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from beam_pipelines.ingest import song_chunks as sc
from beam_pipelines.ingest import sources
from wavegen.data import audio
from wavegen.data.dataset import DatasetSpec

from helpers import chunk_array, num_chunks, tone, write_audio

SPEC = DatasetSpec(sample_rate=16000, quantization="mulaw", bits=8, chunk_samples=4000,
                   context_samples=1000)


def chunks_of(path, spec=SPEC, **kw):
    stats = sc.SongStats()
    return list(sc.song_chunks(path, path, spec, stats, **kw)), stats


def test_song_gives_the_expected_chunks_of_the_resampled_song(tmp_path):
    x = tone(3.0, 44100, channels=2)
    path = write_audio(tmp_path / "a.flac", x, 44100)
    chunks, stats = chunks_of(path)
    mono = audio.resample(audio.mixdown(sf.read(path, dtype="float32")[0]), 44100, 16000)
    want = chunk_array(audio.quantize(mono, "mulaw", 8), 4000, 1000)
    assert len(chunks) == len(want) == num_chunks(48000, 4000, 1000) == 15
    # Streaming vs whole-array resampling may flip a bin at a rounding edge, no more.
    diff = np.abs(np.stack(chunks).astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert (stats.source_rate, stats.channels, stats.frames_in) == (44100, 2, 132300)
    assert stats.chunks == 15 and stats.samples_out == 48000 and not stats.truncated


def test_silent_song_fails_at_its_end(tmp_path):
    path = write_audio(tmp_path / "quiet.wav", np.zeros((48000, 1), np.float32), 16000)
    with pytest.raises(sc.SongFailure) as e:
        chunks_of(path)
    assert e.value.reason == sc.SILENT and "quiet.wav" in e.value.detail


def test_song_silent_at_first_keeps_its_held_back_chunks(tmp_path):
    x = np.concatenate([np.zeros((40000, 1), np.float32), tone(1.0, 16000)])
    path = write_audio(tmp_path / "late.wav", x, 16000)
    chunks, stats = chunks_of(path, trim_silence=False)
    assert len(chunks) == num_chunks(56000, 4000, 1000) == stats.chunks
    assert stats.trimmed == 0


@pytest.mark.parametrize("lead,tail", [(40000, 0), (0, 30000), (25000, 37000)])
def test_leading_and_trailing_silence_is_trimmed_before_chunking(tmp_path, lead, tail):
    """Digital silence at either end is dropped (and counted); the audible middle, with a
    silent gap inside it, is chunked exactly as if the song were only that."""
    rng = np.random.default_rng(lead + tail)
    music = tone(1.5, 16000, seed=lead)[:, 0]
    gap = np.zeros(9000, np.float32)  # inside the song: kept
    middle = np.concatenate([music, gap, music[::-1]])
    quiet = 10 ** (-70 / 20)  # below --silence_db=-60: silence, though not all zeros
    x = np.concatenate([rng.uniform(-quiet, quiet, lead), middle,
                        rng.uniform(-quiet, quiet, tail)]).astype(np.float32)
    path = str(tmp_path / "padded.wav")
    sf.write(path, x, 16000, subtype="FLOAT")
    chunks, stats = chunks_of(path)
    first, last = np.flatnonzero(np.abs(x) > 10 ** (-60 / 20))[[0, -1]]
    want = chunk_array(audio.quantize(x[first:last + 1], "mulaw", 8), 4000, 1000)
    assert stats.trimmed == first + len(x) - 1 - last >= lead + tail - 2
    assert len(chunks) == len(want) == stats.chunks > 0
    np.testing.assert_array_equal(np.stack(chunks), want)


def test_trimming_holds_a_long_silence_on_disk_not_in_memory():
    """A silent stretch of unknown end is held back; past spool_bytes it spills to disk."""
    loud = np.full(1000, 0.5, np.float32)
    trimmer = audio.SilenceTrimmer(0.01, spool_bytes=40_000)
    silence = np.zeros(100_000, np.float32)  # 400 kB held
    kept = list(trimmer.push(np.concatenate([silence[:500], loud, silence])))
    assert trimmer._held._rolled  # on disk
    kept += list(trimmer.push(loud))  # not the end after all: the silence comes back
    kept += list(trimmer.push(silence[:777]))
    trimmer.finish()
    np.testing.assert_array_equal(np.concatenate(kept), np.concatenate([loud, silence, loud]))
    assert (trimmer.leading, trimmer.trailing) == (500, 777)


def test_too_short_song_fails(tmp_path):
    path = write_audio(tmp_path / "s.ogg", tone(0.2, 16000), 16000)
    with pytest.raises(sc.SongFailure) as e:
        chunks_of(path)
    assert e.value.reason == sc.TOO_SHORT and "shorter than one chunk" in e.value.detail


@pytest.mark.parametrize("make,reason", [
    (lambda p: p.write_bytes(b""), sc.UNDECODABLE),
    (lambda p: p.write_text("not audio at all\n" * 100), sc.UNDECODABLE),
    (lambda p: p.write_bytes(np.random.default_rng(1).bytes(30000)), sc.UNDECODABLE),
])
@pytest.mark.parametrize("ext", [".mp3", ".wav", ".flac", ".ogg"])
def test_garbage_is_undecodable(tmp_path, make, reason, ext):
    p = tmp_path / f"bad{ext}"
    make(p)
    with pytest.raises(sc.SongFailure) as e:
        chunks_of(str(p))
    assert e.value.reason == reason and f"bad{ext}" in e.value.detail


def lying_wav(path, frames_written, frames_declared, sr=16000):
    """A 16-bit mono WAV whose header declares more frames than the file holds."""
    data = (tone(frames_written / sr, sr)[:, 0] * 32767).astype("<i2").tobytes()
    n = frames_declared * 2
    header = (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVEfmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
              + b"data" + struct.pack("<I", n))
    path.write_bytes(header + data)
    return str(path)


def test_header_that_lies_about_its_length_fails(tmp_path):
    path = lying_wav(tmp_path / "lie.wav", frames_written=800, frames_declared=16000 * 60)
    with pytest.raises(sc.SongFailure) as e:
        chunks_of(path)
    assert e.value.reason in (sc.TOO_SHORT, sc.NO_AUDIO, sc.UNDECODABLE)


@pytest.mark.parametrize("ext,keep", [(".flac", 0.02), (".ogg", 0.25), (".mp3", 0.05)])
def test_truncated_file_without_usable_audio_fails(tmp_path, ext, keep):
    full = write_audio(tmp_path / f"full{ext}", tone(2.0, 44100, channels=2), 44100)
    data = open(full, "rb").read()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(sc.SongFailure) as e:
        chunks_of(str(cut))
    assert e.value.reason in (sc.UNDECODABLE, sc.NO_AUDIO, sc.TOO_SHORT)


def test_truncated_long_file_keeps_its_usable_audio(tmp_path):
    full = write_audio(tmp_path / "full.mp3", tone(6.0, 44100, channels=2), 44100)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[:len(data) // 2])
    chunks, stats = chunks_of(str(cut))
    assert 2 <= len(chunks) <= num_chunks(48000, 4000, 1000) + 1


@pytest.mark.parametrize("silent_minutes,trim", [(0, True), (3, False), (3, True)])
def test_decoding_streams_a_long_file_in_bounded_memory(tmp_path, silent_minutes, trim):
    # 4 minutes of 44.1 kHz stereo (85 MB as float32 PCM), with or without 3 minutes of
    # silence first: the stream holds about a block, whatever the song or its intro.
    sr, seconds = 44100, 240
    path = str(tmp_path / "long.wav")
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        block = tone(10.0, sr, channels=2)
        for i in range(seconds // 10):
            f.write(block * 0 if i < 6 * silent_minutes else block)
    stats = sc.SongStats()
    tracemalloc.start()
    n = 0
    for _ in sc.song_chunks(path, path, SPEC, stats, trim_silence=trim):
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    kept = seconds * 16000 - stats.trimmed
    assert n == num_chunks(kept, 4000, 1000)
    assert abs(stats.trimmed - (silent_minutes * 60 * 16000 if trim else 0)) < 100
    assert peak < 8 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_a_long_silence_inside_and_after_a_song_costs_no_memory(tmp_path):
    # 1 minute of music, 3 minutes of silence, 10 s of music, 2 minutes of silence: both
    # silences are held back while it is unknown whether they end the song.
    sr = 44100
    path = str(tmp_path / "gaps.wav")
    music, silence = tone(10.0, sr, channels=2), np.zeros((10 * sr, 2), np.float32)
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        for block in [music] * 6 + [silence] * 18 + [music] + [silence] * 12:
            f.write(block)
    stats = sc.SongStats()
    tracemalloc.start()
    n = sum(1 for _ in sc.song_chunks(path, path, SPEC, stats))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert abs(stats.trimmed - 120 * 16000) < 100  # only the trailing 2 minutes
    assert n == num_chunks(370 * 16000 - stats.trimmed, 4000, 1000)
    assert peak < 16 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"


# --------------------------------------------------------------------------------------


def test_split_assignment_is_stable_across_processes_and_orders():
    splits = sc.parse_splits("train:0.8,validation:0.1,test:0.1")
    ids = [f"genre{i % 3}/song{i}.mp3" for i in range(2000)]
    here = [sc.assign_split(s, splits) for s in ids]
    assert here == [sc.assign_split(s, splits) for s in reversed(ids)][::-1]
    code = ("from beam_pipelines.ingest import song_chunks as p; s=p.parse_splits('train:0.8,validation:0.1,"
            "test:0.1'); print(','.join(p.assign_split(f'genre{i % 3}/song{i}.mp3', s) "
            "for i in range(2000)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip().split(",") == here
    counts = {n: here.count(n) for n in ("train", "validation", "test")}
    assert 1500 < counts["train"] < 1700 and 140 < counts["test"] < 260


@pytest.mark.parametrize("text,msg", [
    ("train:0.9,validation:0.2", "sum to"),
    ("train=1", "NAME:FRACTION"),
    ("train:x", "not a number"),
    ("train:0.5,train:0.5", "twice"),
    ("train:1.5,test:-0.5", "outside"),
])
def test_bad_split_specs_are_refused(text, msg):
    with pytest.raises(ValueError, match=msg):
        sc.parse_splits(text)


def test_shard_count_follows_size_and_request():
    assert sc.num_shards_for(0, 20000) == 0
    assert sc.num_shards_for(10, 20000) == 1
    assert sc.num_shards_for(100_000, 20000) == 15  # 2 GB / 128 MiB
    assert sc.num_shards_for(100, 20000, requested=8) == 8
    assert sc.num_shards_for(3, 20000, requested=8) == 3


def test_summary_balances():
    recs = [
        {"status": "written", "split": "train", "chunks": 3, "target_seconds": 3.0},
        {"status": "written", "split": "test", "chunks": 1, "target_seconds": 1.0,
         "truncated": "x"},
        {"status": "failed", "reason": "silent"},
        {"status": "failed", "reason": "silent"},
        {"status": "failed", "reason": "too_short"},
    ]
    s = sc.summarize(recs)
    assert s["songs_in"] == 5 == s["songs_written"] + s["songs_failed"]
    assert s["failures"] == {"silent": 2, "too_short": 1}
    assert s["splits"]["train"] == {"songs": 1, "chunks": 3, "seconds": 3.0}
    assert s["songs_truncated"] == 1


# --------------------------------------------------------------------------------------


def _corpus(root):
    for rel in ["rock/a.mp3", "rock/deep/b.WAV", "jazz/c.flac", "notes.txt", "jazz/d.Ogg"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_folder_input_is_searched_recursively_any_case(tmp_path):
    _corpus(tmp_path)
    songs = sources.discover([str(tmp_path)], genre_from="folder")
    assert [s.song_id for s in songs] == ["jazz/c.flac", "jazz/d.Ogg", "rock/a.mp3",
                                          "rock/deep/b.WAV"]
    assert [s.genre for s in songs] == ["jazz", "jazz", "rock", "deep"]
    assert all(s.size == 1 for s in songs)


def test_glob_and_file_inputs_get_readable_relative_ids(tmp_path):
    _corpus(tmp_path)
    songs = sources.discover([str(tmp_path / "rock" / "*.mp3"), str(tmp_path / "jazz/c.flac")])
    assert [(s.song_id, s.genre) for s in songs] == [("a.mp3", "unknown"), ("c.flac", "unknown")]
    assert sources.discover([str(tmp_path / "*" / "*.mp3")])[0].song_id == "rock/a.mp3"


def test_a_folder_whose_name_looks_like_a_glob_is_a_folder(tmp_path):
    album = tmp_path / "Album [FLAC]"
    (album / "cd1").mkdir(parents=True)
    (album / "cd1" / "01.flac").write_bytes(b"x")
    assert [s.song_id for s in sources.discover([str(album)])] == ["cd1/01.flac"]


def test_same_file_through_two_inputs_is_one_song(tmp_path):
    _corpus(tmp_path)
    songs = sources.discover([str(tmp_path), str(tmp_path / "rock" / "*.mp3")])
    assert len(songs) == 4


def test_song_id_collision_names_both_sources(tmp_path):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.mp3").write_bytes(b"x")
    with pytest.raises(sources.SourceError, match="one/same.mp3.*two/same.mp3"):
        sources.discover([str(tmp_path / "one"), str(tmp_path / "two")])


@pytest.mark.parametrize("rel,msg", [("missing", "no such file"), ("notes.txt", "not a supported"),
                                     ("empty", "holds no")])
def test_unusable_inputs_are_named(tmp_path, rel, msg):
    _corpus(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(sources.SourceError, match=msg):
        sources.discover([str(tmp_path / rel)])
