"""End to end: a small corpus of every format, rate and kind of bad input, through the
command line (local multi-process runner) and through the PortableRunner (the Job API that
Flink and Spark job servers speak), read back with tensorflow_datasets."""

import json
import os
import struct

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from beam_pipelines.ingest import song_chunks as sc
from wavegen.data import audio
from wavegen.data.dataset import load_dataset_spec

from helpers import num_chunks, preprocess_cli, tone, write_audio

CHUNK_ARGS = ["--chunk_seconds=0.5", "--context_samples=1000",
              "--split=train:0.6,validation:0.2,test:0.2", "--genre_from=folder"]
GOOD = {  # song id: (sample rate, channels, seconds, format extension)
    "rock/a.mp3": (44100, 2, 4.0), "rock/b.wav": (48000, 1, 3.0),
    "jazz/c.flac": (22050, 2, 3.0), "jazz/d.ogg": (16000, 1, 3.0),
    "folk/e.WAV": (8000, 3, 2.5), "folk/f.mp3": (32000, 1, 3.0),
    "folk/g.flac": (44100, 2, 3.5),
}
BAD = {  # song id: accepted reasons
    "rock/empty.mp3": {sc.UNDECODABLE},
    "rock/text.wav": {sc.UNDECODABLE},
    "jazz/random.flac": {sc.UNDECODABLE},
    "jazz/lying.wav": {sc.TOO_SHORT, sc.NO_AUDIO, sc.UNDECODABLE},
    "folk/truncated.ogg": {sc.NO_AUDIO, sc.UNDECODABLE},
    "folk/short.wav": {sc.TOO_SHORT},
    "rock/silent.flac": {sc.SILENT},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i, (sid, (sr, ch, sec)) in enumerate(sorted(GOOD.items())):
        write_audio(root / sid, tone(sec, sr, freq=220 * (i + 1), channels=ch, seed=i), sr)
    (root / "rock/empty.mp3").write_bytes(b"")
    (root / "rock/text.wav").write_text("RIFF? no, just text\n" * 40)
    (root / "jazz/random.flac").write_bytes(np.random.default_rng(7).bytes(40000))
    pcm = (tone(0.05, 16000)[:, 0] * 20000).astype("<i2").tobytes()
    (root / "jazz/lying.wav").write_bytes(
        b"RIFF" + struct.pack("<I", 36 + 10**8) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data" + struct.pack("<I", 10**8) + pcm)
    full = write_audio(root / "folk/full.ogg", tone(2.0, 44100, channels=2), 44100)
    data = open(full, "rb").read()
    os.remove(full)
    (root / "folk/truncated.ogg").write_bytes(data[:len(data) // 4])
    write_audio(root / "folk/short.wav", tone(0.3, 16000), 16000)
    write_audio(root / "rock/silent.flac", np.zeros((48000, 2), np.float32), 16000)
    (root / "rock/cover.jpg").write_bytes(b"not a song, not an input")
    return root


@pytest.fixture(scope="module")
def cli_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "dataset"
    res = preprocess_cli(f"--input={corpus}", f"--output_dir={out}", "--direct_num_workers=2",
                         *CHUNK_ARGS)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


def read_split(data_dir, split):
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(str(data_dir)).as_dataset(split=split, shuffle_files=False)
    return [{k: (v.decode() if isinstance(v, bytes) else v) for k, v in ex.items()}
            for ex in tfds.as_numpy(ds)]


def read_all(data_dir):
    import tensorflow_datasets as tfds

    splits = tfds.builder_from_directory(str(data_dir)).info.splits
    return {name: read_split(data_dir, name) for name in splits}


@pytest.mark.slow
def test_counts_balance_and_every_bad_input_is_dead_lettered(cli_run):
    out, res = cli_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["songs_in"] == len(GOOD) + len(BAD)
    assert summary["songs_written"] == len(GOOD)
    assert summary["songs_failed"] == len(BAD)
    failed = {json.loads(line)["song_id"]: json.loads(line)
              for line in (out / "failed.jsonl").read_text().splitlines()}
    assert set(failed) == set(BAD)
    for sid, rec in failed.items():
        assert rec["reason"] in BAD[sid], rec
        assert rec["detail"] and rec["path"].endswith(sid)
    assert "songs in 14, written 7, failed 7" in res.stdout
    assert not [p for p in os.listdir(out) if p.startswith((".wavegen-staging-",
                                                             ".wavegen-old-", ".staging"))]


@pytest.mark.slow
def test_dataset_reads_back_through_tfds_with_its_metadata(cli_run):
    import tensorflow_datasets as tfds

    out, _ = cli_run
    spec = load_dataset_spec(str(out))
    assert (spec.sample_rate, spec.quantization, spec.bits) == (16000, "mulaw", 8)
    assert (spec.chunk_samples, spec.context_samples) == (8000 + 1000, 1000)
    builder = tfds.builder_from_directory(str(out))
    assert builder.info.features["genre"].names == ["folk", "jazz", "rock", "unknown"]
    summary = json.loads((out / "summary.json").read_text())
    splits = sc.parse_splits("train:0.6,validation:0.2,test:0.2")
    data = read_all(out)
    seen_songs = set()
    for split, examples in data.items():
        assert len(examples) == summary["splits"][split]["chunks"]
        for ex in examples:
            assert ex["audio"].dtype == np.uint8 and ex["audio"].shape == (spec.chunk_samples,)
            assert sc.assign_split(ex["song_id"], splits) == split
            assert spec.genres[ex["genre"]] == ex["song_id"].split("/")[0]
            seen_songs.add(ex["song_id"])
    assert seen_songs == set(GOOD)
    n_chunks = {sid: num_chunks(int(round(sec * 16000)), 9000, 1000)
                for sid, (_, _, sec) in GOOD.items()}
    for sid, n in n_chunks.items():
        got = sorted(ex["chunk_index"] for exs in data.values() for ex in exs
                     if ex["song_id"] == sid)
        assert got == list(range(n)), sid
    # The audio is stored as raw bytes, not widened to int64.
    feats = json.loads((out / "features.json").read_text())
    assert "bytes" in json.dumps(feats["featuresDict"]["features"]["audio"]).lower()


@pytest.mark.slow
@pytest.mark.parametrize("sid", ["rock/a.mp3", "jazz/c.flac", "folk/e.WAV"])
def test_dequantized_chunks_match_the_source_resampled_independently(cli_run, corpus, sid):
    out, _ = cli_run
    x, sr = sf.read(str(corpus / sid), dtype="float64")
    g = np.gcd(sr, 16000)
    ref = resample_poly(x.mean(axis=1) if x.ndim > 1 else x, 16000 // g, sr // g)
    examples = [e for exs in read_all(out).values() for e in exs if e["song_id"] == sid]
    assert examples
    for ex in examples:
        start = ex["chunk_index"] * 8000
        got = audio.mulaw_decode(ex["audio"], 8).astype(np.float64)
        want = ref[start:start + 9000]
        snr = 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2))
        assert snr > 30, f"{sid} chunk {ex['chunk_index']}: SNR {snr:.1f} dB"


@pytest.mark.slow
def test_examples_are_shuffled_across_songs(cli_run):
    out, _ = cli_run
    train = read_split(out, "train")
    same = [a["song_id"] == b["song_id"] for a, b in zip(train, train[1:])]
    songs = {e["song_id"] for e in train}
    assert len(songs) >= 2 and np.mean(same) < 0.5


@pytest.mark.slow
def test_portable_runner_gives_the_same_examples(cli_run, corpus, tmp_path):
    from beam_pipelines import preprocess as pipeline

    out = tmp_path / "portable"
    code = pipeline.run([f"--input={corpus}", f"--output_dir={out}", *CHUNK_ARGS,
                         "--runner=PortableRunner", "--job_endpoint=embed",
                         "--environment_type=LOOPBACK"])
    assert code == 0
    a, b = read_all(cli_run[0]), read_all(out)
    assert a.keys() == b.keys()
    for split in a:  # same order, same content (bytes may differ: compare decoded)
        assert [(e["song_id"], e["chunk_index"]) for e in a[split]] == \
               [(e["song_id"], e["chunk_index"]) for e in b[split]]
        for x, y in zip(a[split], b[split]):
            np.testing.assert_array_equal(x["audio"], y["audio"])


@pytest.mark.slow
def test_a_run_where_everything_fails_leaves_no_dataset(corpus, tmp_path):
    out = tmp_path / "nothing"
    res = preprocess_cli(f"--input={corpus}/rock/empty.mp3",
                         f"--input={corpus}/rock/silent.flac", f"--output_dir={out}",
                         "--direct_num_workers=1")
    assert res.returncode == 1
    assert "no song was written" in res.stderr
    assert not (out / "dataset_info.json").exists()
    assert len((out / "failed.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "summary.json").read_text())["songs_failed"] == 2


@pytest.mark.slow
def test_a_run_that_writes_nothing_keeps_the_dataset_already_there(cli_run, corpus,
                                                                    tmp_path):
    import shutil
    from pathlib import Path

    from beam_pipelines import output_folder
    from beam_pipelines import preprocess as pipeline

    out = tmp_path / "kept"
    shutil.copytree(cli_run[0], out)
    before = sorted(os.listdir(out))
    stale = Path(output_folder.make_scratch(str(out))) / "spill"  # as a killed run left it
    stale.mkdir()
    (stale / "x.examples").write_bytes(b"left by a killed run")
    code = pipeline.run([f"--input={corpus}/rock/empty.mp3", f"--output_dir={out}",
                         "--overwrite"])
    assert code == 1
    after = sorted(os.listdir(out))
    assert set(after) - set(before) == {"failed.latest.jsonl", "summary.latest.json"}
    assert read_all(out).keys() == read_all(cli_run[0]).keys()  # still readable, unchanged
    assert json.loads((out / "summary.latest.json").read_text())["songs_failed"] == 1


def test_bad_command_lines_give_one_clear_error(corpus, tmp_path, caplog):
    from beam_pipelines import preprocess as pipeline

    assert pipeline.run([f"--input={tmp_path}/nope", f"--output_dir={tmp_path}/o"]) == 2
    assert pipeline.run([f"--input={corpus}", f"--output_dir={tmp_path}/o",
                         "--split=train:0.5"]) == 2
    with caplog.at_level("ERROR"):
        assert pipeline.run([f"--input={corpus}", f"--output_dir={tmp_path}/o",
                             "--fetch_attempts=0"]) == 2
    assert "--fetch_attempts must be" in caplog.text
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "dataset_info.json").write_text("{}")
    assert pipeline.run([f"--input={corpus}", f"--output_dir={existing}"]) == 2


def test_leading_and_trailing_silence_is_trimmed_and_counted_unless_asked(tmp_path):
    from helpers import run_pipeline

    folder = tmp_path / "songs"
    silence = np.zeros((16000, 1), np.float32)
    write_audio(folder / "padded.wav",
                np.concatenate([silence, tone(2.0, 16000), silence, silence]), 16000)
    chunks = {}
    for trim in ("true", "false"):
        out = tmp_path / f"ds-{trim}"
        assert run_pipeline(f"--input={folder}", f"--output_dir={out}", "--split=train:1",
                            "--chunk_seconds=0.25", "--context_samples=1000",
                            f"--trim_silence={trim}") == 0
        summary = json.loads((out / "summary.json").read_text())
        chunks[trim] = summary["splits"]["train"]["chunks"]
        trimmed = summary["silence_trimmed_seconds"]
        assert (abs(trimmed - 3.0) < 0.01) if trim == "true" else trimmed == 0.0
    assert chunks["true"] == num_chunks(32000, 5000, 1000)
    assert chunks["false"] == num_chunks(80000, 5000, 1000)
