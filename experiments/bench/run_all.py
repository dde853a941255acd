"""`make bench`: every benchmark, one table, also written as JSON.

    .venv/bin/python -m experiments.bench.run_all [--quick] [--json bench_results/bench.json]

Runs, each in its own process (so each gets a fresh allocator and JAX runtime):
- experiments.bench.bench_pipeline: pipeline ms/song against its bare floor, peak memory for a
  1-hour WAV against a 30 s clip, zip/HTTP/folder sources with 1 and 2 workers;
- experiments.bench.bench_training: training samples/s and FLOP/s against the matmul peak
  (small and medium, batch 8 x 8,000), and validation/unigram of `small` after 100
  default-optimizer steps on the demo's synthesized corpus;
- experiments.bench.bench_generation: generation samples/s at batch 1 and 16, cached/naive ratio.
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
# --only name -> module in this folder
BENCHES = {"pipeline": "bench_pipeline", "train": "bench_training", "generate": "bench_generation"}


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


def table(r: dict) -> list[tuple[str, str, str]]:
    """(what, measured, reference/goal) rows."""
    rows = []
    p = r.get("pipeline")
    if p:
        c, m, s = p["cost"], p["memory"], p["sources"]
        rows += [
            ("pipeline: marginal ms/song (30 s 44.1 kHz stereo mp3, 1 worker)",
             f"{c['marginal_s_per_song'] * 1000:.1f} ms ({c['ratio_to_floor']:.2f}x floor "
             f"{c['floor_s_per_song'] * 1000:.1f} ms)", "<= 1.5x floor, < 60 ms; source 2,500 ms"),
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
    t = r.get("train")
    if t:
        rows.append(("train: fp32 matmul peak", f"{t['matmul_peak']['gflops']:.0f} GFLOP/s",
                     "~385 GFLOP/s (issue)"))
        ref = {"small": 39_000, "medium": 11_000}
        for row in t["train"]:
            rows.append((f"train: {row['preset']}, batch {row['devices'] * row['per_device_batch']}"
                         f" x {row['targets']}",
                         f"{row['samples_per_s_best']:,.0f} samples/s, "
                         f"{row['gflops_best']:.0f} GFLOP/s ({row['fraction_of_peak_best']:.0%} "
                         "of peak)",
                         f"PyTorch ~{ref.get(row['preset'], 0):,}/s; goal 1.5x"))
        lr_ = t.get("learning")
        if lr_:
            rows.append((f"train: small, {lr_['steps']} default steps of 8 x {lr_['targets']}"
                         " (demo corpus): validation / unigram",
                         f"{lr_['val_over_unigram']:.3f}x ({lr_['val_bits']:.3f} / "
                         f"{lr_['unigram_bits']:.3f} bits)",
                         "lower is better; a rise means slower learning"))
    g = r.get("generate")
    if g:
        for key, label in (("small_b1", "generate: small, batch 1"),
                           ("small_b16", "generate: small, batch 16 (total)"),
                           ("medium_b1", "generate: medium, batch 1")):
            goal = g["goals"][key]
            rows.append((label, f"{goal['best']:,.0f} samples/s",
                         f">= {goal['goal']:,} ({'met' if goal['met'] else 'NOT met'})"))
        goal = g["goals"]["cached_over_naive"]
        rows.append(("generate: cached / naive, small batch 1", f"{goal['best']:,.0f}x",
                     f">= {goal['goal']}x ({'met' if goal['met'] else 'NOT met'})"))
    return rows


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
    lines = [f"\nwavegen benchmarks on {platform.node()}: {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores{' (quick)' if args.quick else ''}",
             f"{'what':<{width}}  {'measured':<{mwidth}}  reference / goal",
             "-" * (width + mwidth + 22)]
    lines += [f"{w:<{width}}  {m:<{mwidth}}  {g}" for w, m, g in rows]
    lines.append(f"total {time.time() - t0:.0f} s ("
                 + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")")
    print("\n".join(lines))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"results": results, "seconds": seconds, "table": rows,
                   "cpus": os.cpu_count(), "quick": args.quick}, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
