"""Beam transforms that wire wavegen's per-song functions into a pipeline.

    songs ──ProcessSongs──► example refs ──WriteShards──► shard records
                  │  (examples spilled to one file per song)
                  └──────► song records (written / failed, with the reason)

No audio logic lives here: decoding, chunking, splits and shard keys are wavegen
functions. DoFns build heavy objects in setup(), count with Beam Metrics, and send every
song that gives no chunks to the `songs` output with its reason (the dead letters).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import sys
import time
import traceback
import zipfile

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines.ingest import fetch, song_chunks, sources
from beam_pipelines.ingest import tfrecord_framing as tfrecord
from beam_pipelines.ingest.song_chunks import ChunkingConfig
from beam_pipelines.ingest.sources import SongRef
from wavegen.data.dataset import DatasetSpec, example, shard_filename

SONGS = "songs"  # tag of the per-song accounting output
log = logging.getLogger("wavegen.pipeline")


class ProcessSongs(beam.DoFn):
    """SongRef -> references to its serialized examples; one record per song on SONGS.

    Streams each song (memory does not grow with its length) and spills its serialized
    examples to one file in `spill_dir`; what travels through the pipeline is only a
    small reference per example, (split, key, (spill file, offset, length)), so the
    shuffle that spreads examples over shards never holds audio in memory (a local
    runner keeps shuffled data in RAM). A song's references are emitted only once all
    of its examples are written: a song is written whole or dead-lettered.

    Every input leaves exactly one record on the SONGS output: `written` with its chunk
    count, or `failed` with a reason and detail. A bad song never stops the pipeline;
    an error writing the spill file (the output's, not the song's) fails the bundle, for
    the runner to retry.
    """

    def __init__(self, spec: DatasetSpec, chunking: ChunkingConfig, spill_dir: str,
                 fetch_cfg: fetch.FetchConfig = fetch.FetchConfig(), total_songs: int = 0,
                 workers: int = 1, log_every_s: float = 15.0):
        self.spec = spec
        self.chunking = chunking
        self.spill_dir = spill_dir
        self.fetch_cfg = fetch_cfg
        self.total_songs = total_songs
        self.workers = max(1, workers)
        self.log_every_s = log_every_s
        self.songs_in = Metrics.counter(self.__class__, "songs_in")
        self.songs_written = Metrics.counter(self.__class__, "songs_written")
        self.songs_failed = Metrics.counter(self.__class__, "songs_failed")
        self.songs_truncated = Metrics.counter(self.__class__, "songs_truncated")
        self.chunks = Metrics.counter(self.__class__, "chunks_written")
        self.song_ms = Metrics.distribution(self.__class__, "song_ms")

    def setup(self):
        from wavegen.data.dataset import features

        self._features = features(self.spec)
        self._archives = sources.ArchiveCache()
        self._done = 0
        self._t0 = self._last_log = time.monotonic()

    def teardown(self):
        self._archives.close()

    def process(self, song: SongRef):
        t0 = time.perf_counter()
        self.songs_in.inc()
        stats = song_chunks.SongStats()
        try:
            if song.reject:
                reason, _, detail = song.reject.partition(": ")
                raise song_chunks.SongFailure(reason, detail)
            refs = self._spill(song, stats)
        except song_chunks.SongFailure as e:
            yield self._failed(song, e.reason, e.detail, stats)
        except sources.SongTooLarge as e:
            yield self._failed(song, song_chunks.TOO_LARGE, str(e), stats)
        except fetch.FetchError as e:
            yield self._failed(song, e.reason, e.detail, stats, extra={
                "url": e.url, "http_status": e.status, "attempts": e.attempts})
        except OSError:  # writing the spill file: the output's trouble, let Beam retry
            raise
        except Exception as e:  # a bug must not lose the song: dead-letter it, loudly
            log.exception("internal error on %s", song.where)
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            yield self._failed(song, song_chunks.INTERNAL_ERROR, f"{song.where}: {last}",
                               stats)
        else:
            yield from refs
            self.songs_written.inc()
            self.chunks.inc(stats.chunks)
            if stats.truncated:
                self.songs_truncated.inc()
            yield beam.pvalue.TaggedOutput(SONGS, json.dumps(song_chunks.song_record(
                song, song_chunks.WRITTEN, stats=stats, spec=self.spec)))
        self.song_ms.update(int((time.perf_counter() - t0) * 1000))
        self._progress()

    def _spill(self, song: SongRef, stats: song_chunks.SongStats) -> list:
        """Writes the song's examples to its spill file; returns their references."""
        from apache_beam.io.filesystems import FileSystems

        chunks = self._chunks(song, stats)
        first = next(chunks)  # no chunk at all: SongFailure before anything is written
        path = os.path.join(self.spill_dir, song_chunks.spill_name(song.song_id))
        refs, offset = [], 0
        try:
            with FileSystems.create(path, compression_type="uncompressed") as f:
                for index, bins in enumerate(itertools.chain([first], chunks)):
                    data = self._features.serialize_example(
                        example(self.spec, bins, song.song_id, index, song.genre))
                    f.write(data)
                    refs.append((song.split, song_chunks.example_key(song.song_id, index),
                                 (path, offset, len(data))))
                    offset += len(data)
        except song_chunks.SongFailure:  # e.g. silent to the end: drop what was spilled
            FileSystems.delete([path])
            raise
        return refs

    def _chunks(self, song: SongRef, stats: song_chunks.SongStats):
        """The song's chunks; trouble reading it becomes SongFailure(UNREADABLE)."""
        try:
            with sources.open_song(song, self._archives, self.fetch_cfg) as source:
                yield from song_chunks.song_chunks(
                    source, song.where, self.spec, stats, self.chunking.silence_db,
                    trim_silence=self.chunking.trim_silence)
        except (OSError, zipfile.BadZipFile) as e:
            raise song_chunks.SongFailure(song_chunks.UNREADABLE, f"{song.where}: {e}") from e

    def _failed(self, song, reason, detail, stats, extra=None):
        self.songs_failed.inc()
        Metrics.counter(self.__class__, f"failed_{reason}").inc()
        return beam.pvalue.TaggedOutput(SONGS, json.dumps(song_chunks.song_record(
            song, song_chunks.FAILED, reason=reason, detail=detail, stats=stats,
            spec=self.spec, extra=extra)))

    def _progress(self):
        self._done += 1
        now = time.monotonic()
        if now - self._last_log < self.log_every_s:
            return
        self._last_log = now
        rate = self._done / max(now - self._t0, 1e-9)
        left = max(self.total_songs - self._done * self.workers, 0)
        eta = left / max(rate * self.workers, 1e-9)
        # stderr, not logging: local runners drop worker INFO logs, clusters keep stderr.
        print(f"[wavegen] worker {os.getpid()}: {self._done} songs, {rate:.2f} songs/s, "
              f"run of {self.total_songs} songs ~{eta:.0f} s left", file=sys.stderr,
              flush=True)


class _SpillReader:
    """Reads examples back from spill files, keeping a few recently used files open."""

    def __init__(self, max_open: int = 16):
        self.max_open = max_open
        self._open: collections.OrderedDict[str, object] = collections.OrderedDict()

    def read(self, ref) -> bytes:
        from apache_beam.io.filesystems import FileSystems

        path, offset, length = ref
        f = self._open.pop(path, None) or FileSystems.open(path,
                                                           compression_type="uncompressed")
        self._open[path] = f
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].close()
        f.seek(offset)
        data = f.read(length)
        if len(data) != length:
            raise IOError(f"{path}: short read at {offset} ({len(data)} of {length} bytes)")
        return data

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


class _WriteShard(beam.DoFn):
    """((split, shard), [(key, (file, offset, length))]) -> one TFRecord file, by key.

    Streams: each example is read from its spill file and written at once, in key order,
    so memory holds one example and the shard's small references, never the shard
    (`--num_shards=1` on a large split stays within the same bound).
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.shards = Metrics.counter(self.__class__, "shards_written")
        self.bytes = Metrics.counter(self.__class__, "bytes_written")

    def process(self, element, num_shards):
        (split, shard), refs = element
        name = shard_filename(split, shard, num_shards[split])
        reader = _SpillReader()
        try:
            n, size = tfrecord.write_records(os.path.join(self.out_dir, name),
                                             (reader.read(ref) for _, ref in sorted(refs)))
        finally:
            reader.close()
        self.shards.inc()
        self.bytes.inc(size)
        yield json.dumps({"split": split, "shard": shard, "num_shards": num_shards[split],
                          "file": name, "examples": n, "bytes": size})


class WriteShards(beam.PTransform):
    """(split, key, (file, offset, length)) -> TFRecord shards in `out_dir`.

    Yields one JSON record per shard written. Examples are spread over a split's shards
    by a hash of their identity and ordered inside each shard by the same hash: a
    deterministic global shuffle, so neighbours in a shard come from different songs and
    the same inputs give the same files. A shard no example hashed to is not written
    (the caller completes the set).
    """

    def __init__(self, out_dir: str, example_bytes: int, num_shards: int = 0):
        super().__init__()
        self.out_dir = out_dir
        self.example_bytes = example_bytes
        self.num_shards = num_shards

    def expand(self, refs):
        counts = (refs
                  | "SplitOf" >> beam.Map(lambda r: r[0])
                  | "CountPerSplit" >> beam.combiners.Count.PerElement())
        shards_per_split = counts | "ShardsPerSplit" >> beam.MapTuple(
            lambda split, n: (split, song_chunks.num_shards_for(
                n, self.example_bytes, self.num_shards)))
        side = beam.pvalue.AsDict(shards_per_split)
        return (refs
                | "AssignShard" >> beam.Map(
                    lambda r, shards: ((r[0], r[1] % shards[r[0]]), (r[1], r[2])), side)
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShard(self.out_dir), side))


class Preprocess(beam.PTransform):
    """SongRefs -> shards in `staging_dir`; returns {'shards': records, 'songs': records}.

    Spilled examples go to `staging_dir/spill/`, which the caller removes at the end.
    """

    def __init__(self, spec: DatasetSpec, staging_dir: str,
                 chunking: ChunkingConfig = ChunkingConfig(), num_shards: int = 0,
                 fetch_cfg: fetch.FetchConfig = fetch.FetchConfig(), total_songs: int = 0,
                 workers: int = 1):
        super().__init__()
        self.spec = spec
        self.fetch_cfg = fetch_cfg
        self.staging_dir = staging_dir
        self.chunking = chunking
        self.num_shards = num_shards
        self.total_songs = total_songs
        self.workers = workers

    def expand(self, songs):
        out = (songs
               | "Spread" >> beam.Reshuffle()
               | "ProcessSongs" >> beam.ParDo(ProcessSongs(
                   self.spec, self.chunking, os.path.join(self.staging_dir, "spill"),
                   self.fetch_cfg, self.total_songs, self.workers)
               ).with_outputs(SONGS, main="examples"))
        example_bytes = self.spec.chunk_samples * self.spec.dtype.itemsize + 64
        shards = out.examples | "WriteShards" >> WriteShards(
            self.staging_dir, example_bytes, self.num_shards)
        return {"shards": shards, "songs": out[SONGS]}
