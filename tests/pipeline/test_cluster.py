"""The pipeline on real Flink and Spark clusters started on 127.0.0.1 by scripts/cluster.sh:
each engine's own cluster processes, Beam's job server for it, an EXTERNAL worker pool.

For each engine one cluster start serves all its tests. A run there must give exactly the
local runner's dataset (decoded examples in order, splits, failure reasons, counts) and be
on the engine's own record as FINISHED; a broken worker environment and an unreachable job
endpoint must each fail in one line, leaving the output folder as it was; after `stop` no
process of the cluster is left. `make test` downloads what these need first
(`make cluster-deps`).
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from beam_pipelines.output_folder import LOCK_FILE
from experiments import cluster_demo

from helpers import tone, write_audio

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = cluster_demo.ROOT
ARGS = ["--chunk_seconds=0.5", "--context_samples=1000",
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
    assert len(GOOD) >= 7 and len(BAD) >= 3
    return root


free_port = cluster_demo.free_port


def group_members(pgids) -> set[int]:
    """Every live process in the given process groups (a cluster's JVMs, its executors and
    SDK workers)."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True)
    return {int(pid) for pid, pgid, stat in (line.split() for line in out.stdout.splitlines())
            if int(pgid) in pgids and not stat.startswith("Z")}


def recorded_pids(run_dir) -> dict[str, int]:
    return {f[:-4]: int(open(os.path.join(run_dir, f)).read())
            for f in sorted(os.listdir(run_dir)) if f.endswith(".pid")}


class Started:
    def __init__(self, engine, env, run_dir):
        self.engine, self.env, self.run_dir = engine, env, run_dir
        self.c = cluster_demo.start(engine, env)
        self.pids = recorded_pids(run_dir)


@pytest.fixture(scope="module", params=cluster_demo.ENGINES)
def engine_cluster(request, tmp_path_factory):
    engine = request.param
    run_dir = tmp_path_factory.mktemp(f"{engine}_run")
    started = Started(engine, cluster_demo.private_env(engine, run_dir), run_dir)
    members = set()
    try:
        yield started
    finally:
        members = group_members(set(started.pids.values()))
        res = cluster_demo.cluster(engine, "stop", started.env)
    assert res.returncode == 0, res.stderr
    assert members >= set(started.pids.values())
    left = group_members(set(started.pids.values()))
    assert not left, f"{engine}: processes left after stop: {left}"
    assert cluster_demo.cluster(engine, "status", started.env).returncode == 1
    assert not os.path.exists(os.path.join(run_dir, "work"))  # Spark's staged jars
    assert cluster_demo.cluster(engine, "stop", started.env).returncode == 0  # idempotent


def preprocess(corpus, out, *flags):
    return cluster_demo.preprocess(str(corpus), str(out), *ARGS, *flags, timeout=900)


def snapshot(folder) -> dict[str, str]:
    """Every file under `folder` (the lock file aside) and its content's hash."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if name != LOCK_FILE:
                with open(path, "rb") as f:
                    files[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return files


@pytest.fixture(scope="module")
def local_dataset(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "ds"
    res = preprocess(corpus, out, "--direct_num_workers=2")
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def with_flag(flags, name, value):
    return [f for f in flags if not f.startswith(f"--{name}=")] + [f"--{name}={value}"]


def one_error_line(res, runner):
    assert res.returncode == 1, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, res.stderr[-3000:]
    assert f"the pipeline failed on {runner}" in errors[0]
    assert "Traceback" not in res.stderr
    return errors[0]


def test_start_status_and_flags(engine_cluster):
    engine, c = engine_cluster.engine, engine_cluster.c
    ui_port = engine_cluster.env[cluster_demo.port_var(engine, cluster_demo.PORTS[engine][0])]
    job_port = engine_cluster.env[cluster_demo.port_var(engine, "JOB")]
    pool_port = engine_cluster.env[cluster_demo.port_var(engine, "POOL")]
    res = cluster_demo.cluster(engine, "status", engine_cluster.env)
    assert res.returncode == 0, res.stderr
    assert f"http://127.0.0.1:{ui_port}" in res.stdout.splitlines()
    assert c.ui == f"http://127.0.0.1:{ui_port}"
    assert c.flags == [f"--runner={cluster_demo.RUNNERS[engine]}",
                       f"--job_endpoint=127.0.0.1:{job_port}", "--environment_type=EXTERNAL",
                       f"--environment_config=127.0.0.1:{pool_port}",
                       "--sdk_worker_parallelism=2"]
    assert len(engine_cluster.pids) == 4
    again = cluster_demo.cluster(engine, "start", engine_cluster.env)  # already up
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == " ".join(c.flags)
    assert recorded_pids(engine_cluster.run_dir) == engine_cluster.pids


def test_a_port_in_use_is_refused_in_one_line(engine_cluster, tmp_path):
    engine = engine_cluster.engine
    job_var = cluster_demo.port_var(engine, "JOB")
    busy = engine_cluster.env[job_var]  # the running cluster's
    env = cluster_demo.private_env(engine, tmp_path / "run", **{job_var: busy})
    res = cluster_demo.cluster(engine, "start", env)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        f"cluster.sh: port {busy} (127.0.0.1) is in use: set "
        f"WAVEGEN_{engine.upper()}_JOB_PORT to a free port"]
    assert not list((tmp_path / "run").glob("*.pid"))


def test_cluster_run_gives_exactly_the_local_dataset(corpus, local_dataset, engine_cluster,
                                                      tmp_path):
    c = engine_cluster.c
    before = {j["id"] for j in c.jobs()}
    out = tmp_path / "ds"
    res = preprocess(corpus, out, *c.flags)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "songs in 14, written 9, failed 5" in res.stdout
    # The engine's own record: one new job, FINISHED.
    new = [j for j in c.jobs() if j["id"] not in before]
    assert [j["state"] for j in new] == ["FINISHED"], new

    local, ours = cluster_demo.dataset_view(str(local_dataset)), cluster_demo.dataset_view(str(out))
    assert cluster_demo.differences(local, ours) == []
    assert ours["failed"] == BAD
    assert ours["summary"]["songs_in"] == 14 and ours["summary"]["songs_written"] == 9
    assert len(ours["splits"]) >= 2
    assert {sid for s in ours["splits"].values() for sid, *_ in s} == set(GOOD)
    assert sorted(os.listdir(out)) == sorted(os.listdir(local_dataset))


def test_a_broken_worker_environment_fails_in_one_line_and_keeps_the_old_dataset(
        corpus, local_dataset, engine_cluster, tmp_path):
    """Workers without a working wavegen (the commonest cluster mistake): the job fails on
    the cluster; the launching process says why in one line; the dataset already in the
    output folder stays as it was."""
    shadow = tmp_path / "shadow" / "wavegen"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('wavegen is broken on this worker')\n")
    venv_bin = os.path.dirname(sys.executable)
    port = free_port()
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
         f"--service_port={port}"],
        env=dict(os.environ, PYTHONPATH=str(shadow.parent),
                 PATH=venv_bin + os.pathsep + os.environ["PATH"]),
        cwd=tmp_path,  # not the repository, whose wavegen/ would come first on sys.path
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = tmp_path / "ds"
    shutil.copytree(local_dataset, out)
    before = snapshot(out)
    try:
        deadline = time.time() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert pool.poll() is None and time.time() < deadline, "broken pool did not start"
            time.sleep(0.2)
        flags = with_flag(engine_cluster.c.flags, "environment_config", f"127.0.0.1:{port}")
        res = preprocess(corpus, out, "--overwrite", *flags)
    finally:
        os.killpg(pool.pid, 15)
        pool.wait(30)
    error = one_error_line(res, cluster_demo.RUNNERS[engine_cluster.engine])
    assert "wavegen is broken on this worker" in error
    assert snapshot(out) == before
    if engine_cluster.engine == "flink":  # (a Spark application ends FINISHED either way)
        assert engine_cluster.c.jobs()[-1]["state"] == "FAILED"


def test_an_unreachable_job_endpoint_fails_in_one_line(corpus, local_dataset, engine_cluster,
                                                       tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(local_dataset, out)
    before = snapshot(out)
    endpoint = f"127.0.0.1:{free_port()}"
    flags = with_flag(engine_cluster.c.flags, "job_endpoint", endpoint)
    res = preprocess(corpus, out, "--overwrite", "--job_server_timeout=5", *flags)
    error = one_error_line(res, cluster_demo.RUNNERS[engine_cluster.engine])
    assert f"no job service answered at --job_endpoint={endpoint} within 5 s" in error
    assert snapshot(out) == before
