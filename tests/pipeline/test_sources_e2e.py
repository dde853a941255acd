"""Songs from FMA archives with their metadata, from URL lists over HTTP, and mixed with
local files, through the whole pipeline."""

import hashlib
import io
import json
import logging
import time

import numpy as np
import pytest
import soundfile as sf

from beam_pipelines.ingest import fma_metadata as fma
from beam_pipelines.ingest import song_chunks as sc

from fma_fixture import mp3_bytes, write_fma_zip, write_metadata_zip
from helpers import run_pipeline, tone, write_audio
from songserver import Delay, drop_in_body, serve

CHUNKS = ["--chunk_seconds=0.25", "--context_samples=500"]

# track id: (genre_top, FMA split); 3 is in the metadata but not in the archive.
TRACKS = {2: ("Hip-Hop", "training"), 5: ("Rock", "training"), 10: ("Folk", "validation"),
          140: ("", "test"), 141: ("Rock", "test"), 666: ("Rock", "training"),
          3: ("Pop", "training"), 1200: ("Folk", "training")}


def read_all(data_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(data_dir))
    out = {}
    for split in builder.info.splits:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        out[split] = [{"song_id": e["song_id"].decode(), "chunk_index": int(e["chunk_index"]),
                       "genre": builder.info.features["genre"].int2str(e["genre"]),
                       "audio": e["audio"]} for e in tfds.as_numpy(ds)]
    return builder, out


@pytest.fixture(scope="module")
def fma_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fma")
    members = {tid: mp3_bytes(1.0 + 0.2 * i, 22050, 200 + 50 * i, seed=i)
               for i, tid in enumerate([2, 5, 10, 140, 141])}
    members[666] = np.random.default_rng(0).bytes(5000)  # a corrupt member
    members[999] = mp3_bytes(1.0, 22050, 500)  # in the archive, not in the metadata
    members[1200] = mp3_bytes(4.0, 44100, 300)  # over the --max_song_bytes used below
    archive = write_fma_zip(root / "fma_small.zip", "small", members)
    tracks = [{"track_id": tid, "genre_top": g, "split": s} for tid, (g, s) in TRACKS.items()]
    meta = write_metadata_zip(root / "fma_metadata.zip", tracks)
    return root, archive, meta, members


@pytest.mark.slow
def test_fma_archive_with_metadata_genres_and_splits(fma_files, tmp_path):
    root, archive, meta, members = fma_files
    out = tmp_path / "ds"
    limit = max(len(b) for t, b in members.items() if t != 1200) + 1
    assert len(members[1200]) > limit
    code = run_pipeline(f"--input={archive}", f"--metadata={meta}", f"--output_dir={out}",
                        "--genre_from=fma", "--split_from=fma", f"--max_song_bytes={limit}",
                        *CHUNKS)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["songs_in"] == len(members) == 8
    assert summary["songs_written"] == 5
    assert summary["songs_failed"] == 3
    failed = {json.loads(line)["song_id"]: json.loads(line)
              for line in (out / "failed.jsonl").read_text().splitlines()}
    assert failed["666"]["reason"] == sc.UNDECODABLE
    assert failed["999"]["reason"] == sc.NO_METADATA
    assert failed["1200"]["reason"] == sc.TOO_LARGE
    assert failed["666"]["path"] == f"{archive}:fma_small/000/000666.mp3"
    md = summary["metadata"]
    assert md["songs_without_metadata"] == {"count": 1, "examples": ["999"]}
    assert md["tracks_missing_from_inputs"] == {"count": 1, "examples": [3]}
    builder, data = read_all(out)
    assert builder.info.features["genre"].names == ["Folk", "Hip-Hop", "Rock", "unknown"]
    seen = set()
    for split, examples in data.items():
        for ex in examples:
            genre, fma_split = TRACKS[int(ex["song_id"])]
            assert split == fma.FMA_SPLITS[fma_split]
            assert ex["genre"] == (genre or "unknown")
            seen.add(ex["song_id"])
    assert seen == {"2", "5", "10", "140", "141"}


@pytest.mark.slow
def test_zip_members_decode_like_the_same_files_in_a_folder(fma_files, tmp_path):
    root, archive, meta, members = fma_files
    folder = tmp_path / "folder" / "000"
    folder.mkdir(parents=True)
    for tid in (2, 5):
        (folder / f"{tid:06d}.mp3").write_bytes(members[tid])
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_pipeline(f"--input={folder.parent}", f"--output_dir={a}", "--split=train:1",
                        *CHUNKS) == 0
    assert run_pipeline(f"--input={archive}", f"--output_dir={b}", "--split=train:1",
                        *CHUNKS) == 0
    _, da = read_all(a)
    _, db = read_all(b)
    by_a = {(e["song_id"].split("/")[-1].split(".")[0].lstrip("0"), e["chunk_index"]): e["audio"]
            for e in da["train"]}
    by_b = {(e["song_id"], e["chunk_index"]): e["audio"] for e in db["train"]
            if e["song_id"] in ("2", "5")}
    assert by_a.keys() == by_b.keys() and by_a
    for k in by_a:
        np.testing.assert_array_equal(by_a[k], by_b[k])


def test_the_same_track_from_two_archives_is_a_collision_naming_both(fma_files, tmp_path,
                                                                     caplog):
    root, archive, meta, members = fma_files
    medium = write_fma_zip(tmp_path / "fma_medium.zip", "medium", {2: members[2]})
    with caplog.at_level(logging.ERROR):
        code = run_pipeline(f"--input={archive}", f"--input={medium}",
                            f"--output_dir={tmp_path / 'ds'}")
    assert code == 2
    assert "fma_small.zip:fma_small/000/000002.mp3" in caplog.text
    assert "fma_medium.zip:fma_medium/000/000002.mp3" in caplog.text


def test_fma_labels_need_metadata(fma_files, tmp_path, caplog):
    _, archive, _, _ = fma_files
    with caplog.at_level(logging.ERROR):
        assert run_pipeline(f"--input={archive}", f"--output_dir={tmp_path}/o",
                            "--genre_from=fma") == 2
    assert "--metadata" in caplog.text


def _wav_bytes(seconds, sr, freq):
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr, freq=freq), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.mark.slow
def test_url_list_outcomes_over_local_http(tmp_path):
    ok = mp3_bytes(1.0, 22050, 330)
    wav = _wav_bytes(1.0, 16000, 440)
    flaky = mp3_bytes(1.0, 22050, 550, seed=3)
    routes = {"/ok.mp3": ok, "/sum.wav": wav, "/missing.mp3": 404, "/flaky.mp3": [500, flaky],
              "/slow.mp3": Delay(3.0, ok), "/drop.mp3": drop_in_body(ok, 100),
              "/badsum.mp3": ok}
    with serve(routes) as base:
        lines = [
            "# songs for the test",
            f"{base}/ok.mp3",
            f"{base}/sum.wav {hashlib.sha256(wav).hexdigest()}",
            f"{base}/missing.mp3",
            f"{base}/flaky.mp3   # 500 first",
            f"{base}/slow.mp3",
            f"{base}/drop.mp3",
            f"{base}/badsum.mp3 {'0' * 64}",
            "ftp://example.invalid/song.mp3",
            "",
        ]
        urls = tmp_path / "songs.urls"
        urls.write_text("\n".join(lines))
        out = tmp_path / "ds"
        t0 = time.monotonic()
        code = run_pipeline(f"--input={urls}", f"--output_dir={out}", "--split=train:1",
                            "--fetch_timeout=0.5", "--fetch_attempts=3",
                            "--fetch_backoff=0.05", *CHUNKS)
        elapsed = time.monotonic() - t0
        requests = dict(base.requests)
    assert code == 0
    assert elapsed < 60
    failed = {json.loads(line)["song_id"].rsplit("/", 1)[-1]: json.loads(line)
              for line in (out / "failed.jsonl").read_text().splitlines()}
    expect = {"missing.mp3": ("http_error", 404, 1), "slow.mp3": ("timeout", None, 3),
              "drop.mp3": ("connection_error", 200, 3),
              "badsum.mp3": ("checksum_mismatch", 200, 1),
              "song.mp3": ("rejected_url", None, 0)}
    assert set(failed) == set(expect)
    for name, (reason, status, attempts) in expect.items():
        rec = failed[name]
        assert (rec["reason"], rec["attempts"]) == (reason, attempts), rec
        assert rec["url"].endswith(name) and rec["detail"]
        if status is not None:
            assert rec["http_status"] == status, rec
    # What should be written is written once: each good song fetched and stored once.
    assert requests["/ok.mp3"] == 1 and requests["/sum.wav"] == 1
    assert requests["/flaky.mp3"] == 2 and requests["/slow.mp3"] == 3
    _, data = read_all(out)
    keys = [(e["song_id"], e["chunk_index"]) for e in data["train"]]
    assert len(keys) == len(set(keys))
    assert {k[0].rsplit("/", 1)[-1] for k in keys} == {"ok.mp3", "sum.wav", "flaky.mp3"}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["songs_in"], summary["songs_written"], summary["songs_failed"]) == (8, 3, 5)


@pytest.mark.slow
def test_zip_urls_and_folders_mix_in_one_run(fma_files, tmp_path):
    _, archive, _, members = fma_files
    folder = tmp_path / "local"
    write_audio(folder / "rock" / "mine.flac", tone(1.0, 44100, channels=2), 44100)
    with serve({"/web.mp3": members[2]}) as base:
        (tmp_path / "web.urls").write_text(f"{base}/web.mp3\n")
        out = tmp_path / "ds"
        code = run_pipeline(f"--input={archive}", f"--input={folder}",
                            f"--input={tmp_path / 'web.urls'}", f"--output_dir={out}",
                            "--split=train:1", *CHUNKS)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["songs_in"] == len(members) + 2
    _, data = read_all(out)
    ids = {e["song_id"] for e in data["train"]}
    assert {"rock/mine.flac", f"{base}/web.mp3", "2", "999"} <= ids
