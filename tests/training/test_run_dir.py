"""A run folder's one reader: `load_run` gives the model of a checkpoint with the parameters
asked for, read alone (no optimizer state, no training-step code), from runs saved today
and before (tests/fixtures/run-saved-2026-12-03: a tiny run with an EMA, its checkpoint
as the code of that day saved it, without the data iterator's files)."""

import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest

from wavegen.training import checkpoints as ckpt_lib
from wavegen.training import run_dir

from helpers import ROOT, run_command

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "run-saved-2026-12-03")


@pytest.fixture
def saved_run(tmp_path):
    """A writable copy of the fixture run."""
    return shutil.copytree(FIXTURE, tmp_path / "run")


def _full_state(path, step):
    """The whole saved state, restored the way training restores it (optimizer included)."""
    from wavegen.training import steps as train_lib

    ckpts = ckpt_lib.Checkpoints(os.path.join(path, "checkpoints"), create=False)
    try:
        meta = ckpts.meta(step)
        optim = train_lib.OptimConfig(**ckpt_lib.upgraded_optim(meta["optim"]))
        optim = optim.for_run(optim.total_steps or (optim.warmup_steps or 0) + 1)
        _, target = train_lib.create_train_state(ckpt_lib.model_config_from_meta(meta),
                                                 optim)
        state, _ = ckpts.restore(step, jax.tree.map(np.asarray, target))
    finally:
        ckpts.close()
    return state


def _equal(a, b) -> bool:
    return (jax.tree.structure(a) == jax.tree.structure(b)
            and all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                         jax.tree.leaves(b))))


def test_a_run_saved_before_today_loads_its_ema_or_raw_parameters_alone():
    ema, raw = run_dir.load_run(FIXTURE), run_dir.load_run(FIXTURE, use_ema=False)
    state = _full_state(FIXTURE, ema.step)
    assert ema.step == 2 and ema.use_ema and not raw.use_ema
    assert _equal(ema.params, state.ema_params) and _equal(raw.params, state.params)
    assert not _equal(ema.params, raw.params)  # two steps moved the raw parameters
    # The model they make runs: one forward pass over a short window of bins.
    model = ema.model()
    bins = np.random.default_rng(0).integers(0, ema.spec.num_classes, (1, 32))
    out = model(bins, np.zeros((1,), np.int32))
    assert out.shape == (1, 32, ema.model_cfg.out_channels)
    assert np.isfinite(np.asarray(out)).all()


def test_the_checkpoints_folder_itself_names_the_same_run():
    run = run_dir.load_run(os.path.join(FIXTURE, "checkpoints"), step="latest")
    assert run.run_dir == FIXTURE and run.step == 2


def test_sampling_and_evaluation_import_no_training_step():
    code = ("import sys; from wavegen.generation import sampler; "
            "from wavegen.training import evaluation, run_dir; "
            f"run_dir.load_run({FIXTURE!r}); "
            "print(sorted(m for m in sys.modules if m in ('wavegen.training.steps', "
            "'wavegen.training.loop')))")
    res = run_command([sys.executable, "-c", code], timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_an_older_runs_data_config_is_completed_from_its_config_yaml():
    """The fixture's checkpoint names only its dataset folder (as runs saved before the
    whole data config was recorded do); the splits come from its config.yaml."""
    run = run_dir.load_run(FIXTURE)
    meta_dir = json.load(open(os.path.join(FIXTURE, "checkpoints", "2", "meta",
                                           "metadata")))["data"]["dir"]
    assert run.data["dir"] == meta_dir  # the checkpoint wins over config.yaml
    assert run.data["eval_split"] == "heldout" and run.data["train_split"] == "train"


def test_a_recorded_data_config_needs_no_config_yaml(saved_run):
    meta_path = saved_run / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    meta["data"] = {"dir": "/somewhere", "train_split": "tr", "eval_split": "ev",
                    "shuffle_buffer": 8}
    meta_path.write_text(json.dumps(meta))
    (saved_run / "config.yaml").unlink()
    assert run_dir.load_run(str(saved_run)).data == meta["data"]


def test_best_falls_back_to_the_latest_step_when_none_has_a_score(saved_run, caplog):
    shutil.rmtree(saved_run / "checkpoints" / "2" / "metrics")
    with caplog.at_level("WARNING"):
        run = run_dir.load_run(str(saved_run))
    assert run.step == 2 and "no checkpoint has a validation score" in caplog.text


def test_an_ema_the_run_did_not_keep_is_refused_in_one_line(saved_run):
    meta_path = saved_run / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    meta["ema"] = False
    meta_path.write_text(json.dumps(meta))
    assert run_dir.load_run(str(saved_run)).use_ema is False  # the one rule: as kept
    with pytest.raises(ckpt_lib.CheckpointError, match="kept no EMA") as e:
        run_dir.load_run(str(saved_run), use_ema=True)
    assert "\n" not in str(e.value)


def test_arrays_that_do_not_match_the_saved_config_are_refused_before_reading(saved_run):
    meta_path = saved_run / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    meta["model_config"]["residual_channels"] *= 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ckpt_lib.CheckpointError, match="does not match its model config"):
        run_dir.load_run(str(saved_run))


def test_a_folder_without_checkpoints_is_one_line(tmp_path):
    with pytest.raises(ckpt_lib.CheckpointError, match="expected a training run folder"):
        run_dir.load_run(str(tmp_path))
