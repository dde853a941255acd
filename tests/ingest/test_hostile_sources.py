"""Hostile inputs: links to folders, duplicate archive members,
genre names that do not survive the dataset's files, empty or text files named as audio,
and credentials inside URLs."""

import base64
import io
import json
import os
import warnings
import zipfile

import pytest
import soundfile as sf

from beam_pipelines.ingest import fetch, sources
from beam_pipelines.ingest import fma_metadata as fma
from beam_pipelines.ingest import song_chunks as sc
from wavegen.data.dataset import DatasetSpec, open_dataset

from helpers import preprocess_cli, run_pipeline, tone, write_audio
from songserver import Redirect, serve

SPEC = DatasetSpec(sample_rate=16000, quantization="mulaw", bits=8, chunk_samples=3200,
                   context_samples=200)
SMALL = ["--chunk_seconds=0.2", "--context_samples=200", "--split=train:1"]


def run(tmp_path, *args) -> tuple[dict, dict, str]:
    """The pipeline in this process into tmp_path/ds: (failed.jsonl's records by song id,
    summary, out)."""
    out = str(tmp_path / "ds")
    assert run_pipeline(f"--output_dir={out}", *SMALL, *args) == 0
    with open(os.path.join(out, "failed.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return {r["song_id"]: r for r in records}, summary, out


def wav_bytes(seconds: float, freq: float = 440.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, 16000, freq), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# 1. Links to folders


@pytest.fixture
def linked_tree(tmp_path):
    """songs/rock/a.wav, and links inside songs/: one to an outside folder (followed), a
    second route to it, a route to a folder inside songs/, and a loop back to songs/."""
    root, outside = tmp_path / "songs", tmp_path / "outside"
    write_audio(root / "rock" / "a.wav", tone(1.0, 16000), 16000)
    write_audio(outside / "jazz" / "b.wav", tone(1.0, 16000, 330.0), 16000)
    os.symlink(outside, root / "more")
    os.symlink(outside / "jazz", root / "zz_again")  # inside the folder 'more' walked
    os.symlink(root / "rock", root / "alias")  # a second route to songs/rock
    os.symlink(root, root / "rock" / "loop")  # back to the top: a loop
    return root


def test_a_linked_folder_is_followed_once_and_other_routes_are_dead_lettered(linked_tree):
    songs = {s.song_id: s for s in sources.discover([str(linked_tree)], "folder")}
    assert set(songs) == {"rock/a.wav", "more/jazz/b.wav", "zz_again", "alias", "rock/loop"}
    assert songs["more/jazz/b.wav"].reject == "" and songs["more/jazz/b.wav"].genre == "jazz"
    assert songs["more/jazz/b.wav"].uri == str(linked_tree / "more" / "jazz" / "b.wav")
    for sid in ("zz_again", "alias", "rock/loop"):
        reason, _, detail = songs[sid].reject.partition(": ")
        assert reason == sc.NOT_A_FILE, songs[sid]
        assert detail.startswith(str(linked_tree / sid) + ": a link to the folder ")
        assert os.path.realpath(linked_tree / sid) in detail and "not followed" in detail
    assert songs["zz_again"].reject.endswith("already walked (a second route to it)")
    assert songs["alias"].reject.endswith("already walked (a second route to it)")
    assert songs["rock/loop"].reject.endswith("leads back to a folder that holds it (a loop)")


def test_a_link_to_a_folder_holding_one_already_walked_is_not_followed(tmp_path):
    root, outside = tmp_path / "songs", tmp_path / "outside"
    write_audio(outside / "jazz" / "b.wav", tone(1.0, 16000), 16000)
    write_audio(outside / "c.wav", tone(1.0, 16000), 16000)
    root.mkdir()
    os.symlink(outside / "jazz", root / "a")
    os.symlink(outside, root / "b")
    songs = {s.song_id: s for s in sources.discover([str(root)])}
    assert set(songs) == {"a/b.wav", "b"}
    assert songs["b"].reject.endswith(
        f"it holds {os.path.realpath(outside / 'jazz')}, a folder already walked "
        "(a second route to it)")


def test_a_folder_that_cannot_be_listed_is_an_entry_and_an_input_that_cannot_stops(
        tmp_path, monkeypatch):
    root = tmp_path / "songs"
    write_audio(root / "a.wav", tone(1.0, 16000), 16000)
    (root / "locked").mkdir()
    scandir = os.scandir

    def refusing(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    songs = {s.song_id: s for s in sources.discover([str(root)])}
    assert set(songs) == {"a.wav", "locked"}
    assert songs["locked"].reject == (f"{sc.UNREADABLE}: {root / 'locked'}: cannot list the "
                                      "folder (Permission denied)")
    with pytest.raises(sources.SourceError, match="locked: cannot list the folder"):
        sources.discover([str(root / "locked")])


def test_linked_folders_through_the_pipeline(tmp_path, linked_tree):
    records, summary, out = run(tmp_path, f"--input={linked_tree}", "--genre_from=folder")
    assert summary["songs_in"] == 5 and summary["songs_written"] == 2
    assert summary["failures"] == {sc.NOT_A_FILE: 3}
    assert set(records) == {"zz_again", "alias", "rock/loop"}  # more/jazz/b.wav written
    assert records["rock/loop"]["detail"].endswith("(a loop)")


# --------------------------------------------------------------------------------------
# 2. Archives with two members of one name


@pytest.fixture
def twin_zip(tmp_path):
    """rock/a.wav twice (1 s, then 2 s of another tone), and b.wav."""
    path = tmp_path / "twins.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("rock/a.wav", wav_bytes(1.0))
            zf.writestr("b.wav", wav_bytes(1.0, 550.0))
            zf.writestr("rock/a.wav", wav_bytes(2.0, 660.0))
    return str(path)


def test_every_member_of_a_duplicated_name_is_counted_and_the_first_is_read(twin_zip):
    songs = sources.discover([twin_zip])
    assert [s.song_id for s in songs] == ["b.wav", "rock/a.wav", "rock/a.wav#2"]
    first, twin = songs[1], songs[2]
    assert first.reject == "" and twin.member == "rock/a.wav"
    assert twin.reject == (f"{sc.DUPLICATE_MEMBER}: {twin_zip}:rock/a.wav: a second member "
                           "named rock/a.wav (entry 3 of the archive); only the first is read")
    with sources.open_song(first, sources.ArchiveCache(), fetch.FetchConfig()) as f:
        assert f.read() == wav_bytes(1.0)


def test_duplicate_members_through_the_pipeline(tmp_path, twin_zip):
    records, summary, _ = run(tmp_path, f"--input={twin_zip}")
    assert summary["songs_in"] == 3 and summary["songs_written"] == 2
    # 1 s songs give 4 chunks of 0.2 s each; the 2 s member under the same name, 9.
    assert summary["splits"]["train"]["chunks"] == 8  # the first member, as recorded
    assert records["rock/a.wav#2"]["reason"] == sc.DUPLICATE_MEMBER
    assert f"{twin_zip}:rock/a.wav" in records["rock/a.wav#2"]["detail"]


# --------------------------------------------------------------------------------------
# 3. Genre names that would not come back from genre.labels.txt


BAD_GENRES = ["rock ", " ", "\u00a0pop", "jazz\u3000", "\u2003"]


def test_genres_that_do_not_round_trip_are_bad_names_and_the_dataset_opens(tmp_path):
    root = tmp_path / "songs"
    write_audio(root / "rock" / "good.wav", tone(1.0, 16000), 16000)
    for i, genre in enumerate(BAD_GENRES):
        write_audio(root / genre / f"bad{i}.wav", tone(1.0, 16000), 16000)
    records, summary, out = run(tmp_path, f"--input={root}", "--genre_from=folder")
    assert summary["songs_written"] == 1 and "rock/good.wav" not in records
    for i, genre in enumerate(BAD_GENRES):
        r = records[f"{genre}/bad{i}.wav"]
        assert r["reason"] == sc.BAD_NAME and repr(genre) in r["detail"], r
        assert "whitespace" in r["detail"]
    assert open_dataset(out).spec.genres == ("rock", "unknown")


def test_fma_genres_are_checked_too():
    song = sources.SongRef(song_id="2", uri="x.zip", input="x.zip", kind=sources.ZIP,
                           member="fma_small/000/000002.mp3", track_id=2)
    meta = {2: fma.FmaTrack(2, "Folk\u2028Rock", "training", "small")}
    [labelled], _ = sources.apply_metadata([song], meta, "fma", "hash")
    assert labelled.reject.startswith(sc.BAD_NAME + ": ")
    assert labelled.genre == "unknown"


# --------------------------------------------------------------------------------------
# 4. Empty files and text files named as audio


@pytest.mark.parametrize("ext", [".mp3", ".wav", ".flac"])
@pytest.mark.parametrize("as_file", [False, True])
def test_empty_and_text_files_say_what_they_are(tmp_path, ext, as_file):
    empty, text = tmp_path / f"empty{ext}", tmp_path / f"notes{ext}"
    empty.write_bytes(b"")
    text.write_text("these are my notes, not a song\n" * 10)
    noise = tmp_path / f"noise{ext}"
    noise.write_bytes(bytes([0, 159, 7, 255]) * 100)
    for path, said in ((empty, "empty (0 bytes)"),
                       (text, "not audio (text: 'these are my notes, not a song"),
                       (noise, "not ")):
        source = open(path, "rb") if as_file else str(path)
        with pytest.raises(sc.SongFailure) as info:
            list(sc.song_chunks(source, str(path), SPEC, sc.SongStats()))
        assert info.value.reason == sc.UNDECODABLE
        assert info.value.detail.startswith(f"{path}: {said}"), info.value.detail
        assert "does not exist" not in info.value.detail


def test_empty_and_text_files_through_the_pipeline(tmp_path):
    root = tmp_path / "songs"
    write_audio(root / "good.wav", tone(1.0, 16000), 16000)
    (root / "empty.mp3").write_bytes(b"")
    (root / "notes.mp3").write_text("hello\n")
    records, _, _ = run(tmp_path, f"--input={root}")
    assert records["empty.mp3"]["detail"] == f"{root / 'empty.mp3'}: empty (0 bytes)"
    assert records["notes.mp3"]["detail"].startswith(f"{root / 'notes.mp3'}: not audio (")
    assert records["notes.mp3"]["reason"] == records["empty.mp3"]["reason"] == sc.UNDECODABLE


# --------------------------------------------------------------------------------------
# 5. Credentials inside URLs


USER, PASSWORD = "alice", "s3cretPa55"


def test_credentials_are_sent_but_never_shown():
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with serve({"/a.wav": b"RIFF", "/gone.wav": 404}) as base:
        url = base.replace("http://", f"http://{USER}:{PASSWORD}@")
        with fetch.fetch(url + "/a.wav") as got:
            assert got.file.read() == b"RIFF"
        with pytest.raises(fetch.FetchError) as info:
            fetch.fetch(url + "/gone.wav", fetch.FetchConfig(max_attempts=1))
        assert [h.get("Authorization") for _, h in base.request_headers] == [basic, basic]
    e = info.value
    assert e.url == base + "/gone.wav" and e.detail.startswith(base + "/gone.wav: HTTP 404")
    assert PASSWORD not in json.dumps(e.to_record()) + str(e)
    assert fetch.public_url(url + "/a.wav?q=1") == base + "/a.wav?q=1"


def test_credentials_follow_a_redirect_only_to_the_same_origin():
    with serve({"/a.wav": b"A"}) as other:
        with serve({"/here": Redirect("/a.wav"), "/a.wav": b"B",
                    "/away": Redirect(other + "/a.wav")}) as base:
            url = base.replace("http://", f"http://{USER}:{PASSWORD}@")
            for path, body in (("/here", b"B"), ("/away", b"A")):
                with fetch.fetch(url + path) as got:
                    assert got.file.read() == body
            sent = [h.get("Authorization") for _, h in base.request_headers]
        assert len(sent) == 3 and all(sent)  # /here, /a.wav, /away
        assert [h.get("Authorization") for _, h in other.request_headers] == [None]


@pytest.mark.slow
def test_credentials_never_reach_the_output_folder_or_the_console(tmp_path):
    listing = tmp_path / "songs.urls"
    with serve({"/a.wav": wav_bytes(1.0), "/gone.wav": 404}) as base:
        url = base.replace("http://", f"http://{USER}:{PASSWORD}@")
        listing.write_text(f"{url}/a.wav\n{url}/gone.wav\n"
                           f"ftp://{USER}:{PASSWORD}@example.org/c.wav\n"
                           f"{url}/d.wav not-a-checksum\n")
        out = tmp_path / "ds"
        res = preprocess_cli(f"--input={listing}", f"--output_dir={out}", *SMALL,
                             "--fetch_attempts=1", "--direct_num_workers=1",
                             "--direct_running_mode=in_memory", timeout=240)
        assert res.returncode == 0, res.stderr[-3000:]
        assert base.requests["/a.wav"] == 1 and base.requests["/gone.wav"] == 1
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert all(h.get("Authorization") == basic for _, h in base.request_headers)
    records = {}
    with open(out / "failed.jsonl", encoding="utf-8") as f:
        for line in f:
            records[json.loads(line)["song_id"]] = json.loads(line)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["songs_in"] == 4 and summary["songs_written"] == 1
    assert base + "/a.wav" not in records
    assert records[base + "/gone.wav"]["reason"] == fetch.HTTP_ERROR
    assert sorted(r["reason"] for r in records.values()).count(fetch.REJECTED_URL) == 2
    files = [os.path.join(d, n) for d, _, names in os.walk(out) for n in names]
    assert any("tfrecord" in f for f in files)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        assert PASSWORD.encode() not in data and USER.encode() not in data, path
    assert PASSWORD not in res.stdout + res.stderr and USER not in res.stdout + res.stderr
