"""Songs to training shards: the Beam preprocessing pipeline.

    .venv/bin/python -m beam_pipelines.preprocess --input=PATH_OR_GLOB [--input=...] \\
        --output_dir=DIR [--sample_rate=16000] [--quantization=mulaw|linear] [--bits=8] \\
        [--chunk_seconds=1.0] [--context_samples=4096] \\
        [--split=train:0.9,validation:0.05,test:0.05] [--genre_from=folder|none|fma] \\
        [--split_from=hash|fma] [--metadata=tracks.csv|fma_metadata.zip] \\
        [--max_song_bytes=5000000000] [--num_shards=N] \\
        [beam options, e.g. --runner=... --direct_num_workers=2]

Inputs are audio files, folders, globs, zip archives (FMA's fma_*.zip) and URL lists
(*.urls), mixed freely. Our flags are parsed with argparse; everything else is a Beam PipelineOptions flag. With
no --runner, the pipeline runs locally on the FnApiRunner with one worker process per
core (no network needed). DIR ends up a TFDS dataset directory:
`tfds.builder_from_directory(DIR)`, with `metadata.json` holding the audio facts,
`failed.jsonl` the songs that were not written and why, and `summary.json` the counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines.transforms import Preprocess, shard_filename
from wavegen import fetch, fma, preprocess, sources, tfrecord
from wavegen.dataset import (DATASET_NAME, FILENAME_TEMPLATE, INFO_FILE, DatasetSpec, features,
                             genre_names)

log = logging.getLogger("wavegen.pipeline")



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m beam_pipelines.preprocess",
        description="Turn a collection of songs into TFRecord shards of binned chunks "
                    "(a TFDS dataset directory). Unknown flags go to Beam.")
    p.add_argument("--input", action="append", required=True,
                   help="an audio file, a folder (searched recursively for .mp3 .wav .flac "
                        ".ogg), a glob, a .zip archive (e.g. fma_small.zip) or a .urls list; "
                        "repeat for several")
    p.add_argument("--output_dir", required=True, help="the dataset directory to write")
    p.add_argument("--sample_rate", type=int, default=16000)
    p.add_argument("--quantization", choices=("mulaw", "linear"), default="mulaw")
    p.add_argument("--bits", type=int, default=8, help="2**bits classes (1..16)")
    p.add_argument("--chunk_seconds", type=float, default=1.0,
                   help="new audio (training targets) per chunk, context excluded")
    p.add_argument("--context_samples", type=int, default=4096,
                   help="samples of preceding audio each chunk carries; at least the "
                        "receptive field of the models you will train")
    p.add_argument("--split", default="train:0.9,validation:0.05,test:0.05",
                   help="NAME:FRACTION,...; songs are assigned by a stable hash of their id")
    p.add_argument("--genre_from", choices=sources.GENRE_FROM, default="none",
                   help="folder: a song's genre is its parent folder's name; fma: the "
                        "track's top genre in --metadata")
    p.add_argument("--split_from", choices=sources.SPLIT_FROM, default="hash",
                   help="hash: by a stable hash of the song id and --split; fma: FMA's own "
                        "training/validation/test split from --metadata")
    p.add_argument("--metadata", help="FMA tracks.csv, or fma_metadata.zip holding it")
    p.add_argument("--max_song_bytes", type=int, default=5 * 10**9,
                   help="songs (files, archive members, downloads) above this are rejected")
    p.add_argument("--fetch_timeout", type=float, default=30.0,
                   help="seconds to wait for a URL's connection and each read")
    p.add_argument("--fetch_attempts", type=int, default=4,
                   help="attempts per URL (timeouts, resets and 5xx are retried)")
    p.add_argument("--fetch_backoff", type=float, default=1.0,
                   help="seconds before the first retry; doubles with each retry")
    p.add_argument("--num_shards", type=int, default=0,
                   help="shards per split (default: about 128 MiB per shard)")
    p.add_argument("--silence_db", type=float, default=-60.0,
                   help="a song whose peak stays below this level (dBFS) is rejected")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset already in --output_dir")
    return p


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options; without --runner, local multi-process execution that stays offline.

    (Beam's DirectRunner first tries to download the Prism runner binary.)
    """
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=FnApiRunner")
        if not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=multi_processing")
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")  # worker start/stop chatter
    return PipelineOptions(args)


def make_spec(args, genres) -> DatasetSpec:
    target = int(round(args.chunk_seconds * args.sample_rate))
    if target <= 0:
        raise ValueError(f"--chunk_seconds={args.chunk_seconds} gives no samples")
    if args.context_samples < 0:
        raise ValueError(f"--context_samples must be >= 0, got {args.context_samples}")
    return DatasetSpec(sample_rate=args.sample_rate, quantization=args.quantization,
                       bits=args.bits, chunk_samples=target + args.context_samples,
                       context_samples=args.context_samples, genres=genre_names(genres))


def run(argv: list[str] | None = None) -> int:
    """Runs the pipeline; returns the process exit code."""
    args, beam_args = build_parser().parse_known_args(argv)
    try:
        splits = preprocess.parse_splits(args.split)
        songs = sources.discover(args.input, args.genre_from)
        songs = [s.with_(split=preprocess.assign_split(s.song_id, splits)) for s in songs]
        report = None
        if args.metadata:
            meta = fma.load_metadata(args.metadata)
            songs, report = sources.apply_metadata(songs, meta, args.genre_from,
                                                   args.split_from)
        elif "fma" in (args.genre_from, args.split_from):
            raise ValueError("--genre_from=fma and --split_from=fma need --metadata "
                             "(FMA's tracks.csv or fma_metadata.zip)")
        spec = make_spec(args, [s.genre for s in songs])
        fetch_cfg = fetch.FetchConfig(timeout_s=args.fetch_timeout,
                                      max_attempts=args.fetch_attempts,
                                      backoff_s=args.fetch_backoff,
                                      max_bytes=args.max_song_bytes)
    except (ValueError, OSError) as e:  # bad inputs, flags, metadata or audio settings
        log.error("%s", e)
        return 2
    out = args.output_dir.rstrip("/")
    if FileSystems.exists(os.path.join(out, INFO_FILE)) and not args.overwrite:
        log.error("%s already holds a dataset; pass --overwrite to replace it", out)
        return 2
    options = pipeline_options(beam_args)
    # Left by a run that was killed (one run per output folder at a time).
    for stale in _stale_staging(out):
        log.warning("removing %s, left by an interrupted run", stale)
        _remove(stale)
    staging = os.path.join(out, f".staging-{uuid.uuid4().hex[:12]}")
    FileSystems.mkdirs(staging)
    log.info("%d songs from %d input(s) -> %s (%d Hz, %s %d bits, chunks of %d samples "
             "with %d of context; genres: %s)", len(songs), len(args.input), out,
             spec.sample_rate, spec.quantization, spec.bits, spec.chunk_samples,
             spec.context_samples, ", ".join(spec.genres))
    t0 = time.time()
    try:
        pipeline = beam.Pipeline(options=options)
        build(pipeline, songs, spec, staging, args, fetch_cfg)
        try:
            state = pipeline.run()
            state.wait_until_finish()
        except Exception as e:  # the runner or cluster failed: nothing is put in place
            log.error("the pipeline failed on %s: %s", _runner_name(options), _one_line(e))
            return 1
        _log_metrics(state)
        summary = finalize(out, staging, spec, songs, args, time.time() - t0, report)
    finally:
        _remove(staging)
    print(format_summary(summary, out))
    if summary["songs_written"] == 0:
        log.error("no song was written: every input failed (see %s)",
                  os.path.join(out, summary["report_files"][0]))
        return 1
    empty = [name for name, frac in splits if frac > 0 and name not in summary["splits"]]
    if empty and args.split_from == "hash":
        log.warning("split(s) %s got no songs (too few inputs for --split=%s); training "
                    "needs a validation split", ", ".join(empty), args.split)
    return 0


def build(pipeline, songs, spec, staging, args, fetch_cfg):
    outputs = (pipeline
               | "Songs" >> beam.Create(songs)
               | "Preprocess" >> Preprocess(spec, staging, args.silence_db, args.num_shards,
                                            fetch_cfg, total_songs=len(songs),
                                            workers=_num_workers(pipeline.options)))
    outputs["shards"] | "WriteShardIndex" >> beam.io.WriteToText(
        os.path.join(staging, "shards"), file_name_suffix=".jsonl", shard_name_template="")
    outputs["songs"] | "WriteSongRecords" >> beam.io.WriteToText(
        os.path.join(staging, "songs"), file_name_suffix=".jsonl", shard_name_template="")
    return outputs


def _num_workers(options) -> int:
    from apache_beam.options.pipeline_options import DirectOptions

    n = options.view_as(DirectOptions).direct_num_workers
    return n if n and n > 0 else (os.cpu_count() or 1)


def finalize(out, staging, spec, songs, args, seconds, report=None) -> dict:
    """Moves shards into place and writes the metadata, dataset_info.json last.

    Checks first that every input song has its record: nothing is lost silently.
    """
    records = _read_jsonl(os.path.join(staging, "songs.jsonl"))
    shards = _read_jsonl(os.path.join(staging, "shards.jsonl"))
    got = {r["song_id"] for r in records}
    lost = [s.song_id for s in songs if s.song_id not in got]
    if lost or len(records) != len(songs):
        raise RuntimeError(f"pipeline lost track of {len(lost)} song(s), e.g. {lost[:3]}; "
                           f"{len(records)} records for {len(songs)} inputs")
    summary = preprocess.summarize(records)
    summary["seconds_elapsed"] = round(seconds, 1)
    summary["songs_per_s"] = round(len(songs) / max(seconds, 1e-9), 2)
    if report is not None:
        summary["metadata"] = report.to_summary()
    failed = [r for r in records if r["status"] == preprocess.FAILED]
    report_files = ("failed.jsonl", "summary.json")
    if not shards and FileSystems.exists(os.path.join(out, INFO_FILE)):
        # Nothing new to put in place: the dataset already there stays as it is, and
        # this run's report goes beside it.
        report_files = ("failed.latest.jsonl", "summary.latest.json")
    _write_text(os.path.join(out, report_files[0]),
                "".join(json.dumps(r) + "\n" for r in sorted(failed, key=_by_id)))
    _write_text(os.path.join(out, report_files[1]), json.dumps(summary, indent=2) + "\n")
    summary["report_files"] = list(report_files)
    if not shards:
        return summary
    # Replace an old dataset: its dataset_info.json goes first, so a crash in between
    # leaves a directory that does not look complete.
    _remove(os.path.join(out, INFO_FILE))
    for old in FileSystems.match([os.path.join(out, f"{DATASET_NAME}-*")])[0].metadata_list:
        _remove(old.path)
    # A shard that no example hashed to still gets its (empty) file: TFDS expects them all.
    for split, shard, num_shards in _missing_shards(shards):
        name = shard_filename(split, shard, num_shards)
        tfrecord.write_records(os.path.join(staging, name), [])
        shards.append({"split": split, "shard": shard, "num_shards": num_shards,
                       "file": name, "examples": 0, "bytes": 0})
    FileSystems.rename([os.path.join(staging, s["file"]) for s in shards],
                       [os.path.join(out, s["file"]) for s in shards])
    _write_metadata(out, spec, shards, args)
    return summary


def _stale_staging(out: str) -> list[str]:
    """Staging folders in `out` (their files, for filesystems without folders)."""
    files = FileSystems.match([os.path.join(out, ".staging-*", "**")])[0].metadata_list
    prefix = out.rstrip("/") + "/"
    dirs = {prefix + f.path[len(prefix):].split("/", 1)[0] for f in files
            if f.path.startswith(prefix)}
    return sorted(d if "://" not in d else d + "/" for d in dirs)


def _missing_shards(shards):
    have = {(s["split"], s["shard"]) for s in shards}
    totals = {s["split"]: s["num_shards"] for s in shards}
    return [(split, i, n) for split, n in sorted(totals.items()) for i in range(n)
            if (split, i) not in have]


def _write_metadata(out, spec, shards, args):
    import tensorflow_datasets as tfds

    split_infos = []
    for split in sorted({s["split"] for s in shards}):
        mine = sorted((s for s in shards if s["split"] == split), key=lambda s: s["shard"])
        split_infos.append(tfds.core.SplitInfo(
            name=split, shard_lengths=[s["examples"] for s in mine],
            num_bytes=sum(s["bytes"] for s in mine)))
    # tfds writes features.json, metadata.json and the labels first, dataset_info.json
    # last, once the shards are in place.
    tfds.folder_dataset.write_metadata(
        data_dir=out, features=features(spec), split_infos=split_infos,
        filename_template=FILENAME_TEMPLATE, check_data=False,
        description=("Binned audio chunks written by wavegen's Beam pipeline "
                     f"(python -m beam_pipelines.preprocess), inputs: {', '.join(args.input)}"),
        metadata=tfds.core.MetadataDict(spec.to_metadata()))


def format_summary(summary: dict, out: str) -> str:
    lines = [
        "",
        f"wavegen preprocess: {out}",
        f"  songs in {summary['songs_in']}, written {summary['songs_written']}, "
        f"failed {summary['songs_failed']}"
        + (f" (truncated but kept: {summary['songs_truncated']})"
           if summary["songs_truncated"] else ""),
        f"  {summary['seconds_elapsed']} s, {summary['songs_per_s']} songs/s",
    ]
    for split, s in summary["splits"].items():
        lines.append(f"  {split:>12}: {s['songs']} songs, {s['chunks']} chunks, "
                     f"{s['seconds']:.1f} s of targets")
    for reason, n in summary["failures"].items():
        lines.append(f"  failed ({reason}): {n}")
    if "metadata" in summary:
        m = summary["metadata"]
        lines.append(f"  metadata: {m['tracks_in_metadata']} tracks; "
                     f"{m['songs_with_metadata']} songs found in it")
        for key, label in (("songs_without_metadata", "songs absent from the metadata"),
                           ("tracks_missing_from_inputs", "tracks of the subset absent "
                                                          "from the inputs")):
            if m[key]["count"]:
                lines.append(f"  {label}: {m[key]['count']}, e.g. "
                             f"{', '.join(map(str, m[key]['examples']))}")
    if summary["songs_failed"]:
        lines.append(f"  details: {os.path.join(out, summary['report_files'][0])}")
    return "\n".join(lines)


def _log_metrics(result):
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # not every runner reports metrics
        return
    totals: dict[str, int] = {}
    for c in counters:
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + c.committed
    log.info("metrics: %s", ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))


def _runner_name(options) -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    return (runner if isinstance(runner, str) else type(runner).__name__).rsplit(".", 1)[-1]


def _one_line(e: BaseException) -> str:
    """An exception as one readable line: its type and message, and those of its root
    cause (a cluster wraps the real error in its own)."""
    def line(x):
        text = " ".join(l.strip() for l in str(x).splitlines() if l.strip())
        if len(text) > 300:
            text = text[:297] + "..."
        return f"{type(x).__name__}: {text or '(no message)'}"

    root, seen = e, {id(e)}
    while (root.__cause__ or root.__context__) is not None and \
            id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__
        seen.add(id(root))
    if root is e or not str(root).strip():  # a bare cause (e.g. a cancellation) says nothing
        return line(e)
    return f"{line(e)} (caused by {line(root)})"


def _by_id(r):
    return r["song_id"]


def _read_jsonl(path):
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return [json.loads(line) for line in f.read().decode("utf-8").splitlines() if line]


def _write_text(path, text):
    with FileSystems.create(path, compression_type="uncompressed") as f:
        f.write(text.encode("utf-8"))


def _remove(path):
    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception as e:  # best effort: cleanup must not hide the real error
        log.warning("could not remove %s: %s", path, e)


class _QuietBeam(logging.Filter):
    """Keeps Beam's own chatter (worker start-up, optional-dependency notes) off screen."""

    NOISE = ("apitools not found", "semi_persistent_directory", "Discarding unparseable args")

    def filter(self, record):
        if record.name.startswith("apache_beam") and record.levelno < logging.ERROR:
            return False
        return not any(n in record.getMessage() for n in self.NOISE)


def setup_logging():
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%H:%M:%S"))
    handler.addFilter(_QuietBeam())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def main():
    setup_logging()
    sys.exit(run())


if __name__ == "__main__":
    main()
