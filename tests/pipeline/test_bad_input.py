"""Bad input never costs data: each class of bad input is dead-lettered with its
own reason, never blocks or stops the run, and never reaches a bin."""

import json
import os
import socket
import struct
import zipfile

import numpy as np
import pytest
import soundfile as sf

from beam_pipelines.ingest import fetch, sources
from beam_pipelines.ingest import song_chunks as sc
from wavegen.data.dataset import DatasetSpec

from fma_fixture import mp3_bytes
from helpers import preprocess_cli, tone, write_audio

SPEC = DatasetSpec(sample_rate=16000, quantization="mulaw", bits=8, chunk_samples=3000,
                   context_samples=500)
SMALL = ["--chunk_seconds=0.2", "--context_samples=200", "--split=train:1"]


def cli(*args, timeout=240):
    """The pipeline as a user runs it; a hang fails the test instead of stalling it."""
    return preprocess_cli(*args, "--direct_num_workers=1", "--direct_running_mode=in_memory",
                          timeout=timeout)


def dead_letters(tmp_path, *args) -> tuple[dict, dict, str]:
    """Runs the pipeline into tmp_path/ds, which must succeed without a traceback; returns
    its failed.jsonl records by song id, its summary and the dataset folder."""
    out = tmp_path / "ds"
    res = cli(f"--output_dir={out}", *SMALL, *args)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = (out / "failed.jsonl").read_text(encoding="utf-8").splitlines()
    summary = json.loads((out / "summary.json").read_text())
    return {json.loads(line)["song_id"]: json.loads(line) for line in lines}, summary, out


# --------------------------------------------------------------------------------------
# 1. Audio that is not finite


@pytest.mark.parametrize("frame", [10, 100_000])  # in the first decode block, and after it
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_fails_the_song_with_its_own_reason(tmp_path, frame, value):
    x = tone(3.0, 44100, channels=2, seed=frame)
    x[frame, 1] = value
    path = str(tmp_path / "float.wav")
    sf.write(path, x, 44100, subtype="FLOAT")
    with pytest.raises(sc.SongFailure) as info:
        list(sc.song_chunks(path, path, SPEC, sc.SongStats()))
    assert info.value.reason == sc.NON_FINITE
    assert f"frame {frame}" in info.value.detail and "float.wav" in info.value.detail


# --------------------------------------------------------------------------------------
# 2. Inputs that are not regular files


def _unix_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


@pytest.fixture
def odd_folder(tmp_path):
    """A folder of one good song and one of each kind of entry that is not a regular file."""
    root = tmp_path / "songs"
    write_audio(root / "rock" / "good.wav", tone(1.0, 16000), 16000)
    os.symlink(root / "nowhere.mp3", root / "rock" / "dangling.mp3")
    os.symlink(root / "rock" / "loop.mp3", root / "rock" / "loop.mp3")
    os.mkfifo(root / "rock" / "pipe.wav")
    os.symlink("/dev/zero", root / "rock" / "zero.wav")
    sock = _unix_socket(root / "rock" / "sock.flac")
    yield root
    sock.close()


EXPECTED_ODD = {"rock/dangling.mp3": "dangling symbolic link",
                "rock/loop.mp3": "symbolic link loop", "rock/pipe.wav": "named pipe",
                "rock/zero.wav": "character device", "rock/sock.flac": "socket"}


def test_entries_that_are_not_regular_files_are_listed_as_rejected(odd_folder):
    songs = {s.song_id: s for s in sources.discover([str(odd_folder)], "folder")}
    assert set(songs) == set(EXPECTED_ODD) | {"rock/good.wav"}
    assert songs["rock/good.wav"].reject == ""
    for sid, what in EXPECTED_ODD.items():
        assert songs[sid].reject.startswith(sc.NOT_A_FILE + ": "), songs[sid]
        assert what in songs[sid].reject and "\n" not in songs[sid].reject


def test_unreadable_files_are_rejected_without_opening(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "locked.wav", tone(1.0, 16000), 16000)
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).endswith("locked.wav"))
    assert sources.local_problem(path) == f"{sc.UNREADABLE}: {path}: permission denied"
    song = sources.discover([str(tmp_path)])[0]
    assert song.reject.startswith(sc.UNREADABLE)


def test_a_file_that_became_a_pipe_after_listing_is_not_opened(tmp_path):
    path = tmp_path / "late.wav"
    write_audio(path, tone(1.0, 16000), 16000)
    song = sources.discover([str(tmp_path)])[0]
    os.remove(path)
    os.mkfifo(path)  # opening it for reading would block for ever
    with pytest.raises(sc.SongFailure) as info:
        with sources.open_song(song, sources.ArchiveCache(), fetch.FetchConfig()):
            pass
    assert info.value.reason == sc.NOT_A_FILE and "named pipe" in info.value.detail


@pytest.mark.slow
def test_odd_entries_are_dead_lettered_and_never_block_the_run(odd_folder, tmp_path):
    failed, summary, _ = dead_letters(tmp_path, f"--input={odd_folder}")
    assert set(failed) == set(EXPECTED_ODD)
    assert all(r["reason"] == sc.NOT_A_FILE for r in failed.values())
    assert summary["songs_written"] == 1


# --------------------------------------------------------------------------------------
# 3. Archive members that cannot be read


def _patch_member(archive, name: str, *, flags: int | None = None, method: int | None = None,
                  crc: int | None = None):
    """Rewrites a member's flags, compression method or CRC in both of its headers."""
    data = bytearray(open(archive, "rb").read())
    encoded = name.encode()
    for sig, name_at, fields in ((b"PK\x03\x04", 30, (6, 8, 14)),
                                 (b"PK\x01\x02", 46, (8, 10, 16))):
        at = data.find(sig)
        while at >= 0:
            n = struct.unpack_from("<H", data, at + name_at - (4 if sig == b"PK\x03\x04" else 18))[0]
            if data[at + name_at:at + name_at + n] == encoded:
                for value, off, fmt in ((flags, fields[0], "<H"), (method, fields[1], "<H"),
                                        (crc, fields[2], "<I")):
                    if value is not None:
                        struct.pack_into(fmt, data, at + off, value)
            at = data.find(sig, at + 4)
    open(archive, "wb").write(bytes(data))


@pytest.fixture
def odd_archive(tmp_path):
    archive = tmp_path / "odd.zip"
    song = mp3_bytes(1.0, 16000, 330)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in ("good.mp3", "locked.mp3", "deflate64.mp3", "badcrc.mp3"):
            zf.writestr(name, song)
        zf.writestr("inner.zip", b"PK\x05\x06" + bytes(18))
        zf.writestr("README.txt", b"not a song")
    _patch_member(archive, "locked.mp3", flags=0x1)
    _patch_member(archive, "deflate64.mp3", method=9)
    _patch_member(archive, "badcrc.mp3", crc=0x12345678)
    return archive


def test_archive_members_that_cannot_be_read_get_their_reasons(odd_archive):
    songs = {s.song_id: s for s in sources.discover([str(odd_archive)])}
    assert set(songs) == {"good.mp3", "locked.mp3", "deflate64.mp3", "badcrc.mp3",
                          "inner.zip"}
    reasons = {sid: s.reject.split(":")[0] for sid, s in songs.items()}
    assert reasons == {"good.mp3": "", "locked.mp3": sc.ENCRYPTED,
                       "deflate64.mp3": sc.UNSUPPORTED_COMPRESSION,
                       "badcrc.mp3": "",  # only reading the data shows it
                       "inner.zip": sc.NESTED_ARCHIVE}
    assert f"{odd_archive}:locked.mp3" in songs["locked.mp3"].reject


@pytest.mark.parametrize("in_memory", [0, 64 << 20])  # streamed, and inflated at once
def test_a_member_failing_its_crc_is_corrupt_however_it_is_read(odd_archive, in_memory):
    song = {s.song_id: s for s in sources.discover([str(odd_archive)])}["badcrc.mp3"]
    cache = sources.ArchiveCache(in_memory_bytes=in_memory)
    with pytest.raises(sc.SongFailure) as info:
        with sources.open_song(song, cache, fetch.FetchConfig()) as f:
            list(sc.song_chunks(f, song.where, SPEC, sc.SongStats()))
    cache.close()
    assert info.value.reason == sc.CORRUPT_MEMBER and "CRC" in info.value.detail


@pytest.mark.slow
def test_odd_members_are_dead_lettered_not_internal_errors(odd_archive, tmp_path):
    failed, _, _ = dead_letters(tmp_path, f"--input={odd_archive}")
    assert {sid: r["reason"] for sid, r in failed.items()} == {
        "locked.mp3": sc.ENCRYPTED, "deflate64.mp3": sc.UNSUPPORTED_COMPRESSION,
        "badcrc.mp3": sc.CORRUPT_MEMBER, "inner.zip": sc.NESTED_ARCHIVE}


# --------------------------------------------------------------------------------------
# 5. Labels are data, not markup


ODD_GENRES = ["$HOME <b>&amp;", "Électro 中文 ✓", "g" * 200, "quote's \"double\""]


@pytest.mark.slow
def test_names_are_carried_intact_or_rejected_with_a_clear_line(tmp_path):
    import tensorflow_datasets as tfds

    root = tmp_path / "songs"
    for i, genre in enumerate(ODD_GENRES):
        write_audio(root / genre / f"s{i} $<&>.wav", tone(1.0, 16000, freq=200 + 50 * i), 16000)
    write_audio(root / "bad\ngenre" / "a.wav", tone(1.0, 16000), 16000)
    write_audio(root / "rock" / "tab\there.wav", tone(1.0, 16000), 16000)
    write_audio(root / "top.wav", tone(1.0, 16000, freq=900), 16000)  # no genre: top level
    failed, _, out = dead_letters(tmp_path, f"--input={root}", "--genre_from=folder")
    assert set(failed) == {"bad\ngenre/a.wav", "rock/tab\there.wav"}
    for r in failed.values():
        assert r["reason"] == sc.BAD_NAME and "control characters" in r["detail"]
    builder = tfds.builder_from_directory(str(out))
    names = builder.info.features["genre"].names
    assert names == sorted(ODD_GENRES + ["unknown"])
    labels = (out / "genre.labels.txt").read_text(encoding="utf-8").splitlines()
    assert labels == names
    got = {}
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
        got[ex["song_id"].decode()] = builder.info.features["genre"].int2str(ex["genre"])
    want = {f"{g}/s{i} $<&>.wav": g for i, g in enumerate(ODD_GENRES)}
    want["top.wav"] = "unknown"
    assert got == want


# --------------------------------------------------------------------------------------
# 6. Unparseable URL-list lines


def test_unparseable_url_lines_are_dead_lettered_as_rejected(tmp_path):
    urls = tmp_path / "songs.urls"
    urls.write_bytes(b"https://h/a.mp3\nhttps://h/b.mp3 nothex\nhttp://h/c.mp3 x y\n"
                     b"http://h/\xff\xfe.mp3\n")
    songs = {s.song_id: s for s in sources.discover([str(urls)])}
    assert songs["https://h/a.mp3"].reject == ""
    bad = {sid: s for sid, s in songs.items() if s.reject}
    assert set(bad) == {f"{urls}:2", f"{urls}:3", f"{urls}:4"}
    for s in bad.values():
        assert s.reject.startswith(fetch.REJECTED_URL + ": ") and "\n" not in s.reject
    assert "not a sha256" in bad[f"{urls}:2"].reject
    assert "3 fields" in bad[f"{urls}:3"].reject
    assert "not UTF-8" in bad[f"{urls}:4"].reject


# --------------------------------------------------------------------------------------
# 6. Every flag checked before any work


@pytest.mark.parametrize("flag", [
    "--sample_rate=0", "--sample_rate=-16000", "--sample_rate=10000000", "--bits=0",
    "--bits=17", "--chunk_seconds=nan", "--chunk_seconds=inf", "--chunk_seconds=0",
    "--chunk_seconds=-1", "--chunk_seconds=1e9", "--context_samples=-1",
    "--silence_db=nan", "--silence_db=-inf", "--silence_db=3", "--num_shards=-1",
    "--num_shards=100000", "--max_song_bytes=0", "--fetch_timeout=nan",
    "--fetch_timeout=0", "--fetch_deadline=inf", "--fetch_deadline=-1",
    "--fetch_attempts=0", "--fetch_backoff=-1", "--fetch_backoff=nan",
])
def test_each_bad_flag_is_one_line_naming_it_before_any_input_is_read(tmp_path, caplog,
                                                                     flag):
    from helpers import run_pipeline

    name = flag.split("=")[0]
    with caplog.at_level("ERROR"):
        code = run_pipeline(f"--input={tmp_path}/does-not-exist", f"--output_dir={tmp_path}/o",
                            flag)
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(name + " "), errors
    assert "\n" not in errors[0] and not (tmp_path / "o").exists()
