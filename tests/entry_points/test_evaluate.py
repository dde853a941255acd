"""experiments/evaluate.py: a checkpoint scored on a whole split, once per target."""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np
import pytest

from wavegen.data import input_pipeline as ip
from wavegen.data.dataset import open_dataset
from wavegen.training import evaluation

from helpers import experiment_script, run_command

EVALUATE = [sys.executable, experiment_script("evaluate")]

# Every test here scores the shared trained run (`trained_run`, about ten seconds to train).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(synth_dataset):
    return synth_dataset()


@pytest.fixture(scope="module")
def run_dir(trained_run):
    """A short tiny run whose last evaluation scored the whole validation split."""
    return trained_run


def raw(data_dir, split):
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(data_dir).as_dataset(split=split)
    return [(ex["audio"], int(ex["genre"]), ex["song_id"].decode())
            for ex in tfds.as_numpy(ds)]


def test_scores_every_target_once_and_writes_json_and_csv(data_dir, run_dir):
    ds = open_dataset(data_dir)
    r = evaluation.evaluate_checkpoint(evaluation.EvalConfig(
        checkpoint=run_dir, step="latest", split="validation", batch_size=3, progress=False))
    examples = raw(data_dir, "validation")
    assert r["chunks"] == len(examples)
    assert r["targets"] == len(examples) * ds.spec.target_samples
    # The same number the run's own last evaluation (whole split, same parameters) gave.
    summary = json.load(open(os.path.join(run_dir, "run_summary.json")))
    assert r["bits_per_sample"] == pytest.approx(summary["final_val_bits"], rel=1e-5)
    # Baselines: this split's own entropy, and the train split's smoothed unigram on it.
    assert r["split_entropy_bits"] == pytest.approx(ip.unigram_entropy_bits(ds, "validation"))
    k, c = ds.spec.num_classes, ds.spec.context_samples
    train = sum(np.bincount(a[c:], minlength=k) for a, _, _ in raw(data_dir, "train"))
    val = sum(np.bincount(a[c:], minlength=k) for a, _, _ in examples)
    p = (train + 1.0) / (train.sum() + k)
    assert r["unigram_train_bits"] == pytest.approx(float(-(val * np.log2(p)).sum()
                                                          / val.sum()))
    assert r["unigram_train_bits"] >= r["split_entropy_bits"]
    # Per genre and per song add up to the whole; songs worst first, in JSON and CSV.
    assert sum(g["targets"] for g in r["per_genre"].values()) == r["targets"]
    assert set(r["per_genre"]) == {ds.spec.genres[g] for _, g, _ in examples}
    songs = r["per_song"]
    assert {s["song_id"] for s in songs} == {s for _, _, s in examples}
    assert [s["bits_per_sample"] for s in songs] == sorted(
        (s["bits_per_sample"] for s in songs), reverse=True)
    mean = sum(s["bits_per_sample"] * s["targets"] for s in songs) / r["targets"]
    assert mean == pytest.approx(r["bits_per_sample"], rel=1e-6)
    step = r["step"]
    assert json.load(open(os.path.join(run_dir, "eval", f"validation-{step}.json")))[
        "bits_per_sample"] == r["bits_per_sample"]
    with open(os.path.join(run_dir, "eval", f"validation-{step}-songs.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [row["song_id"] for row in rows] == [s["song_id"] for s in songs]


def test_the_command_on_eight_devices_gives_the_same_number(data_dir, run_dir):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    res = run_command(EVALUATE + [f"checkpoint={run_dir}", "step=latest", "split=validation",
                                  "batch_size=8", "progress=false"], env=env, timeout=300)
    assert res.returncode == 0, res.output[-3000:]
    assert "bits/sample" in res.output
    step = json.load(open(os.path.join(run_dir, "run_summary.json")))["steps"]
    r = json.load(open(os.path.join(run_dir, "eval", f"validation-{step}.json")))
    one = evaluation.evaluate_checkpoint(evaluation.EvalConfig(
        checkpoint=run_dir, step="latest", split="validation", batch_size=5, progress=False))
    assert r["bits_per_sample"] == pytest.approx(one["bits_per_sample"], rel=1e-5)
    assert r["targets"] == one["targets"]


@pytest.mark.parametrize("args,message", [
    (["step=7"], "no checkpoint at step 7"),
    (["split=test"], "no examples in split 'test'"),
    (["use_ema=true"], "kept no EMA"),
    (["batches=0"], "batches must be >= 1"),
])
def test_bad_requests_are_one_line(run_dir, args, message):
    res = run_command(EVALUATE + [f"checkpoint={run_dir}", "progress=false", *args],
                      timeout=300)
    out = res.output
    assert res.returncode == 1 and message in out, out[-3000:]
    assert "Traceback" not in out
