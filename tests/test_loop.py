"""The training loop in process: the dataset opened once, settings checked before the
first step, the time budget, EMA and the checkpoint checks."""

from __future__ import annotations

import builtins
import json
import os

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


def test_a_run_opens_its_dataset_once(data_dir, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    opened, builders = [], []
    real_open, real_builder = builtins.open, tfds.builder_from_directory

    def counting_open(file, *args, **kwargs):
        if str(file).endswith("metadata.json"):
            opened.append(file)
        return real_open(file, *args, **kwargs)

    def counting_builder(*args, **kwargs):
        builders.append(args)
        return real_builder(*args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(tfds, "builder_from_directory", counting_builder)
    summary = tiny_run(data_dir, tmp_path / "run", steps=6)  # three evaluations
    assert summary["steps"] == 6
    assert len(opened) == 1, opened
    assert len(builders) == 1, builders
