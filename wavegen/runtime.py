"""CPU runtime tweaks the heavy entry points apply first, before JAX starts."""

from __future__ import annotations

import os
import sys

HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"


def reexec_with_hugepage_malloc() -> None:
    """Restarts this process (same argv) with glibc's transparent-huge-page malloc.

    XLA:CPU allocates a step's temporaries (gigabytes for a WaveNet at batch 8 x 8,000)
    afresh on every call, and with 4 KiB pages the page faults on that memory cost as much
    as a third of a training step. `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` makes malloc
    ask for transparent huge pages (where the kernel offers them: "madvise" or "always"
    in /sys/kernel/mm/transparent_hugepage/enabled). Tunables are read at process start,
    hence the re-exec; call this first thing in an entry point, before heavy imports.
    A no-op when already set, or where the kernel has no THP.
    """
    if HUGEPAGE_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            if "[never]" in f.read():
                return
    except OSError:
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"),
                                                   HUGEPAGE_TUNABLE]))
    os.execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)


def _running_on() -> int | None:
    """The CPU this thread last ran on (/proc/self/stat field 39), or None."""
    try:
        with open("/proc/thread-self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def limit_cpu_threads(n: int | None) -> list[int] | None:
    """Keeps this process on `n` of the CPUs it may use, before JAX starts, so that XLA:CPU
    runs it with n threads. Returns the CPUs kept, or None where nothing changed (n None,
    or at least the CPUs available).

    For an entry point only, called before the first JAX operation: JAX's CPU client is
    made then, and it sizes its thread pool from this affinity, which the threads it
    starts inherit (threads started earlier keep theirs). The CPUs kept start with the
    one this thread runs on, so two processes started side by side do not pile onto the
    same CPU. Processes it starts afterwards inherit the limit (give a child the CPUs back
    with os.sched_setaffinity where it should use every core).

    Why: cached generation runs a few hundred tiny operations per sample, one after the
    other, too small to split over cores, and a second thread only adds hand-offs
    (`make bench` measures one thread against every core in the same run).
    """
    if n is None:
        return None
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"CPU threads must be a positive int or None, got {n!r}")
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if n >= len(allowed):
        return None
    here = _running_on()
    first = allowed.index(here) if here in allowed else 0
    keep = [allowed[(first + i) % len(allowed)] for i in range(n)]
    os.sched_setaffinity(0, keep)
    return keep
