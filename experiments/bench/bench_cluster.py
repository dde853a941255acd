"""Benchmark of the pipeline on Flink and Spark clusters against the local runner, same
songs, same run.

    .venv/bin/python -m experiments.bench.bench_cluster [--quick] [--engines flink,spark]
        [--repeats 2] [--json PATH]

FMA-like clips (30 s 44.1 kHz stereo mp3, from experiments.bench.bench_pipeline) through the
pipeline command, each configuration on N_SMALL and N_LARGE songs (40 and 200):
- local: the default runner (FnApiRunner, multi-process) with --direct_num_workers=2;
- flink: the session cluster of scripts/cluster.sh (one TaskManager, 2 slots);
- spark: the standalone cluster of scripts/cluster.sh (one worker, 2 cores).
One cluster runs at a time, started beforehand (its start-up is reported on its own) and
given one untimed job first (fresh SDK workers import the pipeline's modules; reported).
Local and cluster runs alternate, so a change in the machine's load hits both alike; each
point is the fastest of --repeats runs, and the local runner's points are the fastest over
all of its runs. songs/s = N_LARGE / wall; marginal cost per song = (wall_large -
wall_small) / (N_LARGE - N_SMALL); fixed cost of a run = wall_small - N_SMALL * marginal (the
command's start-up, the job's submission, the cluster's scheduling, the final steps). Goal:
each cluster's marginal cost per song at most 1.5x the local runner's, both measured here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from experiments import cluster_demo
from experiments.bench.bench_pipeline import make_mp3s
from experiments.bench.results import write_json

ROOT = cluster_demo.ROOT
GOAL = 1.5


def run(folder: str, out: str, flags: list[str]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "beam_pipelines.preprocess", f"--input={folder}",
           f"--output_dir={out}", *flags]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"pipeline failed ({' '.join(flags)}): {res.stderr[-2000:]}")
    return wall


def costs(walls: dict, n_small: int, n_large: int) -> dict:
    marginal = (walls[n_large] - walls[n_small]) / (n_large - n_small)
    return {"wall_small_s": round(walls[n_small], 2), "wall_large_s": round(walls[n_large], 2),
            "songs_per_s": round(n_large / walls[n_large], 2),
            "marginal_ms_per_song": round(1000 * marginal, 1),
            "fixed_s": round(walls[n_small] - n_small * marginal, 2)}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 and 40 songs")
    p.add_argument("--engines", default=",".join(cluster_demo.ENGINES))
    p.add_argument("--json", help="write the results here")
    p.add_argument("--repeats", type=int, default=2, help="runs per point; the fastest counts")
    return p.parse_args(argv)


def _song_folders(work, sizes):
    """A folder of the first n songs for each n in `sizes` (hard links to one set)."""
    mp3s = make_mp3s(os.path.join(work, "mp3"), max(sizes))
    folders = {}
    for n in sizes:
        folders[n] = os.path.join(work, f"songs{n}")
        os.makedirs(folders[n])
        for path in mp3s[:n]:
            os.link(path, os.path.join(folders[n], os.path.basename(path)))
    return folders


def _measure_engine(engine, folders, out, repeats, local):
    """Times one engine's cluster against the local runner; adds to `local` (fastest)."""
    env = cluster_demo.private_env(engine, os.path.join(os.path.dirname(out), f"{engine}-run"))
    c = cluster_demo.start(engine, env)
    try:
        n_small = min(folders)
        first_job_s = run(folders[n_small], out, c.flags)
        walls = {}
        for _ in range(repeats):
            for n in folders:
                wall = run(folders[n], out, ["--direct_num_workers=2"])
                local[n] = min(wall, local.get(n, wall))
                wall = run(folders[n], out, c.flags)
                walls[n] = min(wall, walls.get(n, wall))
        states = [j["state"] for j in c.jobs()]
    finally:
        cluster_demo.cluster(engine, "stop", env)
    return walls, {"cluster_start_s": round(c.start_seconds, 2),
                   "first_job_small_s": round(first_job_s, 2), "jobs": len(states),
                   "jobs_finished": states.count("FINISHED"), "flags": c.flags}


def measure(work, engines, n_small, n_large, repeats):
    folders = _song_folders(work, (n_small, n_large))
    out = os.path.join(work, "out")
    local, res = {}, {"songs_small": n_small, "songs_large": n_large, "repeats": repeats}
    for engine in engines:
        walls, info = _measure_engine(engine, folders, out, repeats, local)
        res[engine] = {**costs(walls, n_small, n_large), **info}
    res["local"] = costs(local, n_small, n_large)
    for engine in engines:
        res[engine]["marginal_over_local"] = round(
            res[engine]["marginal_ms_per_song"] / res["local"]["marginal_ms_per_song"], 2)
    return res


LABELS = {"local": "local runner, 2 workers", "flink": "Flink, 1 TaskManager x 2 slots",
          "spark": "Spark, 1 worker x 2 cores"}


def _print(res, engines):
    n_small, n_large = res["songs_small"], res["songs_large"]
    for key in ("local", *engines):
        r = res[key]
        print(f"{LABELS[key]}: {r['songs_per_s']:.2f} songs/s ({n_large} songs, "
              f"{r['wall_large_s']} s), marginal {r['marginal_ms_per_song']} ms/song, "
              f"fixed {r['fixed_s']} s per run")
    for engine in engines:
        r = res[engine]
        print(f"{engine}: cluster start-up {r['cluster_start_s']} s (jars already "
              f"downloaded); first job on fresh workers ({n_small} songs) "
              f"{r['first_job_small_s']} s; marginal cost {engine} / local "
              f"{r['marginal_over_local']}x (goal <= {GOAL}x); {r['jobs_finished']} of "
              f"{r['jobs']} jobs FINISHED on the engine's record")


def main(argv=None):
    args = _parse(argv)
    engines = [e for e in args.engines.split(",") if e]
    n_small, n_large = (10, 40) if args.quick else (40, 200)
    work = tempfile.mkdtemp(prefix="wavegen-bench-cluster-")
    try:
        res = measure(work, engines, n_small, n_large, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(res, engines)
    write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
