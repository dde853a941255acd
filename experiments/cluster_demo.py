"""The pipeline on a Flink or Spark cluster started on this machine, checked against the
local runner.

    .venv/bin/python -m experiments.cluster_demo --engine flink|spark [--dir cluster-demo]
        [--songs_per_style 4]

Makes the demo corpus (`experiments.demo_corpus`), starts the engine's cluster
(`scripts/cluster.sh ENGINE start`), runs `python -m beam_pipelines.preprocess` there with
the flags the script prints and once on the default local runner, prints where the job ran
(the engine's own record of it: Flink's /jobs/overview, Spark's master /json/), compares the
two datasets (decoded examples, splits, failure reasons, counts) and stops the cluster, also
on failure. Exits 1 if the datasets differ. (`make cluster-demo ENGINE=flink|spark`)

The helpers here (starting and stopping a cluster, the engine's record of its jobs, what
must agree between two datasets) are also used by the cluster tests and benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_SH = os.path.join(ROOT, "scripts", "cluster.sh")
ENGINES = ("flink", "spark")
RUNNERS = {"flink": "FlinkRunner", "spark": "SparkRunner"}
PY = sys.executable
# Every port each engine's cluster opens, as scripts/cluster.sh names them
# (WAVEGEN_<ENGINE>_<NAME>_PORT); the web UI's first.
PORTS = {
    "flink": ["REST", "RPC", "BLOB", "TM_RPC", "TM_DATA", "JOB", "ARTIFACT", "EXPANSION",
              "POOL"],
    "spark": ["UI", "MASTER", "WORKER", "WORKER_UI", "DRIVER", "BLOCK", "JOB", "ARTIFACT",
              "EXPANSION", "POOL"],
}


def port_var(engine: str, name: str) -> str:
    return f"WAVEGEN_{engine.upper()}_{name}_PORT"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_env(engine: str, run_dir: str, **extra) -> dict:
    """An environment for a cluster beside any other: a free port for everything it opens,
    its logs and scratch in `run_dir`; the downloads stay in the project's .cluster/."""
    env = dict(os.environ, WAVEGEN_CLUSTER_RUN_DIR=str(run_dir))
    env.update({port_var(engine, name): str(free_port()) for name in PORTS[engine]})
    env.update(extra)
    return env


def cluster(engine: str, action: str, env=None, timeout: float = 900):
    return subprocess.run([CLUSTER_SH, engine, action], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)


class Cluster:
    """A started cluster: what `start` printed (info line, web UI, Beam flags)."""

    def __init__(self, engine: str, lines: list[str], env=None, start_seconds: float = 0.0):
        self.engine, self.lines, self.env = engine, lines, env
        self.ui = lines[-2]
        self.flags = lines[-1].split()
        self.start_seconds = start_seconds

    def jobs(self) -> list[dict]:
        """The engine's own record of its jobs: [{"id", "name", "state"}], oldest first."""
        return engine_jobs(self.engine, self.ui)


def start(engine: str, env=None) -> Cluster:
    t0 = time.perf_counter()
    res = cluster(engine, "start", env)
    if res.returncode != 0:
        cluster(engine, "stop", env)
        raise RuntimeError(f"scripts/cluster.sh {engine} start failed: "
                           f"{(res.stderr or res.stdout).strip()}")
    return Cluster(engine, res.stdout.strip().splitlines(), env, time.perf_counter() - t0)


@contextlib.contextmanager
def running_cluster(engine: str, env=None):
    """Starts the cluster; yields it; stops it."""
    c = start(engine, env)
    try:
        yield c
    finally:
        cluster(engine, "stop", env)


def engine_jobs(engine: str, ui: str) -> list[dict]:
    if engine == "flink":
        with urllib.request.urlopen(f"{ui}/jobs/overview", timeout=10) as r:
            jobs = json.load(r)["jobs"]
        return [{"id": j["jid"], "name": j["name"], "state": j["state"],
                 "seconds": j["duration"] / 1000} for j in
                sorted(jobs, key=lambda j: j["start-time"])]
    with urllib.request.urlopen(f"{ui}/json/", timeout=10) as r:
        master = json.load(r)
    apps = master["completedapps"] + master["activeapps"]
    return [{"id": a["id"], "name": a["name"], "state": a["state"],
             "seconds": a["duration"] / 1000} for a in sorted(apps, key=lambda a: a["starttime"])]


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
    p.add_argument("--engine", choices=ENGINES, required=True)
    p.add_argument("--dir", default="cluster-demo")
    p.add_argument("--songs_per_style", type=int, default=4)
    args = p.parse_args(argv)
    from experiments.demo_corpus import make_corpus

    shutil.rmtree(args.dir, ignore_errors=True)
    songs = os.path.join(args.dir, "songs")
    info = make_corpus(songs, args.songs_per_style)
    print(f"corpus: {info['songs']} songs + {info['corrupt']} corrupt file -> {songs}")
    local_out, cluster_out = (os.path.join(args.dir, d) for d in ("local", args.engine))
    t0 = time.time()
    res = preprocess(songs, local_out)
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return 1
    print(f"local runner (FnApiRunner, multi-process): {time.time() - t0:.1f} s")
    print(f"starting the {args.engine} cluster (scripts/cluster.sh {args.engine} start; "
          "the first start downloads its jars)")
    with running_cluster(args.engine) as c:
        print(f"  {c.lines[-3]}\n  up in {c.start_seconds:.1f} s; web UI {c.ui}")
        t0 = time.time()
        res = preprocess(songs, cluster_out, *c.flags)
        seconds = time.time() - t0
        if res.returncode != 0:
            print(res.stderr[-2000:], file=sys.stderr)
            return 1
        job = c.jobs()[-1]
    print(f"{args.engine} run: {seconds:.1f} s; the cluster's record: job {job['id']} "
          f"({job['name']}) {job['state']} after {job['seconds']:.1f} s")
    print("  flags: " + " ".join(c.flags))
    diff = differences(dataset_view(local_out), dataset_view(cluster_out))
    for d in diff:
        print("DIFFERENT: " + d)
    if not diff:
        print(f"same dataset: {local_out} (local) == {cluster_out} ({args.engine})")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
