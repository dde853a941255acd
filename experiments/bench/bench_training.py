"""Benchmark of WaveNet training throughput against the machine's matmul peak.

    .venv/bin/python -m experiments.bench.bench_training [--quick] [--json PATH]
        [--presets small,medium] [--dtype float32|bfloat16] [--per_device_batch 8]
        [--targets 8000] [--also 4x16000] [--steps N] [--learning_steps 100]
        [--learning_targets 2000]
        [--baseline | --no-baseline] [--no-hugepages]

1. Peak: the best matmul rate of this backend in the training dtype (square jnp matmuls,
   2048 and 4096; 2*n^3 FLOPs each), in the same process, so training figures compare
   with the machine as it is during the run.
2. Training: the real data-parallel step (`wavegen.train.make_p_train_step`: pmap over all
   local devices, AdamW with warmup/cosine schedule, global-norm clipping) on random bins,
   per device `per_device_batch` windows of receptive_field - 1 + targets input samples.
   Samples/s counts scored targets across the global batch (devices x per_device_batch x
   targets) per second of step time; compile time and the first (warm-up) step are
   excluded; "best" is the fastest timed step and "typical" the median. Positions/s
   counts every input position the network runs over (targets + each window's
   receptive_field - 1 of context), the figure comparable with an implementation that
   pads causally and scores every position of an 8,000-sample crop. `--also` adds
   shapes, by default 4 x 16,000: the same 64,000 scored targets per step as 8 x 8,000,
   in windows of one whole 1 s chunk of targets at 16 kHz (what training takes by
   default, `train.targets` null), which carry half as much unscored context per
   target.
3. Learning: `small` with every default optimizer setting, trained for a fixed number
   of steps (`--learning_steps`, batch 8 x `--learning_targets`) on a fixed synthesized
   corpus (the demo's: `experiments.demo_corpus`, through the Beam pipeline at 16 kHz),
   then scored on its whole validation split: validation bits/sample over the unigram
   baseline (the validation targets' bin entropy). A regression in how fast the defaults
   learn per step shows here. Beside it (`--baseline`, the default) the plain-JAX
   WaveNet of the same shape (`experiments.bench.plain_wavenet`: one-hot input,
   PyTorch-default init, Adam at a constant 1e-3, no clipping or decay), trained for the
   same steps on the same batches and scored on the same targets; "ours_over_plain" is
   the ratio of the two val/unigram figures (<= 1: ours learns at least as fast per step).
4. FLOPs: model FLOPs per target sample, from the matmul shapes
   (`wavegen.model.flops_per_sample`):
       forward  = 2 * [layers * (K*R*G + G/2*(R+S)) - G/2*R + S*S + S*C]
       training = 3 * forward   (backward = 2 x forward)
   The left context each window carries (receptive_field - 1 samples, computed but not
   scored) and elementwise work are not counted, so the fraction of peak is a lower bound
   of the hardware's utilization (MFU-style).

By default the benchmark re-executes itself with glibc's transparent-huge-page malloc
(`wavegen.runtime.reexec_with_hugepage_malloc`), as a training entry point should; pass
--no-hugepages to measure the plain allocator.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

from experiments.bench.results import write_json


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.bench.bench_training",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps, small only")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--presets", default="", help="comma-separated (default: small,medium)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--per_device_batch", type=int, default=8)
    p.add_argument("--also", default="4x16000",
                   help="more shapes, PER_DEVICE_BATCHxTARGETS, comma-separated ('' none; "
                        "not with --quick)")
    p.add_argument("--targets", type=int, default=8000)
    p.add_argument("--steps", type=int, default=0, help="timed steps (default by preset)")
    p.add_argument("--learning_steps", type=int, default=100,
                   help="steps of the learning check (0: skip it)")
    p.add_argument("--learning_targets", type=int, default=2000)
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the plain-JAX WaveNet on the same batches in the "
                        "learning check and report both (default: on)")
    p.add_argument("--no-hugepages", action="store_true",
                   help="keep glibc's default malloc (4 KiB pages)")
    return p.parse_args(argv)


def matmul_peak(dtype: str = "float32", sizes=(2048, 4096), repeats=6) -> dict:
    import jax
    import jax.numpy as jnp

    best = {}
    for n in sizes:
        a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
        b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
        f = jax.jit(lambda x, y: x @ y)
        f(a, b).block_until_ready()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        best[n] = 2 * n ** 3 / min(times) / 1e9
    return {"dtype": dtype, "gflops": max(best.values()),
            "by_size": {str(k): v for k, v in best.items()}}


def train_throughput(preset: str, *, dtype: str, per_device_batch: int, targets: int,
                     steps: int) -> dict:
    import jax
    import numpy as np

    from wavegen.model import wavenet as wm
    from wavegen.training import steps as wt

    cfg = wm.preset(preset, num_classes=256, num_genres=0, dtype=dtype)
    rf = wm.receptive_field(cfg)
    optim = wt.OptimConfig(lr=1e-4, warmup_steps=10, total_steps=10_000)
    graphdef, state = wt.create_train_state(cfg, optim, seed=0)
    p_step = wt.make_p_train_step(graphdef, optim)
    state = wt.replicate(state)
    devices = jax.local_device_count()
    rng = np.random.default_rng(0)
    batch = {"audio": rng.integers(0, 256, (devices, per_device_batch, rf + targets),
                                   dtype=np.int32),
             "genre": np.zeros((devices, per_device_batch), np.int32)}
    batch = jax.device_put(batch, jax.tree.leaves(state)[0].sharding)
    t0 = time.perf_counter()
    state, metrics = p_step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    state, metrics = p_step(state, batch)  # one more warm-up step (allocator, caches)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = p_step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    loss = float(metrics["loss_bits"][0])
    if not np.isfinite(loss):
        raise RuntimeError(f"{preset}: non-finite loss {loss}")
    samples = devices * per_device_batch * targets
    positions = devices * per_device_batch * (rf - 1 + targets)
    flops = wm.flops_per_sample(cfg, training=True)
    best, typical = samples / min(times), samples / statistics.median(times)
    return {
        "preset": preset, "dtype": dtype, "devices": devices,
        "per_device_batch": per_device_batch, "targets": targets, "receptive_field": rf,
        "window": rf + targets, "compile_plus_first_step_s": round(compile_s, 2),
        "step_s": [round(t, 4) for t in times],
        "samples_per_s_best": best, "samples_per_s_typical": typical,
        # Input positions the network runs over (scored targets + each window's context):
        # the figure to set beside an implementation that pads and scores every position.
        "positions_per_s_best": positions / min(times),
        "flops_per_sample": flops,
        "gflops_best": best * flops / 1e9, "gflops_typical": typical * flops / 1e9,
    }


def learning_check(steps: int, targets: int, batch: int = 8, baseline: bool = True) -> dict:
    """Validation/unigram of `small` after `steps` default-optimizer steps on the demo's
    synthesized corpus (made and preprocessed in a temporary folder), and - `baseline` -
    of the plain-JAX WaveNet of the same shape (`experiments.bench.plain_wavenet`: one-hot
    input, PyTorch-default init, Adam at a constant 1e-3) trained for the same steps on the
    same batches (the same Window and seed) and scored on the same validation targets.

    Returns wavegen's figures at the top level (val_bits, unigram_bits, val_over_unigram,
    ...), the baseline's under "baseline", and "ours_over_plain": our val/unigram over
    the baseline's (<= 1: ours learns at least as fast per step)."""
    import subprocess
    import tempfile

    from experiments.demo_corpus import make_corpus
    from wavegen.data.dataset import open_dataset
    from wavegen.model import wavenet as wm

    with tempfile.TemporaryDirectory() as tmp:
        make_corpus(os.path.join(tmp, "songs"))
        subprocess.run([sys.executable, "-m", "beam_pipelines.preprocess",
                        f"--input={tmp}/songs", f"--output_dir={tmp}/data",
                        "--genre_from=folder", "--split=train:0.8,validation:0.2"],
                       check=True, capture_output=True)
        ds = open_dataset(os.path.join(tmp, "data"))
        cfg = wm.for_dataset(wm.preset("small"), ds.spec)
        result = {"preset": "small", "steps": steps, "batch": batch, "targets": targets,
                  **_learn_wavegen(ds, cfg, steps, targets, batch)}
        if baseline:
            plain = _learn_plain(ds, cfg, steps, targets, batch)
            result["baseline"] = plain
            result["ours_over_plain"] = result["val_over_unigram"] / plain["val_over_unigram"]
    return result


def _learning_batches(ds, cfg, targets: int, batch: int):
    """The learning check's training stream: both models read exactly these batches."""
    import jax

    from wavegen.data import input_pipeline as ip
    from wavegen.model import wavenet as wm

    window = ip.Window(ds.spec, wm.receptive_field(cfg), targets)
    return ip.train_batches(ds, window, seed=0,
                            per_device_batch=max(1, batch // jax.local_device_count()))


def _train_and_score(step, steps: int, evaluate) -> dict:
    """Runs step() `steps` times (it returns the train bits of its batch: a scalar, or one
    per device) and scores the result with evaluate() (a `wavegen.training.steps.evaluate`
    result). The first step compiles and is not timed."""
    import jax
    import numpy as np

    bits = jax.block_until_ready(step())
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        bits = step()
    jax.block_until_ready(bits)
    train_s = time.perf_counter() - t0
    ev = evaluate()
    return {"train_s": train_s, "step_s": train_s / max(1, steps - 1),
            "final_train_bits": float(np.ravel(np.asarray(bits))[0]),
            "val_bits": ev["nll_bits"], "unigram_bits": ev["unigram_bits"],
            "val_over_unigram": ev["nll_bits"] / ev["unigram_bits"],
            "val_targets": ev["targets"]}


def _learn_wavegen(ds, cfg, steps: int, targets: int, batch: int) -> dict:
    from experiments.bench import plain_wavenet as pw
    from wavegen.model import wavenet as wm
    from wavegen.training import steps as wt

    optim = wt.OptimConfig().for_run(steps)
    graphdef, state = wt.create_train_state(cfg, optim, seed=0)
    p_step, box = wt.make_p_train_step(graphdef, optim), [wt.replicate(state)]
    batches = _learning_batches(ds, cfg, targets, batch)

    def step():
        box[0], metrics = p_step(box[0], next(batches))
        return metrics["loss_bits"]

    p_eval = wt.make_p_eval_step(graphdef)
    scores = _train_and_score(step, steps, lambda: wt.evaluate(
        p_eval, box[0].params, pw.split_batches(ds, wm.receptive_field(cfg))))
    return {"optim": dataclasses.asdict(optim), **scores}


def _learn_plain(ds, cfg, steps: int, targets: int, batch: int) -> dict:
    from experiments.bench import plain_wavenet as pw

    plain = pw.PlainConfig.like(cfg)
    box, train_step = [pw.create_state(plain, seed=0)], pw.make_train_step(plain)
    batches = _learning_batches(ds, cfg, targets, batch)

    def step():
        box[0], bits = train_step(box[0], *pw.flat_batch(next(batches)))
        return bits

    scores = _train_and_score(step, steps, lambda: pw.evaluate_split(
        plain, box[0].params, ds, per_device_batch=4))
    return {"model": "plain JAX WaveNet (experiments/bench/plain_wavenet.py)",
            "optim": {"adam_lr": plain.lr, "clip_norm": 0.0, "weight_decay": 0.0},
            **scores}


def print_learning(learning: dict) -> None:
    head = (f"\nlearning: small, {learning['steps']} steps of {learning['batch']} x "
            f"{learning['targets']} on the demo corpus (same batches), whole validation split")
    print(head)
    rows = [("wavegen defaults", learning)]
    if learning.get("baseline"):
        rows.append(("plain JAX WaveNet", learning["baseline"]))
    print(f"  {'model':<18} {'val bits':>9} {'unigram':>8} {'val/unigram':>12} "
          f"{'s/step':>7}")
    for name, r in rows:
        print(f"  {name:<18} {r['val_bits']:>9.3f} {r['unigram_bits']:>8.3f} "
              f"{r['val_over_unigram']:>11.3f}x {r['step_s']:>7.2f}")
    if learning.get("baseline"):
        print(f"  ours / plain (val/unigram): {learning['ours_over_plain']:.3f}"
              " (<= 1: ours learns at least as fast per step)", flush=True)


def run_shapes(args, presets: list[str], default_steps: dict) -> list[dict]:
    """`train_throughput` for every preset and shape (--per_device_batch x --targets, then
    --also)."""
    shapes = [(args.per_device_batch, args.targets)]
    if args.also and not args.quick:
        shapes += [tuple(int(x) for x in shape.split("x")) for shape in args.also.split(",")]
    rows = []
    for name, (per_device_batch, targets) in ((n, s) for n in presets for s in shapes):
        steps = args.steps or (3 if args.quick else default_steps.get(name, 5))
        r = train_throughput(name, dtype=args.dtype, per_device_batch=per_device_batch,
                             targets=targets, steps=steps)
        rows.append(r)
        print(f"  {name} {per_device_batch}x{targets}: step times {r['step_s']}", flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.no_hugepages:
        from wavegen.runtime import reexec_with_hugepage_malloc

        reexec_with_hugepage_malloc()
    import jax

    presets = [p for p in (args.presets or ("small" if args.quick else "small,medium"))
               .split(",") if p]
    default_steps = {"tiny": 20, "small": 8, "medium": 5, "large": 3}
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}: "
          f"{jax.local_device_count()} device(s), {os.cpu_count()} CPU cores, "
          f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}", flush=True)
    peak = matmul_peak(args.dtype)
    print(f"{args.dtype} matmul peak: {peak['gflops']:.0f} GFLOP/s "
          f"({', '.join(f'{n}: {g:.0f}' for n, g in peak['by_size'].items())})", flush=True)
    rows = run_shapes(args, presets, default_steps)
    # Measured again after the training runs, and the higher of the two taken: a peak
    # that a moment of load lowered would inflate every fraction of it.
    again = matmul_peak(args.dtype)
    print(f"{args.dtype} matmul peak, measured again: {again['gflops']:.0f} GFLOP/s", flush=True)
    if again["gflops"] > peak["gflops"]:
        peak = again
    for r in rows:
        r["fraction_of_peak_best"] = r["gflops_best"] / peak["gflops"]
        r["fraction_of_peak_typical"] = r["gflops_typical"] / peak["gflops"]
        # The same FLOPs counted over every position the network runs (context included).
        r["fraction_of_peak_positions"] = (r["positions_per_s_best"] * r["flops_per_sample"]
                                           / 1e9 / peak["gflops"])
    header = (f"{'preset':<8} {'dtype':<9} {'batch':>11} {'samples/s best':>15} "
              f"{'typical':>9} {'positions/s':>12} {'MFLOP/sample':>13} {'GFLOP/s':>8} "
              f"{'of peak':>8} {'all pos.':>8}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        batch = f"{r['devices'] * r['per_device_batch']}x{r['targets']}"
        print(f"{r['preset']:<8} {r['dtype']:<9} {batch:>11} {r['samples_per_s_best']:>15,.0f} "
              f"{r['samples_per_s_typical']:>9,.0f} {r['positions_per_s_best']:>12,.0f} "
              f"{r['flops_per_sample'] / 1e6:>13.2f} "
              f"{r['gflops_best']:>8.0f} {r['fraction_of_peak_best']:>8.1%} "
              f"{r['fraction_of_peak_positions']:>8.1%}")
    learning = None
    if args.learning_steps:
        learning = learning_check(args.learning_steps if not args.quick else 30,
                                  args.learning_targets, baseline=args.baseline)
        print_learning(learning)
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "backend": jax.devices()[0].platform,
                          "device": str(jax.devices()[0].device_kind),
                          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")},
              "jax": jax.__version__, "matmul_peak": peak, "train": rows,
              "learning": learning}
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
