"""The CPU runtime tweak every heavy entry point applies first (before importing JAX)."""

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
