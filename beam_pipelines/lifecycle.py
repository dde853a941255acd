"""How the pipeline's processes start, log and end, on the local runner.

The pipeline process (`python -m beam_pipelines.preprocess`):
- `start_command()`, first thing: Beam logs through the root logger while it is imported;
  those records are held (`hold_import_logs`) and handed to the real handler once
  `--verbose` is known (a clean run drops them). SIGTERM and SIGINT (Ctrl-C) stop the run
  (`install_signal_handlers`): the worker processes are killed, the run's scratch is
  removed (`on_interrupt`), one line says so, and the process exits with 128 + the signal.
  Once the new dataset is being put in place the signal waits for the run to end
  (`defer_interruption`): that step is short, and stopping inside it would leave the
  replacement for the next run to finish.

Each worker process (Beam's FnApiRunner, multi_processing: `worker_command()`, run by a
shell) execs `python -m beam_pipelines.lifecycle --parent=PID`, which before Beam's SDK
harness starts:
- asks Linux to SIGKILL it when its parent ends (prctl PR_SET_PDEATHSIG): a worker never
  outlives its pipeline, however the pipeline ended (SIGKILL included) and whatever the
  worker was doing. The kernel sends the signal when the *thread* that started the worker
  ends; Beam starts each worker from a thread that waits for it, so that thread lives as
  long as the worker. `exec` makes the worker the child of the pipeline process itself,
  not of the shell Beam runs the command with;
- ignores SIGINT: Ctrl-C reaches every process of the terminal's process group, and the
  pipeline process is the one that stops the run;
- logs as the pipeline does: wavegen's records, and only Beam's errors unless --verbose.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import importlib.util
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time

log = logging.getLogger("wavegen.pipeline")

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
VERBOSE_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # whose line it is
LOG_DATEFMT = "%H:%M:%S"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
NO_SPACE_ERRNOS = tuple(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e)
# How an OSError of those reads in a traceback's text (a worker's error reaches the
# pipeline process as text).
NO_SPACE_TEXT = re.compile(r"\[Errno (%s)\]" % "|".join(map(str, NO_SPACE_ERRNOS)))


# --------------------------------------------------------------------------------------
# Logging: what a clean run shows


def _beam_dir() -> str:
    spec = importlib.util.find_spec("apache_beam")  # without importing it (and its logs)
    return os.path.dirname(spec.origin) + os.sep if spec and spec.origin else "\0"


class QuietBeam(logging.Filter):
    """Keeps Beam's own chatter (worker start-up, optional-dependency notes) off screen,
    and its reports of a full disk (the run reports it once, in one line); wavegen's own
    records always pass."""

    NOISE = ("apitools not found", "semi_persistent_directory", "Discarding unparseable args")
    BEAM_DIR = _beam_dir()

    def filter(self, record):
        if record.name.startswith("wavegen"):
            return True
        if record.name.startswith("apache_beam") and record.levelno < logging.ERROR:
            return False
        # A portable job's own messages (Beam logs them through the root logger), failures
        # included: a failed job is reported once, in one line, by run().
        if record.pathname.startswith(self.BEAM_DIR) and "portability" in record.pathname:
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        if NO_SPACE_TEXT.search(text):
            return False
        return not any(n in text for n in self.NOISE)


def log_handler(verbose: bool) -> logging.Handler:
    """stderr in wavegen's format; Beam's chatter filtered out unless `verbose`, which
    names each line's logger."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(VERBOSE_LOG_FORMAT if verbose else LOG_FORMAT,
                                           datefmt=LOG_DATEFMT))
    if not verbose:
        handler.addFilter(QuietBeam())
    return handler


class _WithoutHarnessEcho:
    """A stream (stderr) without what Beam's SDK harness writes to it directly: the
    traceback of an instruction that failed, which it also logs; the log record is shown,
    or not, by the same rules as every other."""

    HARNESS = "apache_beam.runners.worker.sdk_worker"

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if sys._getframe(1).f_globals.get("__name__") == self.HARNESS:
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def quiet_stderr() -> None:
    """sys.stderr without the SDK harness's direct writes (see _WithoutHarnessEcho). For
    the command's processes only, not for a library user's."""
    if not isinstance(sys.stderr, _WithoutHarnessEcho) and sys.stderr is not None:
        sys.stderr = _WithoutHarnessEcho(sys.stderr)


class _Held(logging.Handler):
    """Keeps records until the real handler is known."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def hold_import_logs() -> None:
    """Holds what is logged before `use_handler` (Beam logs while it is imported, and the
    root logger would otherwise print it in Python's default format). Idempotent."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(_Held())


def use_handler(handler: logging.Handler, level: int = logging.INFO) -> None:
    """Makes `handler` the root logger's only handler; records held so far go through it."""
    root = logging.getLogger()
    held = [r for h in root.handlers if isinstance(h, _Held) for r in h.records]
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for record in held:
        if record.levelno >= level:
            handler.handle(record)


# --------------------------------------------------------------------------------------
# The pipeline process: SIGTERM and Ctrl-C


class _Stop:
    """What an interruption must undo, and whether it must wait."""

    installed = False
    cleanups: list = []  # (callable, note) pairs, innermost last
    deferred = False
    pending: int | None = None


def start_command() -> None:
    """The pipeline command's first step: hold Beam's import-time logs, handle SIGTERM and
    SIGINT. Idempotent."""
    hold_import_logs()
    install_signal_handlers()


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT stop the run (see the module docstring). Only for the command
    (a process the run owns): it ends the process."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    _Stop.installed = True


@contextlib.contextmanager
def on_interrupt(cleanup, note: str):
    """While inside: an interruption calls `cleanup()` and its line says `note` (what the
    output folder is left as)."""
    entry = (cleanup, note)
    _Stop.cleanups.append(entry)
    try:
        yield
    finally:
        _Stop.cleanups.remove(entry)


def defer_interruption() -> None:
    """From now on a signal waits for the run to end (see `pending_interruption`)."""
    _Stop.deferred = True


def pending_interruption() -> int | None:
    """The signal that arrived while deferred, if any."""
    return _Stop.pending


def _on_signal(signum, frame):
    if _Stop.deferred:
        _Stop.pending = _Stop.pending or signum
        return
    stop(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def stop(signum: int) -> None:
    """Ends the process after a stop signal: workers killed, scratch removed, one line."""
    for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the clean-up short
        signal.signal(sig, signal.SIG_IGN)
    # Beam's threads notice the workers' end and report it; this process reports it once.
    logging.disable(logging.CRITICAL)
    threading.excepthook = lambda args: None
    kill_children()
    note, problems = "nothing was written", []
    for cleanup, what in reversed(_Stop.cleanups):
        note = what
        try:
            cleanup()
        except Exception as e:  # best effort; said in the line
            problems.append(" ".join(str(e).split()) or type(e).__name__)
    line = f"interrupted by {signal_name(signum)}: the run was stopped; {note}"
    if problems:
        line += f" (clean-up incomplete: {'; '.join(problems)})"
    emit(logging.ERROR, line)
    os._exit(128 + signum)


def emit(level: int, message: str) -> None:
    """Logs `message` through the root logger's handlers even while logging is disabled,
    and flushes every stream before the process ends."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), None)
    handlers = logging.getLogger().handlers
    for handler in handlers:
        if not isinstance(handler, _Held):
            handler.handle(record)
    if not any(not isinstance(h, _Held) for h in handlers):  # before logging is set up
        print(logging.Formatter(LOG_FORMAT, datefmt=LOG_DATEFMT).format(record),
              file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0].decode()


def children(pid: int | None = None) -> list[int]:
    """The live child processes of `pid` (this process by default); Linux's /proc."""
    pid = os.getpid() if pid is None else pid
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for name in names:
        if name.isdigit() and (st := _proc_stat(int(name))) and st[0] == pid and st[1] != "Z":
            found.append(int(name))
    return found


def kill_children(wait_s: float = 5.0) -> None:
    """SIGKILLs this process's children (the workers) and waits until they are dead, so
    that none writes into the scratch about to be removed."""
    pids = children()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if all((st := _proc_stat(p)) is None or st[1] in "ZX" for p in pids):
            return
        time.sleep(0.02)


# --------------------------------------------------------------------------------------
# Worker processes


def worker_command(verbose: bool = False) -> str:
    """The shell command Beam's local runner starts each worker with."""
    argv = [sys.executable, "-m", "beam_pipelines.lifecycle", f"--parent={os.getpid()}"]
    if verbose:
        argv.append("--verbose")
    return "exec " + " ".join(shlex.quote(a) for a in argv)


def die_with_parent(parent: int) -> None:
    """SIGKILL when `parent` ends: Linux's PR_SET_PDEATHSIG; elsewhere a thread that
    watches the parent id."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        prctl = None
    if prctl is not None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it ended before the request took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m beam_pipelines.lifecycle",
                                description="A Beam SDK worker of the local runner that "
                                            "ends with the pipeline process.")
    p.add_argument("--parent", type=int, required=True, help="the pipeline process's id")
    p.add_argument("--verbose", action="store_true", help="Beam's logs too")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(args.parent)
    if not args.verbose:
        quiet_stderr()
    use_handler(log_handler(args.verbose))  # before Beam's import logs its first line
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
