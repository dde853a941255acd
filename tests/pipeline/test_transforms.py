"""The pipeline's composite transforms under TestPipeline + assert_that."""

import glob
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.ingest import song_chunks as sc
from beam_pipelines.ingest.song_chunks import ChunkingConfig
from beam_pipelines.ingest.sources import SongRef
from beam_pipelines.transforms import SONGS, Preprocess, ProcessSongs, WriteShards
from wavegen.data.dataset import DatasetSpec, features

from helpers import read_records, tone, write_audio

SPEC = DatasetSpec(sample_rate=8000, quantization="mulaw", bits=8, chunk_samples=2000,
                   context_samples=500, genres=("a", "unknown"))


def offline_pipeline():
    # FnApiRunner: Beam 2.77's default DirectRunner first tries to download Prism.
    return BeamTestPipeline(options=PipelineOptions(["--runner=FnApiRunner"]))


@pytest.fixture
def songs(tmp_path):
    good = write_audio(tmp_path / "good.mp3", tone(2.0, 44100, channels=2), 44100)
    other = write_audio(tmp_path / "other.wav", tone(1.0, 8000, freq=300), 8000)
    silent = write_audio(tmp_path / "silent.flac", np.zeros((16000, 1), np.float32), 8000)
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS but not really")

    def ref(path, split="train"):
        return SongRef(song_id=os.path.basename(str(path)), uri=str(path), input=str(tmp_path),
                       genre="a", split=split)
    return [ref(good), ref(other, "test"), ref(silent), ref(bad)]


def read_ref(ref):
    path, offset, length = ref
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_process_songs_accounts_for_every_song(songs, tmp_path):
    expected_chunks = {"good.mp3": 1 + (16000 - 2000) // 1500,
                       "other.wav": 1 + (8000 - 2000) // 1500}
    spill = str(tmp_path / "spill")
    with offline_pipeline() as p:
        out = (p | beam.Create(songs)
               | beam.ParDo(ProcessSongs(SPEC, ChunkingConfig(), spill)).with_outputs(SONGS, main="ex"))
        records = out[SONGS] | "Parse" >> beam.Map(json.loads)
        assert_that(records | "Status" >> beam.Map(
            lambda r: (r["song_id"], r["status"], r.get("reason", ""), r["chunks"])),
            equal_to([("good.mp3", "written", "", expected_chunks["good.mp3"]),
                      ("other.wav", "written", "", expected_chunks["other.wav"]),
                      ("silent.flac", "failed", "silent", 0),
                      ("bad.ogg", "failed", "undecodable", 0)]), label="songs")
        feats = features(SPEC)
        # Each reference points at one serialized example in the song's spill file.
        decoded = out.ex | "Decode" >> beam.Map(
            lambda e: (e[0], e[1], feats.deserialize_example_np(read_ref(e[2]))))
        assert_that(decoded | "Shape" >> beam.Map(
            lambda e: (e[0], e[2]["song_id"].decode(), int(e[2]["chunk_index"]),
                       e[2]["audio"].shape,
                       e[1] == sc.example_key(e[2]["song_id"].decode(),
                                                      int(e[2]["chunk_index"])))),
            equal_to([("train", "good.mp3", i, (2000,), True)
                      for i in range(expected_chunks["good.mp3"])]
                     + [("test", "other.wav", i, (2000,), True)
                        for i in range(expected_chunks["other.wav"])]), label="examples")
    # Failed songs leave nothing behind; written ones one file each.
    assert len(os.listdir(spill)) == 2


def test_write_shards_spreads_and_orders_examples(tmp_path):
    spill = tmp_path / "spill.bin"
    refs, blob = [], b""
    for split, n in (("train", 300), ("test", 2)):
        for i in range(n):
            data = f"{split}-{i}".encode()
            refs.append((split, sc.example_key(f"s{i % 7}", i),
                         (str(spill), len(blob), len(data))))
            blob += data
    spill.write_bytes(blob)
    out = tmp_path / "out"
    with offline_pipeline() as p:
        shards = (p | beam.Create(refs)
                  | WriteShards(str(out), example_bytes=10, num_shards=4)
                  | beam.Map(json.loads))
        # 300 examples fill 4 shards; 2 examples get at most 2 (never more than examples).
        assert_that(shards | beam.Map(lambda s: (s["split"], s["num_shards"])),
                    equal_to([("train", 4)] * 4 + [("test", 2)] * 2))
    for split, n, shards in (("train", 300, 4), ("test", 2, 2)):
        files = sorted(glob.glob(str(out / f"wavegen-{split}.tfrecord-*")))
        assert all(f.endswith(f"-of-{shards:05d}") for f in files)
        got = []
        for f in files:
            with open(f, "rb") as fh:
                recs = list(read_records(fh))
            keys = [sc.example_key(f"s{int(r.split(b'-')[1]) % 7}",
                                           int(r.split(b"-")[1])) for r in recs]
            assert keys == sorted(keys)  # ordered by the hash inside a shard
            got.extend(recs)
        assert sorted(got) == sorted(f"{split}-{i}".encode() for i in range(n))


def test_preprocess_composite_writes_shards_and_records(songs, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    with offline_pipeline() as p:
        out = p | beam.Create(songs) | Preprocess(SPEC, str(staging), num_shards=2)
        assert_that(out["songs"] | beam.Map(lambda r: json.loads(r)["status"]),
                    equal_to(["written", "written", "failed", "failed"]), label="songs")
        assert_that(out["shards"] | beam.Map(lambda r: json.loads(r)["examples"]) |
                    beam.CombineGlobally(sum), equal_to([10 + 5]), label="shards")


def test_a_shard_is_written_without_holding_it_in_memory(tmp_path):
    """One shard of 24 MiB from many songs' spill files: the writer's memory stays at a few
    examples, so --num_shards=1 on a large split needs no more memory than the default."""
    import tracemalloc

    from beam_pipelines.transforms import _WriteShard

    example, per_song, songs = 256 << 10, 8, 12  # 96 examples of 256 KiB
    rng = np.random.default_rng(0)
    refs, want = [], {}
    for s in range(songs):
        path = tmp_path / f"song{s}.examples"
        with open(path, "wb") as f:
            for i in range(per_song):
                data = rng.bytes(example)
                key = sc.example_key(f"song{s}", i)
                refs.append((key, (str(path), i * example, example)))
                want[key] = data
                f.write(data)
    rng.shuffle(refs)
    out = tmp_path / "out"
    out.mkdir()
    writer = _WriteShard(str(out))
    tracemalloc.start()
    try:
        record = json.loads(next(writer.process((("train", 0), refs), {"train": 1})))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record["examples"] == songs * per_song
    assert peak < 8 * example, f"peak {peak / 2**20:.1f} MiB for a 24 MiB shard"
    with open(out / record["file"], "rb") as f:
        got = list(read_records(f))
    assert got == [want[k] for k in sorted(want)]  # every example once, in key order
