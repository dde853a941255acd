"""Hostile inputs to training, sampling and evaluation: a bug keeps its
traceback while a user error is one line; requests that cannot fit are refused before any
work; signals end a command with one line; damaged shards and edited metadata are named;
`~` in a path setting is the home folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from experiments import hydra_schema as schema
from wavegen.data import dataset as dataset_lib
from wavegen.model import wavenet as wm
from wavegen.training import loop, resources
from wavegen.training import steps as wt

from helpers import ROOT, experiment_script, run_command

SCRIPT = {name: experiment_script(name) for name in ("train", "sample", "evaluate")}
TRAIN_SHARD = "wavegen-train.tfrecord-00000-of-00001"
VALIDATION_SHARD = "wavegen-validation.tfrecord-00000-of-00001"


@pytest.fixture(scope="module")
def data_dir(synth_dataset):
    return synth_dataset()


@pytest.fixture(scope="module")
def run_dir(trained_run):
    """A short run of the tiny model: a checkpoint to sample from and to evaluate."""
    return trained_run


def command(args, *, cwd=ROOT, env=None, timeout=180):
    return run_command(args, cwd=cwd, env=env, timeout=timeout)


def entry(name, *overrides, **kw):
    return command([sys.executable, SCRIPT[name], *overrides], **kw)


def error_lines(output):
    """The lines a command logged at ERROR level (Hydra's log format)."""
    return [line for line in output.splitlines() if "][ERROR] - " in line]


def assert_one_line(res, status, *fragments):
    assert res.returncode == status, res.output[-3000:]
    assert "Traceback" not in res.output and "KeyboardInterrupt" not in res.output, \
        res.output[-3000:]
    for fragment in fragments:
        assert fragment in res.output, res.output[-3000:]


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def no_steps_ran(workdir):
    return not os.path.exists(os.path.join(workdir, "metrics.jsonl"))


# --------------------------------------------------------------------------------------
# 1. A UserError is one line; anything else is a bug and keeps its traceback


BUGGY_TRAIN = textwrap.dedent("""
    import runpy, sys
    from wavegen.training import loop

    def broken(*args, **kwargs):  # what a JAX shape error in a step looks like
        raise ValueError("Incompatible shapes for broadcasting: (8, 4031) and (8, 4030)")

    loop.train_and_evaluate = broken
    sys.argv = [{script!r}] + sys.argv[1:]
    runpy.run_path({script!r}, run_name="__main__")
""")


@pytest.mark.parametrize("sweep", [False, True])
@pytest.mark.slow
def test_a_bug_in_training_keeps_its_traceback_even_in_a_sweep(data_dir, tmp_path, sweep):
    wrapper = tmp_path / "buggy_train.py"
    wrapper.write_text(BUGGY_TRAIN.format(script=SCRIPT["train"]))
    where = ["-m", f"hydra.sweep.dir={tmp_path}/sweep", "train.seed=0,1"] if sweep else \
        [f"hydra.run.dir={tmp_path}/run"]
    res = command([sys.executable, str(wrapper), *where, "+experiment=smoke",
                   f"data.dir={data_dir}"], env={"PYTHONPATH": ROOT})
    assert res.returncode == 1, res.output[-3000:]
    assert "Traceback (most recent call last)" in res.output, res.output[-3000:]
    assert "ValueError: Incompatible shapes for broadcasting" in res.output
    assert not error_lines(res.output)  # not logged as if it were the user's mistake


def test_a_model_setting_the_model_refuses_is_one_line_naming_it():
    cfg = compose("train", ["data.dir=/d", "model=tiny", "model.gate_channels=33"])
    with pytest.raises(schema.UserError, match="model=tiny: .*gate_channels must be even"):
        schema.to_train_job(cfg)


# --------------------------------------------------------------------------------------
# 2. What cannot fit is refused before any work


@pytest.mark.slow
def test_a_batch_that_cannot_fit_in_memory_is_refused_at_once(data_dir, tmp_path):
    t0 = time.time()
    res = entry("train", "+experiment=smoke", f"data.dir={data_dir}",
                f"hydra.run.dir={tmp_path}/run", "train.batch_size=100000000", timeout=120)
    assert_one_line(res, 1, "train.batch_size=100000000", "needs at least",
                    "lower train.batch_size")
    assert len(error_lines(res.output)) == 1
    assert time.time() - t0 < 90
    assert no_steps_ran(tmp_path / "run")


@pytest.mark.slow
def test_sampling_what_cannot_be_held_is_refused_before_generating(run_dir, tmp_path):
    t0 = time.time()
    res = entry("sample", f"checkpoint={run_dir}", "seconds=1e9", f"output_dir={tmp_path}/out",
                "progress=false", timeout=120)
    assert_one_line(res, 1, "seconds=1e+09", "need at least", "lower seconds or num_samples")
    assert len(error_lines(res.output)) == 1
    assert time.time() - t0 < 90
    assert not list((tmp_path / "out").glob("*.wav"))


def test_the_disk_is_checked_for_the_wav_files(tmp_path, monkeypatch):
    # 10 streams of an hour at 16 kHz: 1.15 GB of WAV, on a disk with 1 GB free.
    monkeypatch.setattr(resources, "free_disk", lambda path: 10**9)
    monkeypatch.setattr(resources, "available_memory", lambda: 10**12)
    with pytest.raises(resources.DoesNotFit, match=r"make 1\.2 GB of WAV files, but "
                                                   r"output_dir=.* has 1\.0 GB free"):
        resources.check_sampling_fits(10, 3600 * 16000, 3600.0, 16000, str(tmp_path))
    resources.check_sampling_fits(10, 3000 * 16000, 3000.0, 16000, str(tmp_path))


def test_the_training_estimate_is_a_lower_bound_of_what_xla_allocates():
    """Refusing on the estimate never refuses a batch that fits: XLA's own temporaries
    for the step's gradient are at least the estimate (and of its order)."""
    import jax
    import jax.numpy as jnp

    cfg = wm.preset("tiny", num_classes=256, num_genres=0)
    graphdef, state = wt.create_train_state(cfg, wt.OptimConfig().for_run(10))
    batch, length = 4, 600

    def loss(params, audio):
        model = wt.merge_model(graphdef, params)
        return jnp.mean(wt.model_loss(model, {"audio": audio,
                                              "genre": jnp.zeros(batch, jnp.int32)}))

    compiled = jax.jit(jax.grad(loss)).lower(state.params,
                                             jnp.zeros((batch, length), jnp.int32)).compile()
    xla = compiled.memory_analysis().temp_size_in_bytes
    estimate = resources.activation_bytes(cfg, batch, length - 1)
    assert estimate <= xla < 8 * estimate


# --------------------------------------------------------------------------------------
# 3. Signals: one line and 128 + the signal


def _start(args, marker, timeout=150):
    """Starts a command and waits until `marker` (a path) exists."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.time()
    while not (os.path.exists(marker) and (not os.path.isfile(marker)
                                            or os.path.getsize(marker) > 0)):
        if proc.poll() is not None or time.time() - t0 > timeout:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"never reached {marker}: {(out + err)[-3000:]}")
        time.sleep(0.05)
    return proc


def _stop(proc, signum, timeout=120):
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=timeout)
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    res.output = out + err
    return res


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_and_status_130(data_dir, tmp_path):
    run = tmp_path / "run"
    proc = _start([sys.executable, SCRIPT["train"], "+experiment=smoke",
                   f"data.dir={data_dir}", f"hydra.run.dir={run}", "train.steps=100000",
                   "train.log_every=1", "train.progress=false"], run / "metrics.jsonl")
    res = _stop(proc, signal.SIGINT)
    assert_one_line(res, 130, "interrupted (Ctrl-C): training stopped")


@pytest.mark.slow
def test_sigterm_before_the_first_step_is_one_line_and_status_143(data_dir, tmp_path):
    run = tmp_path / "run"
    # config.yaml is written as the job starts, before the dataset is opened.
    proc = _start([sys.executable, SCRIPT["train"], "+experiment=smoke",
                   f"data.dir={data_dir}", f"hydra.run.dir={run}"], run / "config.yaml")
    res = _stop(proc, signal.SIGTERM)
    assert_one_line(res, 143)
    assert "stopped by SIGTERM" in res.output or "SIGTERM before the first step" in \
        res.output, res.output[-3000:]
    assert no_steps_ran(run)


@pytest.mark.slow
def test_ctrl_c_during_sampling_is_one_line_and_status_130(run_dir, tmp_path):
    out = tmp_path / "out"
    proc = _start([sys.executable, SCRIPT["sample"], f"checkpoint={run_dir}", "seconds=600",
                   "num_samples=1", f"output_dir={out}", "progress=false"], out / ".hydra")
    time.sleep(3)
    res = _stop(proc, signal.SIGINT)
    assert_one_line(res, 130, "interrupted (Ctrl-C): sampling stopped")


@pytest.mark.slow
def test_ctrl_c_during_evaluation_is_one_line_and_status_130(run_dir):
    proc = subprocess.Popen([sys.executable, SCRIPT["evaluate"], f"checkpoint={run_dir}",
                             "split=validation", "progress=false"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)  # it is still importing: a Ctrl-C there is a traceback today
    assert proc.poll() is None
    res = _stop(proc, signal.SIGINT)
    assert_one_line(res, 130, "interrupted (Ctrl-C): evaluation stopped")


# --------------------------------------------------------------------------------------
# 4, 5. Damaged shards and edited metadata


@pytest.mark.slow
def test_a_missing_validation_shard_is_named_before_any_step(data_dir, tmp_path):
    copy = copy_dataset(data_dir, tmp_path / "ds")
    os.remove(os.path.join(copy, VALIDATION_SHARD))
    res = entry("train", "+experiment=smoke", f"data.dir={copy}",
                f"hydra.run.dir={tmp_path}/run")
    assert_one_line(res, 1, f"{copy}/{VALIDATION_SHARD}: missing shard")
    assert len(error_lines(res.output)) == 1
    assert no_steps_ran(tmp_path / "run")


def test_a_truncated_train_shard_is_named_before_any_step(data_dir, tmp_path):
    copy = copy_dataset(data_dir, tmp_path / "ds")
    shard = os.path.join(copy, TRAIN_SHARD)
    for cut in (os.path.getsize(shard) // 2, os.path.getsize(shard) - 100):
        shutil.copy(os.path.join(data_dir, TRAIN_SHARD), shard)
        os.truncate(shard, cut)
        workdir = tmp_path / f"run{cut}"
        with pytest.raises(loop.TrainingError, match=TRAIN_SHARD):
            loop.train_and_evaluate(wm.preset("tiny"), wt.OptimConfig(),
                                    loop.DataConfig(dir=copy),
                                    loop.RunConfig(steps=2, batch_size=2, targets=64,
                                                   progress=False), str(workdir))
        assert no_steps_ran(workdir)


@pytest.fixture(scope="module")
def flipped(data_dir, tmp_path_factory):
    """A copy whose train shard has bytes flipped inside a record: its size is right, a
    record's checksum is not."""
    copy = copy_dataset(data_dir, tmp_path_factory.mktemp("flipped") / "ds")
    shard = os.path.join(copy, TRAIN_SHARD)
    data = bytearray(open(shard, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    open(shard, "wb").write(bytes(data))
    dataset_lib.open_dataset(copy)  # opens: nothing but reading the record shows it
    return copy


@pytest.mark.slow
def test_a_corrupt_record_stops_training_in_one_line_naming_the_shard(flipped, tmp_path):
    res = entry("train", "+experiment=smoke", f"data.dir={flipped}",
                f"hydra.run.dir={tmp_path}/run")
    assert_one_line(res, 1, f"{flipped}/{TRAIN_SHARD}: corrupt record")
    assert len(error_lines(res.output)) == 1


@pytest.mark.slow
def test_a_corrupt_record_stops_evaluation_in_one_line_naming_the_shard(flipped, run_dir):
    res = entry("evaluate", f"checkpoint={run_dir}", "step=latest", "split=train",
                f"data_dir={flipped}", "progress=false")
    assert_one_line(res, 1, f"{flipped}/{TRAIN_SHARD}: corrupt record")
    # evaluate.py logs bare messages (configs/evaluate.yaml)
    assert len([line for line in res.output.splitlines() if TRAIN_SHARD in line]) == 1


def test_chunk_samples_edited_in_both_metadata_files_is_named(data_dir, tmp_path):
    copy = copy_dataset(data_dir, tmp_path / "ds")
    declared = json.load(open(os.path.join(copy, "metadata.json")))["chunk_samples"]
    wrong = declared - 256
    for name in ("metadata.json", "features.json"):
        path = os.path.join(copy, name)
        text = open(path).read()
        assert str(declared) in text
        open(path, "w").write(text.replace(str(declared), str(wrong)))
    with pytest.raises(dataset_lib.DatasetError) as e:
        dataset_lib.open_dataset(copy)
    message = str(e.value)
    assert "\n" not in message and copy in message and TRAIN_SHARD in message
    assert f"holds {declared} audio samples" in message
    assert f"declare chunk_samples={wrong}" in message


# --------------------------------------------------------------------------------------
# 6. `~` is the home folder in every path setting


def compose(config, overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    {"train": schema.register, "sample": schema.register_sample,
     "evaluate": schema.register_evaluate}[config]()
    with initialize_config_dir(config_dir=os.path.join(ROOT, "configs"), version_base="1.3"):
        return hydra_compose(config_name=config, overrides=overrides)


def test_every_path_setting_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    # Quoted, `~` reaches the settings (Hydra's grammar refuses it unquoted).
    _, _, data, _ = schema.to_train_job(compose("train", ["data.dir='~/ds'"]))
    assert data.dir == f"{tmp_path}/ds"
    s = schema.to_sample_config(compose("sample", ["checkpoint='~/run'", "output_dir='~/out'",
                                                   "prime='~/song.wav'", "data_dir='~/ds'"]))
    assert (s.checkpoint, s.output_dir, s.prime, s.data_dir) == tuple(
        f"{tmp_path}/{p}" for p in ("run", "out", "song.wav", "ds"))
    e = schema.to_eval_config(compose("evaluate", ["checkpoint='~/run'", "data_dir='~/ds'"]))
    assert (e.checkpoint, e.data_dir) == (f"{tmp_path}/run", f"{tmp_path}/ds")
    # On the command line, quoted or not, before Hydra parses it or makes its folders.
    argv = ["train.py", "hydra.run.dir=~/r", "hydra.sweep.dir='~/s'", "data.dir=~/ds",
            "train.seed=0", "+experiment=smoke"]
    schema.expand_user_in_argv(argv)
    assert argv[1:] == [f"hydra.run.dir={tmp_path}/r", f"hydra.sweep.dir='{tmp_path}/s'",
                        f"data.dir={tmp_path}/ds", "train.seed=0", "+experiment=smoke"]


@pytest.mark.slow
def test_sampling_to_a_home_folder_writes_there_and_makes_no_tilde_folder(run_dir, tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    os.symlink(run_dir, home / "run")
    res = command([sys.executable, SCRIPT["sample"], "checkpoint=~/run", "output_dir='~/out'",
                   "seconds=0.05", "num_samples=1", "progress=false"], cwd=str(cwd),
                  env={"HOME": str(home)})
    assert res.returncode == 0, res.output[-3000:]
    assert (home / "out" / "sample_000.wav").exists()
    assert os.listdir(cwd) == []  # no folder named `~`
