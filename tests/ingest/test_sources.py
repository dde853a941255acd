"""Listing and reading zip archives and URL lists (beam_pipelines.ingest.sources)."""

import io
import json
import os
import uuid
import zipfile

import pytest

from beam_pipelines.ingest import fetch, sources
from beam_pipelines.ingest import song_chunks as sc
from wavegen.data.dataset import DatasetSpec

from fma_fixture import mp3_bytes, write_fma_zip
from helpers import run_pipeline

SPEC = DatasetSpec(sample_rate=16000, quantization="mulaw", bits=8, chunk_samples=3000,
                   context_samples=500)


def test_fma_members_get_track_ids_and_other_members_their_paths(tmp_path):
    archive = write_fma_zip(tmp_path / "fma_small.zip", "small", {2: b"a", 155066: b"b"},
                            extra_members={"mine/rock/x.FLAC": b"c", "notes.txt": b"d"})
    songs = sources.discover([archive], genre_from="folder")
    assert [(s.song_id, s.member, s.track_id) for s in songs] == [
        ("155066", "fma_small/155/155066.mp3", 155066), ("2", "fma_small/000/000002.mp3", 2),
        ("mine/rock/x.FLAC", "mine/rock/x.FLAC", -1)]
    assert songs[2].genre == "rock" and all(s.kind == sources.ZIP for s in songs)
    assert songs[1].where == f"{archive}:fma_small/000/000002.mp3"


def test_a_glob_of_zips_lists_every_archive(tmp_path):
    write_fma_zip(tmp_path / "fma_a.zip", "small", {2: b"a"})
    write_fma_zip(tmp_path / "fma_b.zip", "small", {3: b"b"})
    assert [s.song_id for s in sources.discover([str(tmp_path / "*.zip")])] == ["2", "3"]


def test_a_broken_archive_is_named(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(sources.SourceError, match="broken.zip.*not a readable zip"):
        sources.discover([str(bad)])


@pytest.mark.parametrize("in_memory", [0, 64 << 20])
def test_members_stream_or_load_to_the_same_chunks(tmp_path, in_memory):
    data = mp3_bytes(2.0, 22050, 440)
    archive = write_fma_zip(tmp_path / "fma_small.zip", "small", {2: data})
    (tmp_path / "plain.mp3").write_bytes(data)
    song = sources.discover([archive])[0]
    cache = sources.ArchiveCache(in_memory_bytes=in_memory)
    with sources.open_song(song, cache, fetch.FetchConfig()) as src:
        assert isinstance(src, io.BytesIO) == bool(in_memory)
        got = list(sc.song_chunks(src, song.where, SPEC, sc.SongStats()))
    cache.close()
    want = list(sc.song_chunks(str(tmp_path / "plain.mp3"), "plain", SPEC,
                                       sc.SongStats()))
    assert len(got) == len(want) > 3
    assert all((a == b).all() for a, b in zip(got, want))


def test_member_names_are_never_output_paths(tmp_path):
    """A member named to climb out of the output folder is only a song id."""
    escape = f"../../../{uuid.uuid4().hex}.mp3"
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(escape, mp3_bytes(1.0, 16000, 300))
    out = tmp_path / "a" / "b" / "out"
    assert run_pipeline(f"--input={archive}", f"--output_dir={out}", "--split=train:1",
                        "--chunk_seconds=0.2", "--context_samples=100") == 0
    name = os.path.basename(escape)
    for root in (tmp_path, tmp_path / "a", os.path.dirname(tmp_path), "/tmp"):
        assert not os.path.exists(os.path.join(root, name))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["songs_written"] == 1


def test_song_over_the_size_limit_is_refused_before_reading(tmp_path):
    song = sources.SongRef(song_id="big", uri=str(tmp_path / "missing.wav"), input="x",
                           size=10)
    with pytest.raises(sources.SongTooLarge, match="10 bytes is over the limit of 9"):
        with sources.open_song(song, sources.ArchiveCache(), fetch.FetchConfig(max_bytes=9)):
            pass


def test_url_lists_keep_bad_schemes_for_the_dead_letters(tmp_path):
    urls = tmp_path / "songs.urls"
    urls.write_text("# list\nhttps://h/a.mp3\nftp://h/b.mp3\n\nhttps://h/a.mp3\n")
    songs = sources.discover([str(urls)])
    assert [(s.song_id, s.kind) for s in songs] == [("ftp://h/b.mp3", "url"),
                                                    ("https://h/a.mp3", "url")]


def test_malformed_url_list_line_is_named_and_rejected(tmp_path):
    urls = tmp_path / "songs.urls"
    urls.write_text("https://h/a.mp3\nhttps://h/b.mp3 nothex\n")
    bad, ok = sources.discover([str(urls)])  # sorted by id
    assert ok.song_id == "https://h/a.mp3" and not ok.reject
    assert bad.song_id == f"{urls}:2"
    assert bad.reject.startswith(f"rejected_url: {urls}:2: 'nothex' after the URL")
