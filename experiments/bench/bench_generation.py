"""Benchmark of cached WaveNet generation (`wavegen.generation.generator`) against naive generation.

    .venv/bin/python -m experiments.bench.bench_generation [--quick] [--json PATH]
        [--reps N] [--no-hugepages] [--sweep] [--cpu_threads 1] [--no-compare]

Randomly initialised models (`small`: receptive field 2,047; `medium`: 3,070; 256
classes, no genre conditioning, float32), sampling at temperature 1:

1. Cached generation: samples per second, counted over all streams, for small at batch 1
   and 16 and medium at batch 1. Each timed call is one `generate_chunk` of n samples
   per stream (one jitted `lax.scan`), continuing the state of the call before; the
   first call (compilation) is not timed. "best" is the fastest call, "typical" the
   median.
2. Naive generation (`naive_generate`: one full forward pass over the last receptive
   field for every new sample) for small at batch 1, a few samples per call; the
   cached/naive ratio at batch 1.
3. With --sweep: microseconds per step of one-stack models with 1, 5 and 10 layers
   (small's widths, batch 1): the fixed cost of a step (embedding, head, sampling, the
   loop) and the cost of one more layer.

4. Threads: the figures above run with `--cpu_threads` XLA:CPU threads (default 1, what
   `experiments/sample.py` uses: `wavegen.runtime.limit_cpu_threads`); unless
   --no-compare, the same cases run again in a child process on every core, so the
   table shows what the one-thread choice gains or loses, measured in the same run.
5. FLOPs: each figure's model FLOPs per second (forward, `wavegen.model.flops_per_sample`).
6. The weight-streaming bound. At batch 1 a step multiplies every weight once, so it
   reads the model's float32 weights once: `weight_bytes_per_step` (4 bytes per
   multiply-add of `flops_per_sample`; 11.9 MB for medium, far beyond the L2 cache).
   The same run times how fast one jitted matvec streams that many bytes of weights on
   the run's threads (`stream_rate`: the best case, one long operation), and divides: the
   samples/s of a batch-1 step that did nothing but read its weights at that rate. Each
   cached row reports its fraction of that bound (over B at batch B: the weights are read
   once per step for all streams).

Goals: small b1 >= 16,000 samples/s (real time at 16 kHz), small b16 >=
64,000 samples/s in total, medium b1 >= 8,000 samples/s (half real time at 16 kHz),
cached >= 100x naive.

By default the benchmark re-executes itself with glibc's transparent-huge-page malloc
(`wavegen.runtime.reexec_with_hugepage_malloc`), as the training benchmark does. Cached
generation allocates once per call (caches, noise blocks, output) and measured the same
with and without it; the naive reference's full forward passes (large XLA temporaries)
measured the same or a little faster with it, so the cached/naive ratio reported is
the conservative one. --no-hugepages keeps glibc's default malloc.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

from experiments.bench.results import write_json

GOALS = {"small_b1": 16_000, "small_b16": 64_000, "medium_b1": 8_000, "cached_over_naive": 100}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.bench.bench_generation",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter timed calls")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--reps", type=int, default=0, help="timed calls per case")
    p.add_argument("--no-hugepages", action="store_true",
                   help="keep glibc's default malloc (4 KiB pages)")
    p.add_argument("--sweep", action="store_true", help="also time 1, 5 and 10 layers")
    p.add_argument("--cpu_threads", type=int, default=1,
                   help="XLA:CPU threads (0: every core); default 1, as sample.py")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the run of the same cases on every core")
    return p.parse_args(argv)


def build(preset: str, **overrides):
    from wavegen.model import wavenet as wm
    from wavegen.training.steps import split_model

    cfg = wm.preset(preset, num_classes=256, num_genres=0, **overrides)
    graphdef, params = split_model(wm.create_model(cfg, seed=0))
    return cfg, graphdef, params


def time_calls(call, reps: int) -> tuple[float, list[float]]:
    """(seconds of the untimed first call, seconds of each timed call)."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return first, times


def weight_bytes_per_step(cfg) -> int:
    """Bytes of float32 weights one cached step reads: one weight per multiply-add of
    the forward pass (`flops_per_sample` counts 2 FLOPs per multiply-add); the biases
    and the embedding row are left out (under 1%)."""
    from wavegen.model import wavenet as wm

    return wm.flops_per_sample(cfg, training=False) // 2 * 4


def stream_rate(nbytes: int, reps: int = 5, steps: int = 500) -> float:
    """Bytes/s at which one jitted `lax.scan` streams nbytes of float32 weights per step:
    a (128, nbytes / 512) matrix times the carried (1, 128) vector, folded back into the
    carry (so no step can be skipped or hoisted). The best of reps timed calls."""
    import jax
    import jax.numpy as jnp

    rows = 128
    cols = max(rows, nbytes // (4 * rows) // rows * rows)
    w = jax.random.normal(jax.random.key(0), (rows, cols), jnp.float32) / rows

    def body(h, _):
        y = (h @ w).reshape(1, cols // rows, rows).sum(axis=1)
        return jnp.tanh(h + 1e-3 * y), None

    run = jax.jit(lambda h, w: jax.lax.scan(body, h, None, length=steps)[0])
    _, times = time_calls(lambda: run(jnp.ones((1, rows), jnp.float32), w), reps)
    return w.nbytes * steps / min(times)


def _row(kind: str, preset: str, batch: int, n: int, cfg, first: float,
         times: list[float]) -> dict:
    from wavegen.model import wavenet as wm

    total = batch * n
    best = total / min(times)
    return {"kind": kind, "preset": preset, "batch": batch, "layers": cfg.num_layers,
            "receptive_field": wm.receptive_field(cfg), "samples_per_call": n,
            "first_call_s": round(first, 2), "call_s": [round(t, 4) for t in times],
            "samples_per_s_best": best,
            "samples_per_s_typical": total / statistics.median(times),
            "us_per_step_best": min(times) / n * 1e6,
            "gflops_best": best * wm.flops_per_sample(cfg, training=False) / 1e9,
            "weight_bytes_per_step": weight_bytes_per_step(cfg)}


def cached(preset: str, batch: int, n: int, reps: int, **overrides) -> dict:
    import jax

    from wavegen.generation import generator as gen

    cfg, graphdef, params = build(preset, **overrides)
    state = gen.start(graphdef, params, jax.random.key(0), num_streams=batch,
                      start_bin=gen.silence_bin("mulaw", 8))
    box = [state]

    def call():
        bins, box[0] = gen.generate_chunk(graphdef, params, box[0], n)
        return bins

    return _row("cached", preset, batch, n, cfg, *time_calls(call, reps))


def naive(preset: str, batch: int, n: int, reps: int) -> dict:
    import jax

    from wavegen.generation import generator as gen

    cfg, graphdef, params = build(preset)

    def call():
        return gen.naive_generate(graphdef, params, jax.random.key(0), num_streams=batch,
                                  length=n, start_bin=gen.silence_bin("mulaw", 8))

    return _row("naive", preset, batch, n, cfg, *time_calls(call, reps))


def run_cases(args, reps: int) -> tuple[list[dict], list[dict]]:
    """(the cached and naive rows, the layer sweep's rows)."""
    rows = []
    cases = [("small", 1, 4000 if args.quick else 16000),
             ("small", 16, 1000 if args.quick else 4000),
             ("medium", 1, 1000 if args.quick else 4000)]
    for preset, batch, n in cases:
        r = cached(preset, batch, n, reps)
        rows.append(r)
        print(f"  cached {preset} b{batch}: {r['samples_per_s_best']:,.0f} samples/s best, "
              f"{r['samples_per_s_typical']:,.0f} typical (first call {r['first_call_s']} s)",
              flush=True)
    add_stream_bounds(rows, reps)
    r = naive("small", 1, 8 if args.quick else 32, max(2, reps // 2))
    rows.append(r)
    print(f"  naive small b1: {r['samples_per_s_best']:,.1f} samples/s best", flush=True)
    sweep = []
    if args.sweep:
        for layers in (1, 5, 10):
            s = cached("small", 1, 4000, reps, stacks=1, layers_per_stack=layers)
            sweep.append({"layers": layers, "us_per_step_best": s["us_per_step_best"]})
            print(f"  sweep: {layers:>2} layers {s['us_per_step_best']:.1f} us/step", flush=True)
    return rows, sweep


def add_stream_bounds(rows: list[dict], reps: int) -> None:
    """Adds the weight-streaming bound (docstring, item 6) to every cached row: one
    `stream_rate` per distinct weight size."""
    rates = {}
    for r in rows:
        if r["kind"] != "cached":
            continue
        nbytes = r["weight_bytes_per_step"]
        if nbytes not in rates:
            rates[nbytes] = stream_rate(nbytes, reps)
            print(f"  streaming {nbytes / 1e6:.1f} MB of weights per step: "
                  f"{rates[nbytes] / 1e9:.1f} GB/s", flush=True)
        bound = r["batch"] * rates[nbytes] / nbytes
        r.update(stream_gb_per_s=rates[nbytes] / 1e9,
                 stream_bound_samples_per_s=bound,
                 of_stream_bound=r["samples_per_s_best"] / bound)


def goals(rows: list[dict]) -> tuple[dict, dict, dict]:
    """(cached/naive ratio, best and typical figures), per goal."""
    def find(kind, preset, batch):
        return next(r for r in rows if (r["kind"], r["preset"], r["batch"]) ==
                    (kind, preset, batch))

    c, nv = find("cached", "small", 1), find("naive", "small", 1)
    ratio = {"best": c["samples_per_s_best"] / nv["samples_per_s_best"],
             "typical": c["samples_per_s_typical"] / nv["samples_per_s_typical"]}
    figures = {}
    for which in ("best", "typical"):
        key = f"samples_per_s_{which}"
        figures[which] = {"small_b1": c[key],
                          "small_b16": find("cached", "small", 16)[key],
                          "medium_b1": find("cached", "medium", 1)[key],
                          "cached_over_naive": ratio[which]}
    return ratio, figures["best"], figures["typical"]


def print_report(rows: list[dict], ratio: dict, measured: dict, typical: dict) -> None:
    header = (f"{'case':<22} {'RF':>6} {'samples/call':>12} {'samples/s best':>15} "
              f"{'typical':>10} {'us/step':>8} {'MB/step':>8} {'bound':>9} {'of bound':>8}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        name = f"{r['kind']} {r['preset']} b{r['batch']}"
        bound = (f"{r['weight_bytes_per_step'] / 1e6:>8.1f} "
                 f"{r['stream_bound_samples_per_s']:>9,.0f} {r['of_stream_bound']:>8.0%}"
                 if "of_stream_bound" in r else "")
        print(f"{name:<22} {r['receptive_field']:>6,} {r['samples_per_call']:>12,} "
              f"{r['samples_per_s_best']:>15,.1f} {r['samples_per_s_typical']:>10,.1f} "
              f"{r['us_per_step_best']:>8.1f} {bound}")
    print("(bound: samples/s of a step that only streamed its float32 weights, MB/step, at "
          "the rate one long matvec reached in this run)")
    print(f"\ncached/naive, small b1: {ratio['best']:,.0f}x best, {ratio['typical']:,.0f}x "
          "typical")
    print("\ngoal                       measured (best / typical)      goal   met")
    for k, goal in GOALS.items():
        print(f"{k:<24} {measured[k]:>12,.0f} / {typical[k]:>10,.0f} {goal:>10,}   "
              f"{'yes' if measured[k] >= goal else 'NO'}")


def run_on_cpus(cmd: list[str], cpus: list[int] | None, kept: list[int] | None):
    """subprocess.run(cmd) (output captured as text) in a child on `cpus`, from a process
    limited to `kept` (`limit_cpu_threads`; None: not limited, nothing to undo).

    A child inherits the CPU affinity of the thread that starts it, so this thread takes
    `cpus` back while the child starts (the process's XLA threads keep theirs) and returns
    to `kept` afterwards. (Not preexec_fn: a fork of a threaded JAX process may deadlock.)
    """
    import subprocess

    if cpus and kept:
        os.sched_setaffinity(0, cpus)
    try:
        return subprocess.run(cmd, capture_output=True, text=True)
    finally:
        if cpus and kept:
            os.sched_setaffinity(0, kept)


def all_cores(args, cpus: list[int] | None, kept: list[int] | None) -> tuple[dict, dict, int]:
    """The same cases in a child process on every core: its goal figures (best), its
    weight-streaming bounds (samples/s, per case) and its thread count.

    cpus: every CPU this process could use before it limited itself to `kept`; the child
    gets them back (`run_on_cpus`). Without that it ran on the parent's one CPU (it did
    until 2026-12-01: the "every core" figures of earlier tables were one-thread
    figures)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "all_cores.json")
        cmd = [sys.executable, "-m", "experiments.bench.bench_generation", "--cpu_threads",
               "0", "--no-compare", "--json", out] + (["--quick"] if args.quick else [])
        if args.reps:
            cmd += ["--reps", str(args.reps)]
        print(f"\nthe same cases on every core: {' '.join(cmd[1:])}", flush=True)
        res = run_on_cpus(cmd, cpus, kept)
        if res.returncode != 0:
            print(res.stdout[-2000:] + res.stderr[-2000:])
            raise RuntimeError("the every-core run of the generation benchmark failed")
        with open(out) as f:
            child = json.load(f)
    bounds = {f"{r['preset']}_b{r['batch']}": r["stream_bound_samples_per_s"]
              for r in child["generate"] if "stream_bound_samples_per_s" in r}
    return {k: v["best"] for k, v in child["goals"].items()}, bounds, child["cpu_threads"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.no_hugepages:
        from wavegen.runtime import reexec_with_hugepage_malloc

        reexec_with_hugepage_malloc()
    from wavegen.runtime import limit_cpu_threads

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    kept = limit_cpu_threads(args.cpu_threads or None)  # before JAX starts
    import jax

    threads = len(kept) if kept else len(os.sched_getaffinity(0))
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}: {os.cpu_count()} CPU "
          f"cores, {threads} XLA:CPU thread(s), "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}", flush=True)
    rows, sweep = run_cases(args, args.reps or (3 if args.quick else 7))
    ratio, measured, typical = goals(rows)
    print_report(rows, ratio, measured, typical)
    every, every_bounds, every_threads = ((None, None, None) if args.no_compare
                                          else all_cores(args, cpus, kept))
    if every:
        print(f"\n{'case':<24} {threads} thread(s)   every core ({every_threads} threads)"
              "   ratio   bound on every core")
        for k in ("small_b1", "small_b16", "medium_b1"):
            print(f"{k:<24} {measured[k]:>12,.0f}   {every[k]:>18,.0f}   "
                  f"{measured[k] / every[k]:.2f}x   {every_bounds.get(k, 0):>19,.0f}")
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "backend": jax.devices()[0].platform,
                          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")},
              "jax": jax.__version__, "quick": args.quick, "cpu_threads": threads,
              "generate": rows, "cached_over_naive": ratio, "sweep": sweep,
              "goals": {k: {"goal": g, "best": measured[k], "typical": typical[k],
                            "met": measured[k] >= g} for k, g in GOALS.items()},
              "all_cores": every, "all_cores_stream_bounds": every_bounds,
              "all_cores_threads": every_threads}
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
