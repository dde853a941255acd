"""Songs to training shards: the Beam preprocessing pipeline.

    .venv/bin/python -m beam_pipelines.preprocess --input=PATH_OR_GLOB [--input=...] \\
        --output_dir=DIR [flags] [beam options, e.g. --runner=... --direct_num_workers=2]

`--help` lists every flag with its default (the library's: ChunkingConfig, FetchConfig,
song_chunks.DEFAULT_SPLIT, ...).

Inputs are audio files, folders, globs, zip archives (FMA's fma_*.zip) and URL lists
(*.urls), mixed freely. Our flags are parsed with argparse; everything else is a Beam PipelineOptions flag. With
no --runner, the pipeline runs locally on the FnApiRunner with one worker process per
core (no network needed); the workers end with the pipeline process, and SIGTERM or Ctrl-C
stops the run in one line, the output folder as it was (see `lifecycle`). DIR ends up a TFDS dataset directory:
`tfds.builder_from_directory(DIR)`, with `metadata.json` holding the audio facts,
`failed.jsonl` the songs that were not written and why, and `summary.json` the counts.
"""

from __future__ import annotations

if __name__ == "__main__":
    # The command's signal handling and logging must be in place before Beam is imported:
    # Beam logs while it is imported, and a Ctrl-C then would end in a traceback.
    from beam_pipelines import lifecycle

    lifecycle.start_command()

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms.environments import SubprocessSDKEnvironment

from beam_pipelines import lifecycle, output_folder
from beam_pipelines.ingest import fetch, song_chunks, sources
from beam_pipelines.ingest import fma_metadata as fma
from beam_pipelines.ingest import tfrecord_framing as tfrecord
from beam_pipelines.ingest.song_chunks import ChunkingConfig
from beam_pipelines.transforms import Preprocess
from wavegen.data import audio
from wavegen.data.dataset import (
    FILENAME_TEMPLATE,
    INFO_FILE,
    MAX_SHARDS,
    DatasetSpec,
    features,
    shard_filename,
)
from wavegen.data.paths import is_local, local_path
from wavegen.errors import UserError, one_line

log = logging.getLogger("wavegen.pipeline")


# Beam's SDK harness log level, spelled as Java's SdkHarnessOptions.LogLevel and Python's
# logging module both spell it.
SDK_HARNESS_LOG_LEVEL = "WARN"


class PipelineFailed(RuntimeError):
    """The runner or the cluster failed the job; the output folder is left as it was."""



# Flags that set a library config field: flag -> field. Their defaults are read from the
# dataclasses, their values checked there (once), and a bad value is reported by its flag.
CHUNKING_FLAGS = {f: f for f in ("sample_rate", "quantization", "bits", "chunk_seconds",
                                 "context_samples", "silence_db", "trim_silence")}
FETCH_FLAGS = {"max_song_bytes": "max_bytes", "fetch_timeout": "timeout_s",
               "fetch_deadline": "deadline_s", "fetch_attempts": "max_attempts",
               "fetch_backoff": "backoff_s"}


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except where there is none."""

    def _get_help_string(self, action):
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    C, F = ChunkingConfig, fetch.FetchConfig
    p = argparse.ArgumentParser(
        prog="python -m beam_pipelines.preprocess",
        description="Turn a collection of songs into TFRecord shards of binned chunks "
                    "(a TFDS dataset directory). Unknown flags go to Beam.",
        formatter_class=_DefaultsHelp)
    p.add_argument("--input", action="append", required=True,
                   help="an audio file, a folder (searched recursively for .mp3 .wav .flac "
                        ".ogg), a glob, a .zip archive (e.g. fma_small.zip) or a .urls list; "
                        "repeat for several")
    p.add_argument("--output_dir", required=True, help="the dataset directory to write")
    p.add_argument("--sample_rate", type=int, default=C.sample_rate,
                   help="samples per second the songs are resampled to")
    p.add_argument("--quantization", choices=audio.QUANTIZATIONS, default=C.quantization,
                   help="how samples are binned")
    p.add_argument("--bits", type=int, default=C.bits, help="2**bits classes (1..16)")
    p.add_argument("--chunk_seconds", type=float, default=C.chunk_seconds,
                   help="new audio (training targets) per chunk, context excluded")
    p.add_argument("--context_samples", type=int, default=C.context_samples,
                   help="samples of preceding audio each chunk carries; at least the "
                        "receptive field of the models you will train")
    p.add_argument("--split", default=song_chunks.DEFAULT_SPLIT,
                   help="NAME:FRACTION,...; songs are assigned by a stable hash of their id")
    p.add_argument("--genre_from", choices=sources.GENRE_FROM,
                   default=sources.DEFAULT_GENRE_FROM,
                   help="folder: a song's genre is its parent folder's name; fma: the "
                        "track's top genre in --metadata")
    p.add_argument("--split_from", choices=sources.SPLIT_FROM,
                   default=sources.DEFAULT_SPLIT_FROM,
                   help="hash: by a stable hash of the song id and --split; fma: FMA's own "
                        "training/validation/test split from --metadata")
    p.add_argument("--metadata", help="FMA tracks.csv, or fma_metadata.zip holding it")
    p.add_argument("--max_song_bytes", type=int, default=F.max_bytes,
                   help="songs (files, archive members, downloads) above this are rejected")
    p.add_argument("--fetch_timeout", type=float, default=F.timeout_s,
                   help="seconds to wait for a URL's connection and each read")
    p.add_argument("--fetch_deadline", type=float, default=F.deadline_s,
                   help="seconds one URL may take in all, retries included; a URL past it "
                        "is dead-lettered (timeout), not retried")
    p.add_argument("--fetch_attempts", type=int, default=F.max_attempts,
                   help="attempts per URL (timeouts, resets and 5xx are retried)")
    p.add_argument("--fetch_backoff", type=float, default=F.backoff_s,
                   help="seconds before the first retry; doubles with each retry")
    p.add_argument("--num_shards", type=int, default=song_chunks.AUTO_NUM_SHARDS,
                   help=f"shards per split, 1..{MAX_SHARDS}, or {song_chunks.AUTO_NUM_SHARDS}: "
                        "about 128 MiB per shard")
    p.add_argument("--silence_db", type=float, default=C.silence_db,
                   help="a song whose peak stays below this level (dBFS) is rejected")
    p.add_argument("--trim_silence", type=_flag_bool, default=C.trim_silence,
                   metavar="true|false",
                   help="drop each song's leading and trailing samples below --silence_db "
                        "before chunking (counted in summary.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset already in --output_dir")
    p.add_argument("--verbose", action="store_true",
                   help="also show Beam's own logs (the runner's and the workers' start-up "
                        "and INFO lines), which a run hides by default")
    return p


# The flags that name a path; `~` in them is the home folder even where no shell expanded
# it (--output_dir=~/x: a shell expands `~` only at the start of a word).
PATH_FLAGS = ("input", "output_dir", "metadata")


def parse_args(argv: list[str] | None = None):
    """(our flags, Beam's flags); `~` expanded in every path flag."""
    args, beam_args = build_parser().parse_known_args(argv)
    for flag in PATH_FLAGS:
        value = getattr(args, flag)
        if isinstance(value, list):
            setattr(args, flag, [os.path.expanduser(v) for v in value])
        elif value is not None:
            setattr(args, flag, os.path.expanduser(value))
    return args, beam_args


def _flag_bool(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False,
             "no": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _config(cls, flags: dict[str, str], args):
    """`cls` built from the flags that set its fields; a bad value names its flag."""
    try:
        return cls(**{field: getattr(args, flag) for flag, field in flags.items()})
    except ValueError as e:
        message = str(e)
        for flag, field in flags.items():
            message = re.sub(rf"^({cls.__name__}\.)?{field}\b", f"--{flag}", message)
        raise UserError(message) from None


def make_configs(args) -> tuple[ChunkingConfig, fetch.FetchConfig]:
    """The flags as the library's configs, every value checked (finite, in range)."""
    if not 0 <= args.num_shards <= MAX_SHARDS:
        raise UserError(f"--num_shards must be 0 (automatic) or 1..{MAX_SHARDS}, "
                        f"got {args.num_shards}")
    return _config(ChunkingConfig, CHUNKING_FLAGS, args), _config(fetch.FetchConfig,
                                                                  FETCH_FLAGS, args)


def pipeline_options(beam_args: list[str], verbose: bool = False) -> PipelineOptions:
    """Beam options; without --runner, local multi-process execution that stays offline.

    (Beam's DirectRunner first tries to download the Prism runner binary.) `verbose`
    leaves a cluster's SDK harnesses at Beam's own log level.
    """
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=FnApiRunner")
        if not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=multi_processing")
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    if not verbose and not any(a.startswith("--default_sdk_harness_log_level")
                               for a in args):
        # Worker start/stop chatter off. The level's name must be one that both SDK
        # harnesses know: Java's enum has WARN (not WARNING), and Python reads
        # logging.WARN; a Java runner fails the job on a name it does not know.
        args.append(f"--default_sdk_harness_log_level={SDK_HARNESS_LOG_LEVEL}")
    return PipelineOptions(args)


@dataclasses.dataclass
class Plan:
    """What a run will do, every flag checked: the songs, labelled and split, and the
    settings the workers get."""

    songs: list
    splits: tuple
    chunking: ChunkingConfig
    fetch_cfg: fetch.FetchConfig
    spec: DatasetSpec
    report: sources.MetadataReport | None = None


def make_plan(args) -> Plan:
    """Checks the flags, lists the inputs and labels them; raises UserError (or OSError
    about an input path) with one line naming the flag or input at fault."""
    chunking, fetch_cfg = make_configs(args)
    try:
        splits = song_chunks.parse_splits(args.split)
    except ValueError as e:  # it checks --split's text and nothing else
        raise UserError(str(e)) from None
    if "fma" in (args.genre_from, args.split_from) and not args.metadata:
        raise UserError("--genre_from=fma and --split_from=fma need --metadata "
                        "(FMA's tracks.csv or fma_metadata.zip)")
    songs = sources.discover(args.input, args.genre_from)
    songs = [s.with_(split=song_chunks.assign_split(s.song_id, splits)) for s in songs]
    report = None
    if args.metadata:
        meta = fma.load_metadata(args.metadata)
        songs, report = sources.apply_metadata(songs, meta, args.genre_from, args.split_from)
    return Plan(songs, splits, chunking, fetch_cfg,
                chunking.spec([s.genre for s in songs if not s.reject]), report)


def run(argv: list[str] | None = None) -> int:
    """Runs the pipeline; returns the process exit code."""
    args, beam_args = parse_args(argv)
    try:
        out = output_folder.check_output_dir(args.output_dir, args.overwrite)
        plan = make_plan(args)
    except UserError as e:  # bad inputs, flags, metadata or audio settings
        log.error("%s", e)
        return 2
    except OSError as e:
        line = _path_error(e)
        if line is None:  # not about a path we were given: a bug keeps its traceback
            raise
        log.error("%s", line)
        return 2
    options = pipeline_options(beam_args, args.verbose)
    try:
        # Stopped from here on, the folder keeps what it had (a replacement that a crash
        # left half-done, and that this run was finishing, is finished by the next run).
        with output_folder.locked(out), lifecycle.on_interrupt(lambda: None,
                                                              f"{out} is left as it was"):
            return _run_locked(plan, args, options, out)
    except UserError as e:
        log.error("%s", e)
        return 2


def _path_error(e: OSError) -> str | None:
    """One line for an OSError about a path (an input, the metadata or the output folder
    that could not be read or listed); None for one that names no path."""
    if isinstance(e, BeamIOError):  # Beam's filesystems name the paths in the message
        return one_line(e)
    if e.filename is None:
        return None
    return f"{e.filename}: {one_line(e.strerror or e)}"


def _run_locked(plan: Plan, args, options, out: str) -> int:
    """The run, holding the output folder's lock."""
    recovered = output_folder.recover(out)
    if recovered:
        log.warning("%s", recovered)
    # Again, now that no other run can write here: one may have written a dataset (or a
    # recovery put one in place) since the early check.
    output_folder.check_output_dir(out, args.overwrite)
    for stale in output_folder.stale_scratch(out):
        log.warning("removing %s, left by an interrupted run", stale)
        output_folder.remove_scratch(stale)
    staging = output_folder.make_scratch(out)
    try:
        with lifecycle.on_interrupt(lambda: output_folder.remove_scratch(staging),
                                    f"{out} is left as it was"):
            summary = _run_pipeline(plan, args, options, out, staging)
    except PipelineFailed as e:
        log.error("%s", e)
        return 1
    except (RuntimeError, OSError) as e:  # finalisation: lost songs, disk full, permissions
        log.error("%s", _finalize_error(out, e))
        return 1
    finally:
        output_folder.remove_scratch(staging)  # kept while a journal needs it
    return _report(summary, plan, args, out)


def _finalize_error(out: str, e: BaseException) -> str:
    """One line for an error while the new dataset was put in place."""
    line = (no_space_error(e, out)
            or f"could not put the new dataset in place in {out}: {one_line(e)}")
    if output_folder.replacement_pending(out):
        line += ("; the old and new files are both kept, and the next run into this folder "
                 "finishes the replacement")
    return line


def _run_pipeline(plan: Plan, args, options, out: str, staging: str) -> dict:
    """Runs the Beam pipeline into `staging` and puts its output in place."""
    spec = plan.spec
    log.info("%d songs from %d input(s) -> %s (%d Hz, %s %d bits, chunks of %d samples "
             "with %d of context; genres: %s)", len(plan.songs), len(args.input), out,
             spec.sample_rate, spec.quantization, spec.bits, spec.chunk_samples,
             spec.context_samples, ", ".join(spec.genres))
    t0 = time.time()
    pipeline = beam.Pipeline(runner=_local_runner(options, args.verbose), options=options)
    build(pipeline, plan, staging, args)
    try:
        state = pipeline.run()
        state.wait_until_finish()
    except Exception as e:  # the runner or the cluster failed: nothing is put in place
        raise PipelineFailed(
            no_space_error(e, out)
            or f"the pipeline failed on {_runner_name(options)}: "
               f"{_unreachable(e, options) or _error_with_cause(e)}") from e
    _log_metrics(state)
    # Putting the output in place is short, and stopping inside it would leave the
    # replacement half-done for the next run: a stop signal waits for the run to end.
    lifecycle.defer_interruption()
    return finalize(out, staging, spec, plan.songs, args, time.time() - t0, plan.report)


def _report(summary: dict, plan: Plan, args, out: str) -> int:
    """Prints the summary; the exit code (1 when no song was written)."""
    print(format_summary(summary, out))
    if summary["songs_written"] == 0:
        log.error("no song was written: every input failed (see %s)",
                  os.path.join(out, summary["report_files"][0]))
        return 1
    empty = [name for name, frac in plan.splits if frac > 0 and name not in summary["splits"]]
    if empty and args.split_from == "hash":
        log.warning("split(s) %s got no songs (too few inputs for --split=%s); training "
                    "needs a validation split", ", ".join(empty), args.split)
    return 0


def build(pipeline, plan: Plan, staging: str, args):
    outputs = (pipeline
               | "Songs" >> beam.Create(plan.songs)
               | "Preprocess" >> Preprocess(plan.spec, staging, plan.chunking,
                                            args.num_shards, plan.fetch_cfg,
                                            total_songs=len(plan.songs),
                                            workers=_num_workers(pipeline.options)))
    outputs["shards"] | "WriteShardIndex" >> beam.io.WriteToText(
        os.path.join(staging, "shards"), file_name_suffix=".jsonl", shard_name_template="")
    outputs["songs"] | "WriteSongRecords" >> beam.io.WriteToText(
        os.path.join(staging, "songs"), file_name_suffix=".jsonl", shard_name_template="")
    return outputs


class _LocalRunner(FnApiRunner):
    """Beam's FnApiRunner whose multi_processing workers end with this process and log as
    it does (lifecycle.worker_command)."""

    def __init__(self, verbose: bool = False):
        super().__init__()
        self._verbose = verbose

    def run_pipeline(self, pipeline, options):
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return super().run_pipeline(pipeline, options)
        self._default_environment = SubprocessSDKEnvironment.from_command_string(
            lifecycle.worker_command(self._verbose))
        # Beam's multi_processing branch would put its own worker command back; the mode
        # does nothing else (the worker count is direct_num_workers).
        direct.direct_running_mode = None
        try:
            return super().run_pipeline(pipeline, options)
        finally:
            direct.direct_running_mode = "multi_processing"


def _local_runner(options, verbose: bool) -> FnApiRunner | None:
    """Our FnApiRunner where the options name Beam's; None (the runner the options name)
    for any other."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    if isinstance(runner, str) and runner.rsplit(".", 1)[-1] == "FnApiRunner":
        return _LocalRunner(verbose)
    return None


def _num_workers(options) -> int:
    n = options.view_as(DirectOptions).direct_num_workers
    return n if n and n > 0 else (os.cpu_count() or 1)


def finalize(out, staging, spec, songs, args, seconds, report=None) -> dict:
    """Puts the new dataset in place (journaled, see output_folder) with its metadata and
    reports, or, when no song was written, only the reports beside what `out` holds.

    Checks first that every input song has its record: nothing is lost silently.
    """
    records = _read_jsonl(os.path.join(staging, "songs.jsonl"))
    shards = _read_jsonl(os.path.join(staging, "shards.jsonl"))
    got = {r["song_id"] for r in records}
    lost = [s.song_id for s in songs if s.song_id not in got]
    if lost or len(records) != len(songs):
        raise RuntimeError(f"pipeline lost track of {len(lost)} song(s), e.g. {lost[:3]}; "
                           f"{len(records)} records for {len(songs)} inputs")
    summary = song_chunks.summarize(records)
    summary["seconds_elapsed"] = round(seconds, 1)
    summary["songs_per_s"] = round(len(songs) / max(seconds, 1e-9), 2)
    if report is not None:
        summary["metadata"] = report.to_summary()
    failed = [r for r in records if r["status"] == song_chunks.FAILED]
    report_files = output_folder.REPORT_FILES
    if not shards and FileSystems.exists(os.path.join(out, INFO_FILE)):
        # Nothing new to put in place: the dataset already there stays as it is, and
        # this run's report goes beside it.
        report_files = output_folder.LATEST_REPORT_FILES
    where = staging if shards else out
    output_folder.mark_output_dir(out)  # before this run's first file goes into `out`
    _write_text(os.path.join(where, report_files[0]),
                "".join(json.dumps(r) + "\n" for r in sorted(failed, key=_by_id)))
    _write_text(os.path.join(where, report_files[1]), json.dumps(summary, indent=2) + "\n")
    summary["report_files"] = list(report_files)
    if shards:
        _put_in_place(out, staging, spec, shards, args, report_files)
    return summary


def _put_in_place(out, staging, spec, shards, args, report_files) -> None:
    """Completes the new dataset in `staging` and replaces the one in `out` with it."""
    _remove(os.path.join(staging, "spill"))  # scratch, before the dataset moves in
    # A shard that no example hashed to still gets its (empty) file: TFDS expects them all.
    for split, shard, num_shards in _missing_shards(shards):
        name = shard_filename(split, shard, num_shards)
        tfrecord.write_records(os.path.join(staging, name), [])
        shards.append({"split": split, "shard": shard, "num_shards": num_shards,
                       "file": name, "examples": 0, "bytes": 0})
    _write_metadata(staging, spec, shards, args)
    new_files = [s["file"] for s in shards] + list(report_files) + [
        n for n in output_folder.METADATA_FILES
        if FileSystems.exists(os.path.join(staging, n))]
    output_folder.replace_dataset(out, staging, new_files)


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
    # Into the staging folder, beside the new shards: the dataset is complete there
    # before output_folder.replace_dataset moves it in.
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
        f"  leading and trailing silence trimmed: {summary['silence_trimmed_seconds']:.1f} s",
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
    totals = counter_totals(counters)
    if totals:
        log.info("metrics: %s", ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))


def counter_totals(counters) -> dict[str, int]:
    """Each of the pipeline's counters summed over steps: committed where the runner
    reports it, else attempted (the Spark runner reports only attempted values). Counters
    of other namespaces (the Java runners report Beam's own, e.g. element counts) are left
    out."""
    totals: dict[str, int] = {}
    for c in counters:
        if not (c.key.metric.namespace or "").startswith("beam_pipelines."):
            continue
        value = c.committed if c.committed is not None else c.attempted
        if value is not None:
            totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + value
    return totals


def _runner_name(options) -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    return (runner if isinstance(runner, str) else type(runner).__name__).rsplit(".", 1)[-1]


def _unreachable(e: BaseException, options) -> str | None:
    """The line for a job endpoint that never answered (Beam raises a bare
    grpc.FutureTimeoutError); None for other errors."""
    import grpc
    from apache_beam.options.pipeline_options import PortableOptions

    if not isinstance(e, grpc.FutureTimeoutError):
        return None
    portable = options.view_as(PortableOptions)
    return (f"no job service answered at --job_endpoint={portable.job_endpoint} within "
            f"{portable.job_server_timeout} s (--job_server_timeout); is the cluster up? "
            "(scripts/cluster.sh flink|spark status)")


def _error_with_cause(e: BaseException) -> str:
    """An exception as one readable line: its type and message, and those of its root
    cause (a cluster wraps the real error in its own)."""
    def line(x):
        text = _job_failure(str(x)) or one_line(x)
        return f"{type(x).__name__}: {text[:297] + '...' if len(text) > 300 else text}"

    root, seen = e, {id(e)}
    while (root.__cause__ or root.__context__) is not None and \
            id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__
        seen.add(id(root))
    if root is e or not str(root).strip():  # a bare cause (e.g. a cancellation) says nothing
        return line(e)
    return f"{line(e)} (caused by {line(root)})"


# A failed portable job, as Beam's job service reports it, and the last exception line of
# a (Python or Java) traceback carried inside its text.
_JOB_FAILED = re.compile(r"Pipeline (\S+) failed in state (\w+): (.*)", re.S)
_EXCEPTION_LINE = re.compile(r"^\s*((?:[A-Za-z_][\w$]*\.)*[A-Za-z_]\w*"
                             r"(?:Error|Exception|Exit|Interrupt|Failure)): \S.*$", re.M)


def _job_failure(text: str) -> str | None:
    """`Pipeline ID failed in state FAILED: <traceback>` as `job ID FAILED: <the innermost
    exception line>`; None for other text."""
    m = _JOB_FAILED.match(text)
    if not m:
        return None
    job, state, detail = m.groups()
    lines = [x.group(0) for x in _EXCEPTION_LINE.finditer(detail)]
    return f"job {job} {state}: {one_line(lines[-1] if lines else detail)}"


# A no-space OSError in a traceback's text: its message, without the step Beam appends.
_NO_SPACE_LINE = re.compile(r"(\[Errno (?:%s)\][^\n]*?)(?: \[while running '[^'\n]*'\])*\s*$"
                            % "|".join(map(str, lifecycle.NO_SPACE_ERRNOS)), re.M)


def no_space_error(e: BaseException, folder: str) -> str | None:
    """One line for a full disk (or quota) anywhere in `e` (its causes, or the text of a
    worker's traceback it carries) naming the filesystem and `folder`; None otherwise."""
    detail, seen, x = None, set(), e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in lifecycle.NO_SPACE_ERRNOS:
            detail = one_line(x)
            break
        found = _NO_SPACE_LINE.findall(str(x))
        if found:
            detail = one_line(found[-1])
            break
        x = x.__cause__ or x.__context__
    if detail is None:
        return None
    return (f"no space left on the filesystem of {folder} ({_filesystem(folder)}): {detail}; "
            "free some space or choose another --output_dir")


def _filesystem(folder: str) -> str:
    """Which filesystem holds `folder`: its device and mount point, as /proc/self/mounts
    names them."""
    if not is_local(folder):  # a bucket: its storage is the service's
        return folder.split("/", 3)[2] if "://" in folder else folder
    path = os.path.realpath(local_path(folder))
    while not os.path.ismount(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    device = None
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and _unescape_mount(fields[1]) == path:
                    device = f"{fields[0]}, {fields[2]}"  # the last mount there is the one seen
    except OSError:
        pass
    if device is None:
        try:
            st = os.stat(path)
            device = f"device {os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        except OSError:
            device = "device unknown"
    return f"{device}, mounted on {path}"


def _unescape_mount(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


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


def setup_logging(verbose: bool = False):
    """wavegen's lines on stderr; Beam's own only with `verbose`."""
    if not verbose:
        lifecycle.quiet_stderr()  # the in-process harness (multi_threading) writes there
    lifecycle.use_handler(lifecycle.log_handler(verbose))


def main():
    lifecycle.start_command()  # again, for callers that import this module
    argv = sys.argv[1:]
    args, _ = parse_args(argv)  # a bad command line ends here, with argparse's usage
    setup_logging(args.verbose)
    code = run(argv)
    signum = lifecycle.pending_interruption()
    if signum:
        log.error("interrupted by %s while the run was putting its output in place in %s; "
                  "it finished that first (see above)", lifecycle.signal_name(signum),
                  args.output_dir)
        code = 128 + signum
    sys.exit(code)


if __name__ == "__main__":
    main()
