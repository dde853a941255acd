"""Beam transforms that wire wavegen's per-song functions into a pipeline.

    songs ──ProcessSongs──► examples ──WriteShards──► shard records
                  └──────► song records (written / failed, with the reason)

No audio logic lives here: decoding, chunking, splits and shard keys are wavegen
functions. DoFns build heavy objects in setup(), count with Beam Metrics, and send every
song that gives no chunks to the `songs` output with its reason (the dead letters).
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback

import apache_beam as beam
from apache_beam.metrics import Metrics

from wavegen import preprocess, tfrecord
from wavegen.dataset import FILENAME_TEMPLATE, DATASET_NAME, DatasetSpec
from wavegen.sources import SongRef

SONGS = "songs"  # tag of the per-song accounting output
log = logging.getLogger("wavegen.pipeline")


def _local_path(uri: str) -> str | None:
    if "://" not in uri:
        return uri
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None


class ProcessSongs(beam.DoFn):
    """SongRef -> (split, key, serialized example) per chunk; one record per song on SONGS.

    Streams each song (memory does not grow with its length). Every input leaves exactly
    one record on the SONGS output: `written` with its chunk count, or `failed` with a
    reason and detail. A failure never stops the pipeline.
    """

    def __init__(self, spec: DatasetSpec, silence_db: float, total_songs: int = 0,
                 log_every_s: float = 15.0):
        self.spec = spec
        self.silence_db = silence_db
        self.total_songs = total_songs
        self.log_every_s = log_every_s
        self.songs_in = Metrics.counter(self.__class__, "songs_in")
        self.songs_written = Metrics.counter(self.__class__, "songs_written")
        self.songs_failed = Metrics.counter(self.__class__, "songs_failed")
        self.songs_truncated = Metrics.counter(self.__class__, "songs_truncated")
        self.chunks = Metrics.counter(self.__class__, "chunks_written")
        self.song_ms = Metrics.distribution(self.__class__, "song_ms")

    def setup(self):
        from wavegen.dataset import features

        self._features = features(self.spec)
        self._done = 0
        self._t0 = self._last_log = time.monotonic()

    def process(self, song: SongRef):
        t0 = time.perf_counter()
        self.songs_in.inc()
        stats = preprocess.SongStats()
        try:
            for index, bins in enumerate(self._chunks(song, stats)):
                ex = {"audio": bins, "song_id": song.song_id, "chunk_index": index,
                      "genre": song.genre}
                yield (song.split, preprocess.example_key(song.song_id, index),
                       self._features.serialize_example(ex))
        except preprocess.SongFailure as e:
            yield self._failed(song, e.reason, e.detail, stats)
        except OSError as e:
            yield self._failed(song, preprocess.UNREADABLE, f"{song.uri}: {e}", stats)
        except Exception as e:  # a bug must not lose the song: dead-letter it, loudly
            log.exception("internal error on %s", song.uri)
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            yield self._failed(song, preprocess.INTERNAL_ERROR, f"{song.uri}: {last}", stats)
        else:
            self.songs_written.inc()
            self.chunks.inc(stats.chunks)
            if stats.truncated:
                self.songs_truncated.inc()
            yield beam.pvalue.TaggedOutput(SONGS, json.dumps(preprocess.song_record(
                song, preprocess.WRITTEN, stats=stats, spec=self.spec)))
        self.song_ms.update(int((time.perf_counter() - t0) * 1000))
        self._progress()

    def _chunks(self, song: SongRef, stats: preprocess.SongStats):
        path = _local_path(song.uri)
        if path is not None:
            yield from preprocess.song_chunks(path, song.uri, self.spec, stats,
                                              self.silence_db)
            return
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(song.uri, compression_type="uncompressed") as f:
            yield from preprocess.song_chunks(f, song.uri, self.spec, stats, self.silence_db)

    def _failed(self, song, reason, detail, stats):
        self.songs_failed.inc()
        Metrics.counter(self.__class__, f"failed_{reason}").inc()
        return beam.pvalue.TaggedOutput(SONGS, json.dumps(preprocess.song_record(
            song, preprocess.FAILED, reason=reason, detail=detail, stats=stats,
            spec=self.spec)))

    def _progress(self):
        self._done += 1
        now = time.monotonic()
        if now - self._last_log < self.log_every_s:
            return
        self._last_log = now
        rate = self._done / max(now - self._t0, 1e-9)
        log.info("worker %d: %d songs done, %.2f songs/s (run has %d songs)",
                 os.getpid(), self._done, rate, self.total_songs)


class _WriteShard(beam.DoFn):
    """((split, shard), [(key, example)]) -> one TFRecord file, ordered by key."""

    def __init__(self, staging_dir: str):
        self.staging_dir = staging_dir
        self.shards = Metrics.counter(self.__class__, "shards_written")
        self.bytes = Metrics.counter(self.__class__, "bytes_written")

    def process(self, element, num_shards):
        (split, shard), examples = element
        ordered = sorted(examples, key=lambda kv: kv[0])
        name = shard_filename(split, shard, num_shards[split])
        n, size = tfrecord.write_records(os.path.join(self.staging_dir, name),
                                         (ex for _, ex in ordered))
        self.shards.inc()
        self.bytes.inc(size)
        yield json.dumps({"split": split, "shard": shard, "num_shards": num_shards[split],
                          "file": name, "examples": n, "bytes": size})


def shard_filename(split: str, shard: int, num_shards: int) -> str:
    return FILENAME_TEMPLATE.format(DATASET=DATASET_NAME, SPLIT=split, FILEFORMAT="tfrecord",
                                    SHARD_X_OF_Y=f"{shard:05d}-of-{num_shards:05d}")


class WriteShards(beam.PTransform):
    """(split, key, example) -> TFRecord shards in `staging_dir`; yields shard records.

    Examples are spread over a split's shards by a hash of their identity and ordered in
    each shard by the same hash: a deterministic global shuffle, so neighbours in a shard
    come from different songs and the same inputs give the same files.
    """

    def __init__(self, staging_dir: str, example_bytes: int, num_shards: int = 0):
        super().__init__()
        self.staging_dir = staging_dir
        self.example_bytes = example_bytes
        self.num_shards = num_shards

    def expand(self, examples):
        counts = (examples
                  | "SplitOf" >> beam.Map(lambda e: e[0])
                  | "CountPerSplit" >> beam.combiners.Count.PerElement())
        shards_per_split = counts | "ShardsPerSplit" >> beam.MapTuple(
            lambda split, n: (split, preprocess.num_shards_for(
                n, self.example_bytes, self.num_shards)))
        side = beam.pvalue.AsDict(shards_per_split)
        return (examples
                | "AssignShard" >> beam.Map(
                    lambda e, shards: ((e[0], e[1] % shards[e[0]]), (e[1], e[2])), side)
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShard(self.staging_dir), side))


class Preprocess(beam.PTransform):
    """SongRefs -> shards in `staging_dir`; returns {'shards': records, 'songs': records}."""

    def __init__(self, spec: DatasetSpec, staging_dir: str, silence_db: float = -60.0,
                 num_shards: int = 0, total_songs: int = 0):
        super().__init__()
        self.spec = spec
        self.staging_dir = staging_dir
        self.silence_db = silence_db
        self.num_shards = num_shards
        self.total_songs = total_songs

    def expand(self, songs):
        out = (songs
               | "Spread" >> beam.Reshuffle()
               | "ProcessSongs" >> beam.ParDo(
                   ProcessSongs(self.spec, self.silence_db, self.total_songs)
               ).with_outputs(SONGS, main="examples"))
        example_bytes = self.spec.chunk_samples * self.spec.dtype.itemsize + 64
        shards = out.examples | "WriteShards" >> WriteShards(
            self.staging_dir, example_bytes, self.num_shards)
        return {"shards": shards, "songs": out[SONGS]}
