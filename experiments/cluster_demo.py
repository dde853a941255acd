"""The pipeline on a cluster started on this machine, checked against the local runner.

    .venv/bin/python -m experiments.cluster_demo [--dir cluster-demo] [--songs_per_style 4]

Makes the demo corpus (`experiments.demo_corpus`), starts the loopback dask cluster
(`scripts/cluster.sh dask start`), runs `python -m beam_pipelines.preprocess` on it with
the flags the script prints and once on the default local runner, prints where the job
ran (scheduler, dashboard, tasks per worker), compares the two datasets (decoded
examples, splits, failure reasons, counts) and stops the cluster, also on failure.
Exits 1 if the datasets differ. (`make cluster-demo`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_SH = os.path.join(ROOT, "scripts", "cluster.sh")
PY = sys.executable


def cluster(action: str, name: str = "dask", env=None) -> subprocess.CompletedProcess:
    return subprocess.run([CLUSTER_SH, name, action], cwd=ROOT, env=env, text=True,
                          capture_output=True)


@contextlib.contextmanager
def running_cluster(name: str = "dask", env=None):
    """Starts the cluster; yields its lines (info, UI address, Beam flags); stops it."""
    try:
        res = cluster("start", name, env)
        if res.returncode != 0:
            raise RuntimeError(f"scripts/cluster.sh {name} start failed: "
                               f"{(res.stderr or res.stdout).strip()}")
        yield res.stdout.strip().splitlines()
    finally:
        cluster("stop", name, env)


@contextlib.contextmanager
def task_stream(scheduler: str):
    """Records the tasks the dask scheduler runs meanwhile: yields a list, filled on exit
    with (worker address, task key prefix) pairs."""
    from distributed import Client, get_task_stream

    tasks: list = []
    with Client(scheduler, timeout=30) as client:
        with get_task_stream(client=client) as ts:
            yield tasks
        time.sleep(0.5)  # the last completions reach the plugin
        tasks.extend((t["worker"], _prefix(t["key"])) for t in ts.data)


def _prefix(key) -> str:
    key = key[0] if isinstance(key, tuple) else key
    return str(key).rsplit("-", 1)[0]


def preprocess(songs: str, out: str, *flags: str, timeout: float = 1800):
    return subprocess.run([PY, "-m", "beam_pipelines.preprocess", f"--input={songs}",
                           f"--output_dir={out}", "--genre_from=folder", *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def dataset_view(data_dir: str) -> dict:
    """What must agree between runners: decoded examples per split in file order, the
    failure reasons per song and the summary's counts."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(data_dir)
    splits = {}
    for name in sorted(builder.info.splits):
        ds = builder.as_dataset(split=name, shuffle_files=False)
        splits[name] = [(ex["song_id"].decode(), int(ex["chunk_index"]), int(ex["genre"]),
                         ex["audio"].tobytes()) for ex in tfds.as_numpy(ds)]
    with open(os.path.join(data_dir, "failed.jsonl")) as f:
        failed = {r["song_id"]: r["reason"] for r in map(json.loads, f) if r}
    with open(os.path.join(data_dir, "summary.json")) as f:
        summary = json.load(f)
    for timing in ("seconds_elapsed", "songs_per_s"):
        summary.pop(timing, None)
    shards = sorted(p for p in os.listdir(data_dir) if ".tfrecord-" in p)
    return {"splits": splits, "failed": failed, "summary": summary, "shards": shards}


def differences(a: dict, b: dict) -> list[str]:
    out = []
    for key in ("failed", "summary", "shards"):
        if a[key] != b[key]:
            out.append(f"{key} differ: {a[key]} vs {b[key]}")
    if a["splits"].keys() != b["splits"].keys():
        out.append(f"splits differ: {sorted(a['splits'])} vs {sorted(b['splits'])}")
    for name in a["splits"].keys() & b["splits"].keys():
        if a["splits"][name] != b["splits"][name]:
            out.append(f"split {name}: examples differ ({len(a['splits'][name])} vs "
                       f"{len(b['splits'][name])})")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="cluster-demo")
    p.add_argument("--songs_per_style", type=int, default=4)
    args = p.parse_args(argv)
    from experiments.demo_corpus import make_corpus

    shutil.rmtree(args.dir, ignore_errors=True)
    songs = os.path.join(args.dir, "songs")
    info = make_corpus(songs, args.songs_per_style)
    print(f"corpus: {info['songs']} songs + {info['corrupt']} corrupt file -> {songs}")
    local_out, cluster_out = (os.path.join(args.dir, d) for d in ("local", "cluster"))
    t0 = time.time()
    res = preprocess(songs, local_out)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return 1
    print(f"local runner (FnApiRunner, multi-process): {time.time() - t0:.1f} s")
    with running_cluster() as lines:
        ui, flags = lines[-2], lines[-1].split()
        scheduler = next(f.split("=", 1)[1] for f in flags
                         if f.startswith("--dask_client_address="))
        t0 = time.time()
        with task_stream(scheduler) as tasks:
            res = preprocess(songs, cluster_out, *flags)
        seconds = time.time() - t0
        if res.returncode != 0:
            print(res.stderr[-2000:], file=sys.stderr)
            return 1
    per_worker = Counter(w for w, _ in tasks)
    print(f"cluster run: {seconds:.1f} s on the dask scheduler {scheduler} (dashboard {ui}); "
          f"tasks per worker: " + ", ".join(f"{w} {n}" for w, n in sorted(per_worker.items())))
    print("  flags: " + " ".join(flags))
    diff = differences(dataset_view(local_out), dataset_view(cluster_out))
    for d in diff:
        print("DIFFERENT: " + d)
    if not diff:
        print(f"same dataset: {local_out} (local) == {cluster_out} (cluster)")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
