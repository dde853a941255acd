"""Hydra experiments end to end: configs, the smoke run, kill-and-resume, SIGTERM, the NaN
stop, clear errors, a sweep and its summary table, and two processes on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import MissingMandatoryValue

from experiments import hydra_schema as schema

from helpers import ROOT, experiment_script, run_command

CONFIGS = os.path.join(ROOT, "configs")
TRAIN = [sys.executable, experiment_script("train")]
COMPARED = ("step", "train_bits", "lr", "grad_norm", "val_bits", "unigram_bits")


@pytest.fixture(scope="module")
def dataset(synth_dataset):
    """Synthesized songs in three styles, through the pipeline (tiny chunks)."""
    return synth_dataset()


def train(*overrides, timeout=240, check=True, env=None):
    # Hydra logs to stdout, the progress bar to stderr: `output` holds both.
    return run_command(TRAIN + list(overrides), timeout=timeout, env=env, check=check)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def compared(rows):
    return [{k: r[k] for k in COMPARED if k in r} for r in rows]


# --------------------------------------------------------------------------------------
# Configs


def compose_train(overrides):
    schema.register()
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_configs_compose_into_the_library_dataclasses():
    cfg = compose_train(["data.dir=/data/x", "model=medium", "optim.lr=3e-4",
                         "train.steps=1234", "model.dtype=bfloat16"])
    model_cfg, optim_cfg, data, run = schema.to_train_job(cfg)
    assert (model_cfg.stacks, model_cfg.residual_channels, model_cfg.dtype) == (3, 128,
                                                                                "bfloat16")
    assert optim_cfg.lr == 3e-4 and optim_cfg.for_run(run.steps).total_steps == 1234
    assert data.dir == "/data/x" and run.steps == 1234


def test_smoke_experiment_holds_only_differences():
    cfg = compose_train(["+experiment=smoke", "data.dir=/d"])
    assert cfg.model.preset == "tiny" and cfg.train.steps == 30
    assert cfg.train.seed == 0  # untouched defaults still come from train/default.yaml


@pytest.mark.parametrize("override,error", [
    ("train.stepz=10", ConfigCompositionException),
    ("train.steps=ten", ConfigCompositionException),
    ("model.residual_chanels=3", ConfigCompositionException),
])
def test_mistyped_keys_and_wrong_types_fail_at_start(override, error):
    with pytest.raises(error):
        compose_train(["data.dir=/d", override])


@pytest.mark.parametrize("override,message", [
    ("train.steps=0", "train.steps must be >= 1, got 0"),
    ("train.eval_batches=0", "train.eval_batches must be >= 1 or null"),
    ("train.eval_batch_size=0", "train.eval_batch_size must be >= 1 or null"),
    ("train.device_count=0", "train.device_count must be >= 1 or null"),
    ("train.max_minutes=-1", "train.max_minutes must be a positive number"),
    ("data.shuffle_buffer=0", "data.shuffle_buffer must be >= 1"),
    ("optim.lr=-1", "optim.lr must be a positive finite number"),
    ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0"),
])
def test_a_bad_value_is_refused_naming_its_key(override, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        schema.to_train_job(compose_train(["data.dir=/d", "train.steps=200", override]))


def test_a_missing_dataset_dir_is_a_hydra_error():
    cfg = compose_train([])
    with pytest.raises(MissingMandatoryValue, match="data.dir"):
        schema.to_train_job(cfg)


# --------------------------------------------------------------------------------------
# Runs


@pytest.fixture(scope="module")
def smoke_run(dataset, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("runs") / "smoke")
    res = train("+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={run_dir}",
                "train.steps=40", "train.log_every=4")
    return run_dir, res


@pytest.mark.slow
def test_smoke_run_writes_everything_a_run_should(smoke_run):
    run_dir, res = smoke_run
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [4, 8, 10, 12, 16, 20, 24, 28, 30, 32, 36, 40]
    for r in rows:
        assert {"step", "train_bits", "lr", "grad_norm", "samples_per_s"} <= r.keys()
    evals = [r for r in rows if "val_bits" in r]
    assert [r["step"] for r in evals] == [10, 20, 30, 40]
    assert all(r["unigram_bits"] > 0 for r in evals)
    assert rows[-1]["train_bits"] < rows[0]["train_bits"]  # it learns
    steps = sorted(int(s) for s in os.listdir(os.path.join(run_dir, "checkpoints"))
                   if s.isdigit())
    assert steps[-1] == 40 and len(steps) <= 4  # the last 3 and the best
    meta = json.load(open(os.path.join(run_dir, "checkpoints", "40", "meta", "metadata")))
    assert meta["dataset"]["sample_rate"] == 16000 and meta["model_config"]["stacks"] == 2
    assert os.path.exists(os.path.join(run_dir, "config.yaml"))
    assert any(f.startswith("events") for f in os.listdir(os.path.join(run_dir,
                                                                       "tensorboard")))
    summary = json.load(open(os.path.join(run_dir, "run_summary.json")))
    assert summary["steps"] == 40
    best = min(evals, key=lambda r: r["val_bits"])
    assert (summary["best_val_bits"], summary["best_step"]) == (best["val_bits"], best["step"])
    assert summary["best_step"] in steps  # the best evaluation always has its checkpoint
    assert "validation bits/sample" in res.output


def _wait_for_checkpoint(run_dir, step, proc, timeout=120):
    path = os.path.join(run_dir, "checkpoints", str(step))
    t0 = time.time()
    while not os.path.isdir(path):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics_bitwise(dataset, smoke_run, tmp_path):
    ref_dir, _ = smoke_run
    run_dir = str(tmp_path / "killed")
    args = ["+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={run_dir}",
            "train.steps=40", "train.log_every=4"]
    proc = subprocess.Popen(TRAIN + args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run_dir, 10, proc)  # mid-window: steps 9-10 are not logged yet
    proc.kill()
    proc.wait()
    assert metrics(run_dir)[-1]["step"] < 40
    res = train(*args)
    assert "resumed from" in res.output
    # Every logged value but the speed is identical, float for float.
    assert compared(metrics(run_dir)) == compared(metrics(ref_dir))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resumes(dataset, smoke_run, tmp_path):
    ref_dir, _ = smoke_run
    run_dir = str(tmp_path / "term")
    args = ["+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={run_dir}",
            "train.steps=40", "train.log_every=4", "train.checkpoint_every=1000"]
    proc = subprocess.Popen(TRAIN + args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # No periodic checkpoint: wait for the first logged line, then SIGTERM.
    path = os.path.join(run_dir, "metrics.jsonl")
    t0 = time.time()
    while not (os.path.exists(path) and os.path.getsize(path) > 0):
        assert proc.poll() is None and time.time() - t0 < 120
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    saved = [int(s) for s in os.listdir(os.path.join(run_dir, "checkpoints")) if s.isdigit()]
    assert len(saved) == 1 and 4 <= saved[0] < 40
    train(*args)
    assert compared(metrics(run_dir)) == compared(metrics(ref_dir))


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_naming_the_step(dataset, tmp_path):
    run_dir = str(tmp_path / "nan")
    res = train("+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={run_dir}",
                "optim.lr=1e30", "optim.clip_norm=0", "optim.warmup_steps=0",
                "train.checkpoint_every=1", "train.steps=30", check=False)
    assert res.returncode == 1
    assert "non-finite loss at step" in res.output
    bad = int(res.output.split("non-finite loss at step ")[1].split()[0])
    saved = sorted(int(s) for s in os.listdir(os.path.join(run_dir, "checkpoints"))
                   if s.isdigit())
    assert all(s < bad for s in saved)  # nothing saved from the non-finite state


@pytest.mark.slow
def test_bad_situations_give_one_clear_line(dataset, smoke_run, tmp_path):
    res = train("+experiment=smoke", f"data.dir={tmp_path}/nope",
                f"hydra.run.dir={tmp_path}/r1", check=False)
    assert res.returncode == 1 and "does not exist" in res.output
    (tmp_path / "empty").mkdir()
    res = train("+experiment=smoke", f"data.dir={tmp_path}/empty",
                f"hydra.run.dir={tmp_path}/r2", check=False)
    assert res.returncode == 1 and "dataset_info.json" in res.output
    ref_dir, _ = smoke_run
    res = train("+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={ref_dir}",
                "model.residual_channels=24", check=False)
    assert res.returncode == 1 and "different model config" in res.output
    assert "residual_channels: checkpoint 16, now 24" in res.output
    res = train("+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={tmp_path}/r3",
                "train.batch_size=7", check=False,
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert res.returncode == 1 and "batch_size=7 does not divide evenly over 2" in res.output
    res = train("+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={tmp_path}/r4",
                "model=medium", check=False)
    assert res.returncode == 1 and "exceeds the dataset's context" in res.output
    res = train("+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={tmp_path}/r5",
                "data.eval_split=test", check=False)
    assert res.returncode == 1 and "has no examples in split 'test'" in res.output
    assert not os.path.exists(os.path.join(tmp_path, "r5", "metrics.jsonl"))  # before any step
    res = train("+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={ref_dir}",
                "optim.lr=0.01", check=False)
    assert res.returncode == 1 and "other optimizer settings (lr" in res.output
    res = train("+experiment=smoke", f"data.dir={dataset}", "train.distributed=true",
                check=False)
    assert res.returncode == 1 and "needs hydra.run.dir" in res.output


@pytest.mark.slow
def test_a_sweep_writes_its_summary_table_even_when_a_job_fails(dataset, tmp_path):
    sweep = tmp_path / "sweep"
    res = train("-m", "+experiment=smoke", f"data.dir={dataset}", f"hydra.sweep.dir={sweep}",
                "train.steps=10", "model=tiny,medium", "optim.lr=1e-3,3e-3", timeout=400)
    lines = (sweep / "sweep_summary.csv").read_text().splitlines()
    assert lines[0].startswith("job,overrides,final_val_bits,best_val_bits")
    rows = [line.split(",") for line in lines[1:]]
    assert [r[1] for r in rows] == ["model=tiny optim.lr=0.001", "model=tiny optim.lr=0.003",
                                    "model=medium optim.lr=0.001",
                                    "model=medium optim.lr=0.003"]
    for r in rows[:2]:  # tiny fits the dataset's context
        assert float(r[2]) > 0 and r[6] == "10" and r[-1] == "done"
    for r in rows[2:]:  # medium's receptive field does not: the job fails, the sweep goes on
        assert r[2] == "" and r[-1] == "failed or unfinished"
    assert "exceeds the dataset's context" in res.output
    md = (sweep / "sweep_summary.md").read_text()
    assert md.count("\n") == 6 and "| done |" in md


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_as_one_run(dataset, tmp_path):
    run_dir = str(tmp_path / "dist")
    port = _free_port()
    common = ["+experiment=smoke", f"data.dir={dataset}", f"hydra.run.dir={run_dir}",
              "train.steps=10", "train.distributed=true",
              f"train.coordinator_address=127.0.0.1:{port}", "train.num_processes=2"]
    procs = [subprocess.Popen(TRAIN + common + [f"train.process_id={i}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    rows = metrics(run_dir)  # written once, by process 0
    assert [r["step"] for r in rows] == [5, 10] and "val_bits" in rows[-1]
    assert os.path.isdir(os.path.join(run_dir, "checkpoints", "10"))
