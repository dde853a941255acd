"""`make bench`: every benchmark, one table, also written as JSON.

    .venv/bin/python -m experiments.bench.run_all [--quick] [--json bench_results/bench.json]

Runs, each in its own process (so each gets a fresh allocator and JAX runtime):
- experiments.bench.bench_pipeline: pipeline ms/song against its bare floor, peak memory for a
  1-hour WAV against a 30 s clip, zip/HTTP/folder sources with 1 and 2 workers;
- experiments.bench.bench_cluster: songs/s, marginal and fixed cost per run of the pipeline
  on a local Flink cluster (2 slots) and a Spark cluster (2 cores) against the local runner
  (2 workers);
- experiments.bench.bench_training: training samples/s and FLOP/s against the matmul peak
  (small and medium, batch 8 x 8,000), and validation/unigram of `small` after 100
  default-optimizer steps on the demo's synthesized corpus;
- experiments.bench.bench_generation: generation samples/s at batch 1 and 16 on one thread
  and on every core, each against its weight-streaming bound; cached/naive ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Figures typed in from outside this run, each with where it comes from. They are printed
# in their own column, labelled "quoted", and never mixed with what the run measured.
QUOTED = {
    "source_ms_per_song": (2500, "the original project's serial preprocessing (issue 2)"),
    "pytorch_small_targets_per_s": (14_962, "r9y9-style PyTorch WaveNet, 2-core AVX2 EPYC "
                                            "(issue 14)"),
    "pytorch_medium_targets_per_s": (3_968, "same reference and machine (issue 14)"),
    "pytorch_generate_small_b1": (184, "same reference and machine (issue 14)"),
    "pytorch_generate_small_b16": (2_443, "same reference and machine (issue 14)"),
}


def quoted(key: str, unit: str) -> str:
    value, source = QUOTED[key]
    return f"quoted: {value:,} {unit}, {source}"


def cpu_facts() -> dict:
    """The machine a figure was measured on: CPU model, vector extensions, cores."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", "x86_64"):
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    ext = [name for name, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"),
                                   ("AVX-512 BF16", "avx512_bf16"), ("AMX", "amx_tile"))
           if flag in flags]
    return {"model": model, "extensions": ext, "cores": os.cpu_count()}


# --only name -> module in this folder
BENCHES = {"pipeline": "bench_pipeline", "cluster": "bench_cluster", "train": "bench_training",
           "generate": "bench_generation"}


def run_bench(name: str, quick: bool) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, f"{name}.json")
        cmd = [sys.executable, "-m", f"experiments.bench.{BENCHES[name]}", "--json", out]
        if quick:
            cmd.append("--quick")
        print(f"\n==> {' '.join(cmd[1:])}", flush=True)
        t0 = time.time()
        subprocess.run(cmd, cwd=ROOT, check=True)
        with open(out) as f:
            return json.load(f), time.time() - t0


def _pipeline_rows(p: dict) -> list[tuple[str, str, str]]:
    c, m, s = p["cost"], p["memory"], p["sources"]
    rows = [
        ("pipeline: marginal ms/song (30 s 44.1 kHz stereo mp3, 1 worker)",
         f"{c['marginal_s_per_song'] * 1000:.1f} ms ({c['ratio_to_floor']:.2f}x floor "
         f"{c['floor_s_per_song'] * 1000:.1f} ms)",
         "goal <= 1.5x floor, < 60 ms; " + quoted("source_ms_per_song", "ms/song")),
        ("pipeline: peak RSS, 1 h WAV vs 30 s clip",
         f"+{m['rss_growth_mb']} MB ({m['peak_rss_long_mb']} vs {m['peak_rss_clip_mb']} MB)",
         "<= +150 MB"),
    ]
    for key in ("folder_1w", "zip_1w", "zip_2w", "http_1w", "http_2w"):
        rows.append((f"sources: {s['songs']} songs, {key.replace('_', ', ')}",
                     f"{s[key]['songs_per_s']:.1f} songs/s "
                     f"({s[key]['marginal_ms_per_song']:.1f} ms/song marginal)", ""))
    rows.append(("sources: zip / folder marginal cost", f"{s['zip_over_folder']:.2f}x",
                 "<= 1.2x"))
    return rows


def _cluster_rows(k: dict) -> list[tuple[str, str, str]]:
    from experiments.bench.bench_cluster import GOAL, LABELS

    engines = [e for e in ("flink", "spark") if e in k]
    rows = []
    for key in ("local", *engines):
        c = k[key]
        rows.append((f"cluster: {k['songs_large']} songs (30 s stereo mp3), {LABELS[key]}",
                     f"{c['songs_per_s']:.2f} songs/s, {c['marginal_ms_per_song']:.1f} "
                     f"ms/song marginal, {c['fixed_s']:.1f} s fixed per run", ""))
    for engine in engines:
        c = k[engine]
        rows.append((f"cluster: {engine} / local marginal cost per song",
                     f"{c['marginal_over_local']:.2f}x",
                     f"<= {GOAL}x ({'met' if c['marginal_over_local'] <= GOAL else 'NOT met'})"))
        rows.append((f"cluster: {engine} start-up; first job (fresh workers)",
                     f"{c['cluster_start_s']:.1f} s; {c['first_job_small_s']:.1f} s", ""))
    return rows


def _train_rows(t: dict) -> list[tuple[str, str, str]]:
    rows = [("train: fp32 matmul peak (measured in this run)",
             f"{t['matmul_peak']['gflops']:.0f} GFLOP/s", "")]
    for row in t["train"]:
        ref = f"pytorch_{row['preset']}_targets_per_s"
        # The reference scores 8 x 8,000 targets per step: compare rows with as many.
        same_work = row["devices"] * row["per_device_batch"] * row["targets"] == 64_000
        over = (f"; measured / quoted {row['samples_per_s_best'] / QUOTED[ref][0]:.2f}x"
                if ref in QUOTED and same_work else "")
        rows.append((f"train: {row['preset']}, batch {row['devices'] * row['per_device_batch']}"
                     f" x {row['targets']} scored targets",
                     f"{row['samples_per_s_best']:,.0f} targets/s, "
                     f"{row['gflops_best']:.0f} GFLOP/s ({row['fraction_of_peak_best']:.0%} "
                     f"of peak; over every position {row['fraction_of_peak_positions']:.0%})",
                     (quoted(ref, "targets/s") + over) if ref in QUOTED else ""))
    learning = t.get("learning")
    if learning:
        rows.append((f"train: small, {learning['steps']} default steps of 8 x "
                     f"{learning['targets']} (demo corpus): validation / unigram",
                     f"{learning['val_over_unigram']:.3f}x ({learning['val_bits']:.3f} / "
                     f"{learning['unigram_bits']:.3f} bits)",
                     "lower is better; a rise means slower learning"))
        plain = learning.get("baseline")
        if plain:
            rows.append((f"train: plain JAX WaveNet, same {learning['steps']} steps, same "
                         "batches: validation / unigram",
                         f"{plain['val_over_unigram']:.3f}x ({plain['val_bits']:.3f} / "
                         f"{plain['unigram_bits']:.3f} bits); ours / plain "
                         f"{learning['ours_over_plain']:.3f}",
                         "ours / plain <= 1: the defaults learn at least as fast per step"))
    return rows


def _generate_rows(g: dict, peak: float | None = None) -> list[tuple[str, str, str]]:
    rows = []
    every = g.get("all_cores") or {}
    threads = g.get("cpu_threads")
    by_case = {(r["preset"], r["batch"]): r for r in g["generate"] if r["kind"] == "cached"}
    for key, label, case in (("small_b1", "generate: small, batch 1", ("small", 1)),
                             ("small_b16", "generate: small, batch 16 (total)", ("small", 16)),
                             ("medium_b1", "generate: medium, batch 1", ("medium", 1))):
        goal = g["goals"][key]
        ref = f"pytorch_generate_{key}"
        flops = by_case[case].get("gflops_best")
        measured = f"{goal['best']:,.0f} samples/s"
        if threads:
            measured += f" on {threads} thread(s)"
        if key in every:
            every_bound = (g.get("all_cores_stream_bounds") or {}).get(key)
            n = g.get("all_cores_threads")
            measured += (f" (every core{f', {n} threads' if n else ''}: {every[key]:,.0f}"
                         + (f", bound {every_bound:,.0f})" if every_bound else ")"))
        if flops and peak:
            measured += f", {flops / peak:.1%} of peak"
        bound = by_case[case].get("stream_bound_samples_per_s")
        if bound:
            measured += (f", {by_case[case]['of_stream_bound']:.0%} of the weight-streaming "
                         f"bound {bound:,.0f}")
        rows.append((label, measured,
                     f"goal >= {goal['goal']:,} ({'met' if goal['met'] else 'NOT met'})"
                     + (f"; {quoted(ref, 'samples/s')}" if ref in QUOTED else "")))
    goal = g["goals"]["cached_over_naive"]
    rows.append(("generate: cached / naive, small batch 1", f"{goal['best']:,.0f}x",
                 f">= {goal['goal']}x ({'met' if goal['met'] else 'NOT met'})"))
    return rows


_SECTIONS = (("pipeline", _pipeline_rows), ("cluster", _cluster_rows),
             ("train", _train_rows), ("generate", _generate_rows))


def table(r: dict) -> list[tuple[str, str, str]]:
    """(what, measured, reference/goal) rows, for the benchmarks that ran."""
    peak = (r.get("train") or {}).get("matmul_peak", {}).get("gflops")
    out = []
    for key, rows in _SECTIONS:
        if r.get(key):
            out += rows(r[key], peak) if key == "generate" else rows(r[key])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default="bench_results/bench.json")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    args = p.parse_args(argv)
    t0 = time.time()
    results, seconds = {}, {}
    for name in args.only.split(","):
        results[name], seconds[name] = run_bench(name, args.quick)
    rows = table(results)
    width = max(len(w) for w, _, _ in rows)
    mwidth = max(len(m) for _, m, _ in rows)
    cpu = cpu_facts()
    peak = (results.get("train") or {}).get("matmul_peak", {}).get("gflops")
    lines = [f"\nwavegen benchmarks on {platform.node()}: {cpu['model']} "
             f"({', '.join(cpu['extensions']) or 'no AVX2'}), {cpu['cores']} cores"
             + (f", fp32 matmul peak {peak:.0f} GFLOP/s" if peak else "")
             + (" (quick)" if args.quick else ""),
             f"{'what':<{width}}  {'measured in this run':<{mwidth}}  goal / quoted reference",
             "-" * (width + mwidth + 22)]
    lines += [f"{w:<{width}}  {m:<{mwidth}}  {g}" for w, m, g in rows]
    lines.append(f"total {time.time() - t0:.0f} s ("
                 + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")")
    print("\n".join(lines))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"results": results, "seconds": seconds, "table": rows, "cpu": cpu,
                   "quoted": {k: {"value": v, "source": s} for k, (v, s) in QUOTED.items()},
                   "quick": args.quick}, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
