"""experiments/bench/bench_generation.py: the parts of the benchmark its figures rest on -
the bytes of weights a batch-1 step reads (the weight-streaming bound's numerator) and the
every-core comparison really running on every core. (The figures themselves are
`make bench`'s, never a timed test's.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments.bench import bench_generation as bg
from wavegen.model import wavenet as wm


@pytest.mark.parametrize("preset,overrides", [("tiny", {"num_classes": 256}),
                                              ("medium", {"num_classes": 256}),
                                              ("tiny", {"skip_channels": 24,
                                                        "num_classes": 40})])
def test_weight_bytes_per_step_counts_the_kernels_a_step_multiplies(preset, overrides):
    cfg = wm.preset(preset, num_genres=0, **overrides)
    model = wm.create_model(cfg, seed=0)
    r = cfg.residual_channels
    expected = 0
    for i, layer in enumerate(model.layers):
        expected += layer.conv_kernel[...].nbytes + layer.out_kernel[...].nbytes
        if i == len(model.layers) - 1:  # the last layer's residual 1x1 is never used
            expected -= layer.out_kernel[...][:, :r].nbytes
    expected += model.head_kernel1[...].nbytes + model.head_kernel2[...].nbytes
    assert bg.weight_bytes_per_step(cfg) == expected


CHILD_CPUS = """
import json, os, sys
from wavegen.runtime import limit_cpu_threads
cpus = sorted(os.sched_getaffinity(0))
kept = limit_cpu_threads(1)
from experiments.bench.bench_generation import run_on_cpus
res = run_on_cpus([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                  cpus, kept)
print(json.dumps({"kept": kept, "child": res.stdout.strip(),
                  "parent_after": sorted(os.sched_getaffinity(0))}))
"""


def test_every_core_child_gets_every_cpu_back():
    allowed = sorted(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", CHILD_CPUS], capture_output=True, text=True,
                         check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["child"] == str(allowed)  # not the parent's one CPU
    if len(allowed) > 1:
        assert got["parent_after"] == got["kept"] and len(got["kept"]) == 1
