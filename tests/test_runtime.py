"""wavegen.runtime: the CPU tweaks entry points apply before JAX starts (each check runs in
a fresh process, so the test process keeps its own CPUs and allocator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wavegen import runtime

THREADS = """
import glob, json, sys
from wavegen.runtime import limit_cpu_threads
kept = limit_cpu_threads({n})
import jax, jax.numpy as jnp
(jnp.ones((256, 256)) @ jnp.ones((256, 256))).block_until_ready()
masks = {{}}
for path in glob.glob("/proc/self/task/*/status"):
    fields = dict(l.split(":\\t", 1) for l in open(path).read().splitlines() if ":\\t" in l)
    masks.setdefault(fields["Name"], set()).add(fields["Cpus_allowed_list"])
print(json.dumps({{"kept": kept, "masks": {{k: sorted(v) for k, v in masks.items()}}}}))
"""


def _threads_after(n) -> dict:
    out = subprocess.run([sys.executable, "-c", THREADS.format(n=n)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_one_cpu_thread_keeps_xla_on_one_cpu():
    allowed = sorted(os.sched_getaffinity(0))
    got = _threads_after(1)
    if len(allowed) == 1:  # nothing to narrow: the function says it changed nothing
        assert got["kept"] is None
        return
    assert len(got["kept"]) == 1 and got["kept"][0] in allowed
    xla = {k: v for k, v in got["masks"].items() if k.startswith("tf_XLA")}
    assert xla, got["masks"]  # XLA:CPU's pool threads are there ...
    assert all(v == [str(got["kept"][0])] for v in xla.values()), xla  # ... on that CPU


def test_none_or_every_cpu_changes_nothing():
    assert _threads_after(None)["kept"] is None
    assert _threads_after(len(os.sched_getaffinity(0)))["kept"] is None


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_thread_count_is_refused(bad):
    with pytest.raises(ValueError, match="positive int"):
        runtime.limit_cpu_threads(bad)
