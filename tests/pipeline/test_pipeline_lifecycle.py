"""How a pipeline run ends when it is stopped or runs out of room: its worker
processes die with it, SIGTERM and Ctrl-C end it in one line leaving the output folder as
it was, a full disk is one line, a clean run prints only wavegen's lines (--verbose brings
Beam's back), and `~` in a path flag is the home folder."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from beam_pipelines import output_folder, preprocess

from helpers import ROOT, preprocess_cli, run_command, run_pipeline, tone, write_audio
from songserver import Delay, serve

SMALL = ["--chunk_seconds=0.2", "--context_samples=200", "--split=train:1"]
LOCAL = ["--direct_num_workers=2"]  # the default runner: FnApiRunner, multi_processing
IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory",
              "--direct_num_workers=1"]

# A line of wavegen's own: its log format, or a worker's progress line.
WAVEGEN_LINE = re.compile(r"^(\d\d:\d\d:\d\d (INFO|WARNING|ERROR|CRITICAL) \S|\[wavegen\] )")


def foreign_lines(stderr: str) -> list[str]:
    """The lines of `stderr` that are not wavegen's (Beam's, tracebacks, ...)."""
    return [line for line in stderr.splitlines() if not WAVEGEN_LINE.match(line)]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"^\S+ (ERROR|CRITICAL) ", line)]


def songs(folder, n: int = 2) -> str:
    for i in range(n):
        write_audio(os.path.join(str(folder), "rock", f"s{i}.wav"), tone(2.0, 16000, seed=i),
                    16000)
    return str(folder)


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes, but the lock file (each run writes its pid
    into it) and scratch folders (checked on their own)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((output_folder.STAGING_PREFIX,
                                                          output_folder.BACKUP_PREFIX))]
        for f in files:
            p = os.path.join(root, f)
            if f != output_folder.LOCK_FILE:
                out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


@pytest.fixture
def old_dataset(tmp_path):
    """A dataset already in tmp_path/ds (written in this process) and its files' bytes."""
    out = tmp_path / "ds"
    assert run_pipeline(f"--input={songs(tmp_path / 'old')}", f"--output_dir={out}",
                        *SMALL) == 0
    before = snapshot(out)
    assert "dataset_info.json" in before
    return out, before


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[1]), fields[0]


def descendants(pid: int) -> set[int]:
    """The live processes below `pid`."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) and st[1] != "Z":
            parents[int(name)] = st[0]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids) -> set[int]:
    return {p for p in pids if (st := _stat(p)) and st[1] != "Z"}


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# --------------------------------------------------------------------------------------
# 1 and 2. Stopped runs: the workers die with the pipeline; SIGTERM and Ctrl-C end it in
# one line, the output folder as it was


# Loaded by every Python process of the run (PYTHONPATH): keeps a Beam worker from ending
# by itself once its pipeline is gone, as a worker busy in a long call does.
STUBBORN_WORKER = """
import os, threading, time
if "CONTROL_API_SERVICE_DESCRIPTOR" in os.environ:  # a Beam worker, not the pipeline
    threading.Thread(target=time.sleep, args=(600,)).start()  # not a daemon: exit waits
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_a_stopped_run_takes_its_workers_with_it_and_leaves_the_output_as_it_was(
        tmp_path, old_dataset, sig):
    out, before = old_dataset
    urls = tmp_path / "slow.urls"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(STUBBORN_WORKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path / "site")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    with serve({"/a.wav": Delay(120, b""), "/b.wav": Delay(120, b"")}) as base:
        urls.write_text(f"{base}/a.wav\n{base}/b.wav\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "beam_pipelines.preprocess", f"--input={urls}",
             f"--input={songs(tmp_path / 'new')}", f"--output_dir={out}", "--overwrite",
             "--fetch_timeout=300", "--fetch_attempts=1", *SMALL, *LOCAL],
            cwd=ROOT, env=env, stdout=open(tmp_path / "stdout", "w"),
            stderr=open(tmp_path / "stderr", "w"), start_new_session=True)
        workers: set[int] = set()
        try:
            # Mid-run: a worker is waiting for a song that does not come, both workers up.
            wait_for(lambda: sum(base.requests.values()) >= 1, 90, "a worker to fetch a song")
            workers = wait_for(lambda: descendants(proc.pid) if len(descendants(proc.pid)) >= 2
                               else None, 30, "two worker processes")
            proc.send_signal(sig)
            proc.wait(timeout=30)
            deadline = time.monotonic() + 5
            while alive(workers) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not alive(workers), f"workers outlived the pipeline: {alive(workers)}"
        finally:  # nothing outlives the test, whatever happened
            for pid in alive(workers | descendants(proc.pid)):
                os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert snapshot(out) == before  # the old dataset untouched, no new file beside it
    if sig == signal.SIGKILL:  # its staging folder stays, for the next run to remove
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == 128 + sig, stderr[-3000:]
    assert not foreign_lines(stderr), stderr[-3000:]  # no traceback, no Beam chatter
    errors = error_lines(stderr)
    assert len(errors) == 1 and signal.Signals(sig).name in errors[0], stderr[-3000:]
    assert str(out) in errors[0] and "left as it was" in errors[0]
    assert stdout == ""
    assert not [n for n in os.listdir(out) if n.startswith(
        (output_folder.STAGING_PREFIX, output_folder.BACKUP_PREFIX))], os.listdir(out)


SIGNAL_WHILE_REPLACING = textwrap.dedent("""
    import os, signal
    from beam_pipelines import lifecycle
    lifecycle.hold_import_logs()  # as `python -m beam_pipelines.preprocess` does first
    from beam_pipelines import output_folder, preprocess

    def term(done):  # after the first step of the replacement
        if done == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    output_folder.after_step = term
    preprocess.main()
""")


def test_a_signal_while_the_new_dataset_is_put_in_place_waits_for_it(tmp_path, old_dataset):
    out, before = old_dataset
    res = run_command(
        [sys.executable, "-c", SIGNAL_WHILE_REPLACING, f"--input={songs(tmp_path / 'new', 3)}",
         f"--output_dir={out}", "--overwrite", *SMALL, *IN_PROCESS],
        timeout=120)
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-3000:]
    assert not foreign_lines(res.stderr), res.stderr[-3000:]
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "SIGTERM" in errors[0] and "finished" in errors[0], errors
    assert "songs in 3, written 3" in res.stdout  # the run ended, and said so
    assert json.loads((out / "summary.json").read_text())["songs_in"] == 3  # the new one
    assert not output_folder.replacement_pending(str(out))
    assert not [n for n in os.listdir(out) if n.startswith(
        (output_folder.STAGING_PREFIX, output_folder.BACKUP_PREFIX))], os.listdir(out)


# --------------------------------------------------------------------------------------
# 3. A full disk: one line naming the filesystem and the folder

DISK_FULL = textwrap.dedent("""
    import errno, os, sys
    from beam_pipelines import lifecycle
    lifecycle.hold_import_logs()  # as `python -m beam_pipelines.preprocess` does first
    from beam_pipelines import output_folder, preprocess
    from beam_pipelines.ingest import tfrecord_framing

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    where = sys.argv.pop(1)
    if where == "shards":  # in the pipeline, as a worker writes a shard
        tfrecord_framing.write_records = full
    else:  # putting the new dataset in place: the journal's first write
        output_folder._write_journal = full
    preprocess.main()
""")


@pytest.mark.parametrize("where", [pytest.param("shards", marks=pytest.mark.slow), "journal"])
def test_a_full_disk_is_one_line_naming_the_filesystem_and_the_folder(tmp_path, old_dataset,
                                                                       where):
    out, before = old_dataset
    res = run_command(
        [sys.executable, "-c", DISK_FULL, where, f"--input={songs(tmp_path / 'new')}",
         f"--output_dir={out}", "--overwrite", *SMALL, *IN_PROCESS],
        timeout=120)
    assert res.returncode == 1, res.stderr[-3000:]
    assert not foreign_lines(res.stderr), res.stderr[-3000:]
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res.stderr[-3000:]
    line = errors[0]
    assert f"no space left on the filesystem of {out} (" in line, line
    assert os.strerror(errno.ENOSPC) in line and "--output_dir" in line, line
    assert snapshot(out) == before


def test_no_space_is_recognised_through_a_worker_failure(tmp_path):
    # A worker's error reaches the pipeline process as text (a RuntimeError carrying the
    # worker's traceback), cut before the end by nothing.
    detail = "[Errno 28] No space left on device: '/x/train.tfrecord-00000-of-00001'"
    worker = RuntimeError("Error processing instruction 7. Original traceback is\n" +
                          "Traceback (most recent call last):\n  File \"x.py\"\n" * 60 +
                          f"RuntimeError: OSError: {detail} [while running 'WriteShard']\n")
    assert preprocess.no_space_error(worker, str(tmp_path)).startswith(
        f"no space left on the filesystem of {tmp_path} (")
    assert detail in preprocess.no_space_error(worker, str(tmp_path))
    assert preprocess.no_space_error(RuntimeError("boom"), str(tmp_path)) is None
    assert preprocess.no_space_error(OSError(errno.EACCES, "denied"), str(tmp_path)) is None


# --------------------------------------------------------------------------------------
# 4. A clean run prints wavegen's lines only; --verbose brings Beam's back


@pytest.mark.slow
def test_a_clean_local_run_prints_only_wavegens_lines(tmp_path):
    res = preprocess_cli(f"--input={songs(tmp_path)}", f"--output_dir={tmp_path / 'ds'}",
                         *SMALL, *LOCAL, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.strip() and not foreign_lines(res.stderr), res.stderr
    assert "songs in 2, written 2" in res.stdout


@pytest.mark.slow
def test_verbose_brings_beams_logs_back(tmp_path):
    res = preprocess_cli(f"--input={songs(tmp_path)}", f"--output_dir={tmp_path / 'ds'}",
                         "--verbose", *SMALL, *LOCAL, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    # Each line names its logger: Beam's from this process and from the workers (the
    # harness's start-up lines), wavegen's own too.
    beam = re.findall(r"^\S+ [A-Z]+ (?:apache_beam|root)\S*: (.*)$", res.stderr, re.M)
    assert any("semi_persistent_directory" in line for line in beam), res.stderr
    assert any("sdk harness starting" in line.lower() for line in beam), res.stderr
    assert any("apitools not found" in line for line in beam), res.stderr  # at import
    assert re.search(r"^\S+ INFO wavegen.pipeline: 2 songs from 1 input", res.stderr, re.M)


def test_help_shows_verbose():
    text = " ".join(preprocess.build_parser().format_help().split())
    assert "--verbose" in text and "Beam's" in text


def test_verbose_keeps_the_harness_at_beams_own_level():
    assert "default_sdk_harness_log_level" not in preprocess.pipeline_options(
        [], verbose=True).get_all_options(drop_default=True)


# --------------------------------------------------------------------------------------
# 5. `~` in a path flag is the home folder, shell or no shell


@pytest.mark.slow
def test_tilde_in_path_flags_is_the_home_folder(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    songs(home / "songs")
    cwd.mkdir()
    env = {"HOME": str(home)}
    res = preprocess_cli("--input=~/songs", "--output_dir=~/ds", *SMALL, *IN_PROCESS, cwd=cwd,
                         env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (home / "ds" / "dataset_info.json").exists()
    assert os.listdir(cwd) == []  # no folder named `~`
    # The home folder itself is refused as an output folder, by its real name.
    res = preprocess_cli("--input=~/songs", "--output_dir=~", *SMALL, *IN_PROCESS, cwd=cwd,
                         env=env, timeout=180)
    assert res.returncode == 2 and str(home) in error_lines(res.stderr)[0], res.stderr
    assert os.listdir(cwd) == []


def test_tilde_is_expanded_in_every_path_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    args, _ = preprocess.parse_args(["--input=~/a", "--input=~/b.urls", "--output_dir=~/x",
                                     "--metadata=~/tracks.csv", "--input=http://h/~x.urls"])
    assert args.input == [f"{tmp_path}/a", f"{tmp_path}/b.urls", "http://h/~x.urls"]
    assert args.output_dir == f"{tmp_path}/x" and args.metadata == f"{tmp_path}/tracks.csv"
