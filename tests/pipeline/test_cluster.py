"""The pipeline on a real cluster started on 127.0.0.1 by scripts/cluster.sh: a dask
scheduler and two worker processes (Beam's Spark and Flink job servers are not served by
the Maven Central reachable here for apache-beam 2.77.0; see docs/cluster.md).

The cluster run must give exactly the local runner's dataset, must have run on both
workers (the scheduler's task stream says where each task ran), and a job that fails on
the cluster must exit non-zero with one readable line and leave no dataset behind.
`make test` installs what these need (`make cluster-deps`).
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from beam_pipelines.output_folder import LOCK_FILE
from helpers import tone, write_audio

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER_SH = os.path.join(ROOT, "scripts", "cluster.sh")
ARGS = ["--chunk_seconds=0.5", "--context_samples=1000", "--genre_from=folder",
        "--split=train:0.6,validation:0.2,test:0.2"]
GOOD = {  # song id: (sample rate, channels, seconds)
    "rock/a.mp3": (44100, 2, 3.0), "rock/b.wav": (48000, 1, 2.0),
    "rock/c.flac": (22050, 2, 2.5), "jazz/d.ogg": (16000, 1, 2.0),
    "jazz/e.mp3": (32000, 2, 3.5), "jazz/f.wav": (8000, 1, 2.0),
    "folk/g.flac": (44100, 1, 2.0), "folk/h.ogg": (44100, 2, 2.5),
    "folk/i.wav": (16000, 2, 3.0),
}
BAD = {"rock/empty.mp3": "undecodable", "jazz/text.wav": "undecodable",
       "folk/random.flac": "undecodable", "folk/short.wav": "too_short",
       "rock/silent.flac": "silent"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster_corpus")
    for i, (sid, (sr, ch, sec)) in enumerate(sorted(GOOD.items())):
        write_audio(root / sid, tone(sec, sr, freq=110 * (i + 2), channels=ch, seed=i), sr)
    (root / "rock/empty.mp3").write_bytes(b"")
    (root / "jazz/text.wav").write_text("not audio\n" * 100)
    (root / "folk/random.flac").write_bytes(np.random.default_rng(3).bytes(30000))
    write_audio(root / "folk/short.wav", tone(0.2, 16000), 16000)
    write_audio(root / "rock/silent.flac", np.zeros((32000, 1), np.float32), 16000)
    assert len(GOOD) + len(BAD) >= 12
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(folder, **extra):
    env = dict(os.environ, WAVEGEN_CLUSTER_DIR=str(folder),
               WAVEGEN_DASK_PORT=str(free_port()), WAVEGEN_DASK_DASHBOARD_PORT=str(free_port()))
    env.update(extra)
    return env


def cluster(action, env):
    return subprocess.run([CLUSTER_SH, "dask", action], env=env, capture_output=True,
                          text=True, timeout=300)


def pids(env):
    folder = os.path.join(env["WAVEGEN_CLUSTER_DIR"], "dask")
    return [int(open(os.path.join(folder, f)).read()) for f in sorted(os.listdir(folder))
            if f.endswith(".pid")]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return open(f"/proc/{pid}/stat").read().split()[2] != "Z"


class Cluster:
    def __init__(self, env, lines):
        self.env, self.lines = env, lines
        self.flags = lines[-1].split()
        self.ui = lines[-2]
        self.scheduler = "tcp://127.0.0.1:" + env["WAVEGEN_DASK_PORT"]
        self.pids = pids(env)


def start_cluster(folder, **extra):
    env = cluster_env(folder, **extra)
    res = cluster("start", env)
    try:
        assert res.returncode == 0, res.stderr
        return Cluster(env, res.stdout.strip().splitlines())
    except BaseException:
        cluster("stop", env)
        raise


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        res = cluster("stop", c.env)
        assert res.returncode == 0, res.stderr
        deadline = time.time() + 10
        while any(alive(p) for p in c.pids) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in c.pids), "cluster.sh stop left processes running"
        assert cluster("status", c.env).returncode == 1
        assert cluster("stop", c.env).returncode == 0  # idempotent


def preprocess(corpus, out, *flags):
    return subprocess.run([sys.executable, "-m", "beam_pipelines.preprocess",
                           f"--input={corpus}", f"--output_dir={out}", *ARGS, *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def dataset(out):
    """Everything that must agree: decoded examples per split in order, reasons, counts."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(out))
    splits = {}
    for name in builder.info.splits:
        ds = builder.as_dataset(split=name, shuffle_files=False)
        splits[name] = [(ex["song_id"].decode(), int(ex["chunk_index"]), int(ex["genre"]),
                         ex["audio"].tobytes()) for ex in tfds.as_numpy(ds)]
    failed = {r["song_id"]: r["reason"] for r in
              map(json.loads, (out / "failed.jsonl").read_text().splitlines())}
    summary = json.loads((out / "summary.json").read_text())
    counts = {k: v for k, v in summary.items() if k not in ("seconds_elapsed", "songs_per_s")}
    return splits, failed, counts


@pytest.fixture(scope="module")
def local_dataset(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "ds"
    res = preprocess(corpus, out, "--direct_num_workers=2")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_cluster_script_status_and_flags(dask_cluster):
    res = cluster("status", dask_cluster.env)
    assert res.returncode == 0, res.stderr
    port = dask_cluster.env["WAVEGEN_DASK_DASHBOARD_PORT"]
    assert f"http://127.0.0.1:{port}" in res.stdout.splitlines()
    assert dask_cluster.ui == f"http://127.0.0.1:{port}"
    assert dask_cluster.flags == ["--runner=beam_pipelines.dask_runner.DaskRunner",
                                  f"--dask_client_address={dask_cluster.scheduler}"]
    assert len(dask_cluster.pids) == 3 and all(alive(p) for p in dask_cluster.pids)
    again = cluster("start", dask_cluster.env)  # already up: same processes, same flags
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == \
        " ".join(dask_cluster.flags)
    assert pids(dask_cluster.env) == dask_cluster.pids


def test_cluster_run_gives_exactly_the_local_dataset_and_ran_on_both_workers(
        corpus, local_dataset, dask_cluster, tmp_path):
    from distributed import Client

    out = tmp_path / "ds"
    res = preprocess(corpus, out, *dask_cluster.flags)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "songs in 14, written 9, failed 5" in res.stdout
    # Where the work ran: each worker process of the cluster counts the elements its
    # DoFn bundles processed; the songs were processed there, on both workers.
    with Client(dask_cluster.scheduler, timeout=30) as client:
        done = client.run(lambda dask_worker: dict(getattr(dask_worker, "beam_elements", {})))
    assert len(done) == 2
    songs = {w: sum(n for label, n in counts.items()
                    if label.startswith("Preprocess/ProcessSongs/"))
             for w, counts in done.items()}
    assert all(n > 0 for n in songs.values()) and sum(songs.values()) == 14, done

    local_splits, local_failed, local_counts = dataset(local_dataset)
    splits, failed, counts = dataset(out)
    assert failed == local_failed == BAD
    assert counts == local_counts
    assert counts["songs_in"] == 14 and counts["songs_written"] == 9
    assert splits.keys() == local_splits.keys() and len(splits) >= 2
    for name in splits:
        assert splits[name] == local_splits[name], name  # same examples, same order
    assert {sid for s in splits.values() for sid, *_ in s} == set(GOOD)
    assert sorted(os.listdir(out)) == sorted(os.listdir(local_dataset))


def test_unreachable_cluster_fails_in_one_line_and_leaves_no_dataset(corpus, tmp_path):
    out = tmp_path / "ds"
    res = preprocess(corpus, out, "--runner=beam_pipelines.dask_runner.DaskRunner",
                     f"--dask_client_address=tcp://127.0.0.1:{free_port()}",
                     "--dask_connection_timeout=3")
    assert res.returncode == 1
    errors = [l for l in res.stderr.splitlines() if " ERROR " in l]
    assert len(errors) == 1 and "the pipeline failed on DaskRunner" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert set(os.listdir(out)) <= {LOCK_FILE}  # no dataset, no staging folder


def test_a_job_that_fails_on_the_cluster_fails_in_one_line_and_leaves_no_dataset(
        corpus, tmp_path):
    """A cluster whose environment lacks a working wavegen (the commonest cluster
    mistake): the job fails there; the launching process says why, in one line."""
    shadow = tmp_path / "shadow" / "wavegen"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('wavegen is broken on this worker')\n")
    c = start_cluster(tmp_path / "cluster", PYTHONPATH=str(shadow.parent))
    try:
        out = tmp_path / "ds"
        res = preprocess(corpus, out, *c.flags)
    finally:
        cluster("stop", c.env)
    assert res.returncode == 1
    errors = [l for l in res.stderr.splitlines() if " ERROR " in l]
    assert len(errors) == 1, res.stderr[-3000:]
    assert "the pipeline failed on DaskRunner" in errors[0]
    assert "wavegen is broken on this worker" in errors[0]
    assert "Traceback" not in res.stderr
    assert set(os.listdir(out)) <= {LOCK_FILE}


@pytest.mark.parametrize("name", ["spark", "flink"])
def test_spark_and_flink_are_refused_in_one_line(name, tmp_path):
    res = subprocess.run([CLUSTER_SH, name, "start"], capture_output=True, text=True,
                         env=dict(os.environ, WAVEGEN_CLUSTER_DIR=str(tmp_path)))
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Maven Central" in res.stderr and "docs/cluster.md" in res.stderr
