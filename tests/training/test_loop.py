"""The training loop in process: the dataset opened once, settings checked before the
first step, the time budget, EMA and the checkpoint checks."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from wavegen.data import dataset as dataset_lib
from wavegen.model import wavenet as wm
from wavegen.training import loop
from wavegen.training import steps as wt


@pytest.fixture(scope="module")
def data_dir(synth_dataset):
    return synth_dataset()


def tiny_run(data_dir, workdir, *, optim=None, **train):
    kw = dict(steps=4, batch_size=2, log_every=2, eval_every=2, checkpoint_every=4,
              eval_batches=1, progress=False, targets=64)
    kw.update(train)
    return loop.train_and_evaluate(wm.preset("tiny"), optim or wt.OptimConfig(),
                                   loop.DataConfig(dir=data_dir), loop.RunConfig(**kw),
                                   str(workdir))


@pytest.mark.slow
def test_a_run_reads_its_dataset_description_once(data_dir, tmp_path, monkeypatch):
    """The run opens its dataset once, before the first step: with the files that describe
    it (metadata.json, and the TFDS metadata a builder is made from) gone right after that,
    it still trains and evaluates three times, so nothing opens the dataset again."""
    copy = str(shutil.copytree(data_dir, tmp_path / "ds"))
    described_by = ("metadata.json", "dataset_info.json", "features.json")
    real_open = loop.open_dataset

    def open_then_remove_description(path):
        dataset = real_open(path)
        for name in described_by:
            os.remove(os.path.join(path, name))
        return dataset

    monkeypatch.setattr(loop, "open_dataset", open_then_remove_description)
    summary = tiny_run(copy, tmp_path / "run", steps=6)  # three evaluations
    assert summary["steps"] == 6 and summary["final_val_bits"] is not None
    assert [r["step"] for r in loop.read_metrics(str(tmp_path / "run"))
            if "val_bits" in r] == [2, 4, 6]
    assert not any(os.path.exists(os.path.join(copy, name)) for name in described_by)
    # Without that description, opening the dataset fails: a second open would have.
    with pytest.raises(dataset_lib.DatasetError):
        dataset_lib.open_dataset(copy)


# --------------------------------------------------------------------------------------
# Defaults and settings


@pytest.mark.parametrize("steps", [1, 2, 7, 19, 20, 200, 5000, 1_000_000])
def test_the_default_optimizer_trains_any_run_length(steps):
    cfg = wt.OptimConfig().for_run(steps)
    assert 0 <= cfg.warmup_steps < cfg.total_steps == steps
    assert cfg.warmup_steps <= wt.WARMUP_CAP
    lr = wt.create_learning_rate_fn(cfg)
    values = [float(lr(s)) for s in {0, steps // 2, steps - 1}]
    assert all(0 <= v <= cfg.lr * (1 + 1e-6) for v in values)
    assert max(values) > 0
    assert wt.OptimConfig().for_run(200).warmup_steps == 10  # 5% of the run


def test_the_default_rate_stays_at_its_peak_after_warmup():
    cfg = wt.OptimConfig().for_run(200)
    lr = wt.create_learning_rate_fn(cfg)
    assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(cfg.lr / 2)
    assert [float(lr(s)) for s in (10, 100, 199, 500)] == pytest.approx([cfg.lr] * 4)
    decayed = wt.create_learning_rate_fn(wt.OptimConfig(end_lr=1e-5).for_run(200))
    assert float(decayed(199)) == pytest.approx(1e-5, rel=1e-2)


@pytest.mark.slow
def test_a_run_of_a_few_steps_trains_with_every_default(data_dir, tmp_path):
    summary = tiny_run(data_dir, tmp_path / "run", steps=3, log_every=50, eval_every=500,
                       checkpoint_every=1000)
    assert summary["steps"] == 3 and summary["final_val_bits"] is not None


def test_run_settings_are_refused_before_the_first_step(data_dir, tmp_path):
    with pytest.raises(loop.TrainingError, match=r"train.targets must be in 1\.\.\d+"):
        tiny_run(data_dir, tmp_path / "a", targets=10**6)
    with pytest.raises(loop.TrainingError, match=r"no examples in split 'nope'"):
        loop.train_and_evaluate(wm.preset("tiny"), wt.OptimConfig(),
                                loop.DataConfig(dir=data_dir, eval_split="nope"),
                                loop.RunConfig(steps=2, batch_size=2, progress=False),
                                str(tmp_path / "b"))
    for name in ("a", "b"):
        assert not os.path.exists(tmp_path / name / "metrics.jsonl")


# --------------------------------------------------------------------------------------
# The time budget


@pytest.mark.slow
def test_a_time_budget_ends_the_run_as_a_normal_end_and_resume_uses_what_is_left(
        data_dir, tmp_path):
    workdir = tmp_path / "budget"
    common = dict(steps=10**6, log_every=1000, eval_every=10**5, checkpoint_every=10**5)
    first = tiny_run(data_dir, workdir, max_minutes=0.25, **common)
    assert first["stopped_by"] == "budget" and 0 < first["steps"] < 10**6
    # As at a normal end: evaluated, checkpointed and summarized at the last step.
    assert first["final_val_bits"] is not None and first["best_step"] == first["steps"]
    assert os.path.isdir(workdir / "checkpoints" / str(first["steps"]))
    saved = json.load(open(workdir / "run_summary.json"))
    assert saved["steps"] == first["steps"] and saved["stopped_by"] == "budget"
    meta = json.load(open(workdir / "checkpoints" / str(first["steps"]) / "meta" / "metadata"))
    assert 0.25 * 60 <= meta["spent_s"] < 0.25 * 60 + 60
    # A larger budget continues with what is left of it, from the last step.
    second = tiny_run(data_dir, workdir, max_minutes=0.6, **common)
    assert second["stopped_by"] == "budget" and second["steps"] > first["steps"]
    meta = json.load(open(workdir / "checkpoints" / str(second["steps"]) / "meta" /
                          "metadata"))
    assert 0.6 * 60 <= meta["spent_s"] < 0.6 * 60 + 60
    # Nothing left: no step is taken.
    third = tiny_run(data_dir, workdir, max_minutes=0.6, **common)
    assert third["steps"] == second["steps"] and third["stopped_by"] == "budget"


@pytest.mark.slow
def test_a_budget_spent_by_set_up_still_gives_one_evaluated_step(data_dir, tmp_path):
    summary = tiny_run(data_dir, tmp_path / "short", steps=100, max_minutes=0.001)
    assert summary["steps"] == 1 and summary["stopped_by"] == "budget"
    assert summary["final_val_bits"] is not None
    assert os.path.isdir(tmp_path / "short" / "checkpoints" / "1")


def test_a_budget_that_is_not_a_positive_number_is_refused():
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="train.max_minutes must be a positive number"):
            loop.RunConfig(max_minutes=bad)


# --------------------------------------------------------------------------------------
# EMA


@pytest.mark.slow
def test_with_an_ema_the_best_checkpoint_is_chosen_by_the_ema(data_dir, tmp_path):
    from wavegen.training import checkpoints as ckpt_lib

    workdir = tmp_path / "ema"
    summary = tiny_run(data_dir, workdir, steps=6, eval_every=2, checkpoint_every=100,
                       optim=wt.OptimConfig(lr=3e-3, ema_decay=0.9))
    evals = [r for r in loop.read_metrics(str(workdir)) if "val_bits" in r]
    assert len(evals) == 3 and all(r["val_bits_ema"] != r["val_bits"] for r in evals)
    best = min(evals, key=lambda r: r["val_bits_ema"])
    assert summary["best_by"] == "val_bits_ema"
    assert (summary["best_val_bits"], summary["best_step"]) == (best["val_bits_ema"],
                                                                best["step"])
    ckpts = ckpt_lib.Checkpoints(str(workdir / "checkpoints"), create=False)
    try:
        assert ckpts.metrics(best["step"])[ckpt_lib.BEST_METRIC] == best["val_bits_ema"]
        assert ckpts.best_step() == best["step"]
        assert ckpts.meta(best["step"])["ema"] is True
    finally:
        ckpts.close()


@pytest.mark.slow
def test_without_an_ema_the_meta_says_so(data_dir, tmp_path):
    tiny_run(data_dir, tmp_path / "plain", steps=2, eval_every=2)
    meta = json.load(open(tmp_path / "plain" / "checkpoints" / "2" / "meta" / "metadata"))
    assert meta["ema"] is False and meta["data"]["dir"] == data_dir


# --------------------------------------------------------------------------------------
# Checked, not trusted


@pytest.mark.slow
def test_resume_refuses_stored_arrays_that_differ_from_the_config(data_dir, tmp_path):
    from wavegen.training import checkpoints as ckpt_lib

    workdir = tmp_path / "shapes"
    tiny_run(data_dir, workdir, steps=2, eval_every=2)
    # A checkpoint whose config says 24 residual channels but whose arrays hold 16.
    path = workdir / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.load(open(path))
    meta["model_config"]["residual_channels"] = 24
    json.dump(meta, open(path, "w"))
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=r"does not match its model config: params\.input_embedding: "
                             r"stored \(\d+, 16\) float32, the config makes \(\d+, 24\)"):
        loop.train_and_evaluate(wm.preset("tiny", residual_channels=24), wt.OptimConfig(),
                                loop.DataConfig(dir=data_dir),
                                loop.RunConfig(steps=2, batch_size=2, targets=64,
                                               progress=False), str(workdir))


def _copy_dataset(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


@pytest.mark.parametrize("field,value,message", [
    ("chunk_samples", 999, r"audio length \(\d+,\) in features.json, chunk_samples=999"),
    ("bits", 10, r"audio dtype uint8 in features.json, uint16 for bits=10"),
    ("genres", ["a", "b", "unknown"], r"genres \[.*\] in features.json/genre.labels.txt, "
                                      r"\['a', 'b', 'unknown'\] in metadata.json"),
])
def test_a_dataset_whose_metadata_contradicts_its_features_is_refused(
        data_dir, tmp_path, field, value, message):
    copy = _copy_dataset(data_dir, tmp_path / "ds")
    md = json.load(open(os.path.join(copy, "metadata.json")))
    md[field] = value
    if field == "chunk_samples":
        md["context_samples"] = 100
    json.dump(md, open(os.path.join(copy, "metadata.json"), "w"))
    with pytest.raises(dataset_lib.DatasetError, match="metadata.json contradicts "
                                                       "features.json: .*" + message):
        dataset_lib.open_dataset(copy)


# --------------------------------------------------------------------------------------
# Resume (review findings)


@pytest.mark.slow
def test_a_finished_run_resumes_with_more_steps(data_dir, tmp_path):
    """train.steps may grow on resume: the null schedule lengths follow it."""
    first = tiny_run(data_dir, tmp_path / "run", steps=4)
    assert first["steps"] == 4
    more = tiny_run(data_dir, tmp_path / "run", steps=8)
    assert more["steps"] == 8
    steps = [r["step"] for r in loop.read_metrics(str(tmp_path / "run")) if "train_bits" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 8


@pytest.mark.slow
def test_a_line_cut_short_by_a_kill_does_not_block_resume(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    tiny_run(data_dir, run_dir, steps=4)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train_bi')  # a kill mid-write
    summary = tiny_run(data_dir, run_dir, steps=6)
    assert summary["steps"] == 6
    with open(run_dir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]  # every line whole again
    assert rows[-1]["step"] == 6
