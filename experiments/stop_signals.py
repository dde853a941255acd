"""Ctrl-C and SIGTERM end an entry point with one line and the usual status.

Installed first thing (before the heavy imports), so a signal during an import, a compile
or a read never prints a traceback of whatever was running. The process ends at once
(`os._exit`): an exception raised into the interrupted code can land in a callback that
ignores it, or unwind the interpreter while XLA's threads still run (a segfault), and
nothing here needs unwinding: a sample or a report being written is incomplete either
way, and a checkpoint is used only once orbax has finished it. Training replaces the
SIGTERM handler while it steps (it saves a checkpoint first).
"""

import os
import signal
import sys


def end_in_one_line(what_stopped: str) -> None:
    """From now on SIGINT and SIGTERM print `interrupted (Ctrl-C): <what_stopped>` (or
    `stopped by SIGTERM: ...`) and end the process with 128 + the signal's number."""

    def stop(signum, frame):
        what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "stopped by SIGTERM"
        for stream in (sys.stdout, sys.stderr):  # what was printed before stays
            try:
                stream.flush()
            except Exception:  # e.g. the signal came in the middle of a write
                pass
        os.write(2, f"{what}: {what_stopped}\n".encode())
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
