"""Benchmark of the pipeline on a cluster against the local runner, same songs, same run.

    .venv/bin/python -m experiments.bench.bench_cluster [--quick] [--json PATH]

FMA-like clips (30 s 44.1 kHz stereo mp3, from experiments.bench.bench_pipeline) through the
pipeline command, each configuration on N_SMALL and N_LARGE songs (40 and 200):
- local: the default runner (FnApiRunner, multi-process) with --direct_num_workers=2;
- dask: the loopback cluster of scripts/cluster.sh (scheduler + 2 one-thread workers),
  started once beforehand (its start-up is reported on its own), and given one untimed
  job first (fresh workers import the pipeline's modules on their first job; reported).
Local and cluster runs alternate; each point is the fastest of --repeats runs (3).
songs/s = N_LARGE / wall; marginal cost per song = (wall_large - wall_small) /
(N_LARGE - N_SMALL); fixed cost of a run = wall_small - N_SMALL * marginal (the command's
start-up, the job's submission and its final steps). Goal: the cluster's marginal cost per
song at most 1.5x the local runner's, both measured here in the same run.
Spark and Flink are not measured: Beam's job servers for apache-beam 2.77.0 are not served
by the Maven Central this machine reaches (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from experiments.bench.bench_pipeline import make_mp3s
from experiments.bench.results import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER_SH = os.path.join(ROOT, "scripts", "cluster.sh")
NOT_MEASURED = ("not measured: Maven Central (as reachable here) serves no Beam job server "
                "for apache-beam 2.77.0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def worker_peak_rss_mb(cluster_dir: str) -> list[int]:
    """Peak resident memory (VmHWM) of each running dask worker process, in MB."""
    peaks = []
    folder = os.path.join(cluster_dir, "dask")
    for name in sorted(os.listdir(folder)):
        if name.startswith("worker") and name.endswith(".pid"):
            with open(os.path.join(folder, name)) as f, \
                    open(f"/proc/{f.read().strip()}/status") as status:
                kb = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
            peaks.append(round(kb / 1024))
    return peaks


def costs(walls: dict, n_small: int, n_large: int) -> dict:
    marginal = (walls[n_large] - walls[n_small]) / (n_large - n_small)
    return {"wall_small_s": round(walls[n_small], 2), "wall_large_s": round(walls[n_large], 2),
            "songs_per_s": round(n_large / walls[n_large], 2),
            "marginal_ms_per_song": round(1000 * marginal, 1),
            "fixed_s": round(walls[n_small] - n_small * marginal, 2)}


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 and 40 songs")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--repeats", type=int, default=3, help="runs per point; the fastest counts")
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


def _start_cluster(env):
    """Starts the dask cluster; (its pipeline flags, start-up seconds)."""
    t0 = time.perf_counter()
    start = subprocess.run([CLUSTER_SH, "dask", "start"], env=env, capture_output=True,
                           text=True)
    seconds = time.perf_counter() - t0
    if start.returncode != 0:
        raise RuntimeError(f"cluster.sh dask start: {start.stderr.strip()}")
    return start.stdout.strip().splitlines()[-1].split(), seconds


def _time_runs(folders, out, flags, repeats):
    """Local and cluster runs interleaved, so a change in the machine's load (shared
    machines) hits both alike; the fastest of the repeats counts."""
    local, dask = {}, {}
    for _ in range(repeats):
        for n in folders:
            wall = run(folders[n], out, ["--direct_num_workers=2"])
            local[n] = min(wall, local.get(n, wall))
            wall = run(folders[n], out, flags)
            dask[n] = min(wall, dask.get(n, wall))
    return local, dask


def _measure(work, env, n_small, n_large, repeats):
    folders = _song_folders(work, (n_small, n_large))
    out = os.path.join(work, "out")
    try:
        flags, cluster_start_s = _start_cluster(env)
        # The first job on fresh workers also imports the pipeline's modules there.
        first_job_s = run(folders[n_small], out, flags)
        local, dask = _time_runs(folders, out, flags, repeats)
        worker_peak_mb = worker_peak_rss_mb(env["WAVEGEN_CLUSTER_DIR"])
    finally:
        subprocess.run([CLUSTER_SH, "dask", "stop"], env=env, capture_output=True)
    res = {"songs_small": n_small, "songs_large": n_large,
           "local_2w": costs(local, n_small, n_large),
           "dask_2w": costs(dask, n_small, n_large),
           "dask_cluster_start_s": round(cluster_start_s, 2),
           "dask_first_job_small_s": round(first_job_s, 2), "repeats": repeats,
           "dask_worker_peak_rss_mb": worker_peak_mb,
           "spark_2w": NOT_MEASURED, "flink_2slots": NOT_MEASURED}
    res["dask_over_local_marginal"] = round(res["dask_2w"]["marginal_ms_per_song"]
                                            / res["local_2w"]["marginal_ms_per_song"], 2)
    return res


def _print(res):
    n_small, n_large = res["songs_small"], res["songs_large"]
    for key, label in (("local_2w", "local runner, 2 workers"), ("dask_2w", "dask, 2 workers")):
        r = res[key]
        print(f"{label}: {r['songs_per_s']:.2f} songs/s ({n_large} songs, {r['wall_large_s']} s), "
              f"marginal {r['marginal_ms_per_song']} ms/song, fixed {r['fixed_s']} s per run")
    print(f"dask cluster start-up (once): {res['dask_cluster_start_s']} s; first job on "
          f"fresh workers ({n_small} songs): {res['dask_first_job_small_s']} s; marginal cost "
          f"dask / local: {res['dask_over_local_marginal']}x (goal <= 1.5x)")
    print(f"peak RSS per dask worker after all runs: {res['dask_worker_peak_rss_mb']} MB")
    print(f"spark, flink: {NOT_MEASURED}")


def main(argv=None):
    args = _parse(argv)
    n_small, n_large = (10, 40) if args.quick else (40, 200)
    work = tempfile.mkdtemp(prefix="wavegen-bench-cluster-")
    env = dict(os.environ, WAVEGEN_CLUSTER_DIR=os.path.join(work, "cluster"),
               WAVEGEN_DASK_PORT=str(_free_port()),
               WAVEGEN_DASK_DASHBOARD_PORT=str(_free_port()))
    try:
        res = _measure(work, env, n_small, n_large, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print(res)
    write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
