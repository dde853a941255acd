"""Fixtures shared by the test modules; plain helpers live in `helpers.py`."""

from __future__ import annotations

import logging

import pytest

from helpers import run_pipeline, synth_songs


@pytest.fixture(autouse=True)
def _quiet_beam():
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    yield


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory):
    """Factory: synthesized songs in genre folders (three styles) through the pipeline, one
    dataset directory per distinct set of arguments, built once per test session.

        data_dir = synth_dataset(sample_rate=8000, seconds=3.0, songs_per_style=3,
                                 chunk_seconds=0.1, context_samples=300)
    """
    built: dict[tuple, str] = {}

    def make(*, sample_rate: int = 16000, seconds: float = 5.0, songs_per_style: int = 2,
             chunk_seconds: float = 0.25, context_samples: int = 256,
             split: str = "train:0.6,validation:0.4", seed: int = 0) -> str:
        key = (sample_rate, seconds, songs_per_style, chunk_seconds, context_samples, split,
               seed)
        if key not in built:
            root = tmp_path_factory.mktemp("synth_dataset")
            songs = synth_songs(root / "songs", sample_rate=sample_rate, seconds=seconds,
                                songs_per_style=songs_per_style, seed=seed)
            out = str(root / "ds")
            assert run_pipeline(f"--input={songs}", f"--output_dir={out}",
                                "--genre_from=folder", f"--split={split}",
                                f"--sample_rate={sample_rate}",
                                f"--chunk_seconds={chunk_seconds}",
                                f"--context_samples={context_samples}") == 0
            built[key] = out
        return built[key]

    return make


@pytest.fixture(scope="session")
def trained_run(synth_dataset, tmp_path_factory):
    """The run folder of a short training of the tiny model on `synth_dataset()`, trained
    once per test session: six steps, checkpoints, metrics and a last evaluation that
    scored the whole validation split (`run_summary.json`'s final_val_bits), no EMA.

    Shared by every test that needs a trained checkpoint: a test may add evaluation results
    (`eval/`) or write elsewhere, but must not change or remove what the run wrote."""
    from wavegen.model import wavenet as wm
    from wavegen.training import loop
    from wavegen.training import steps as wt

    workdir = str(tmp_path_factory.mktemp("trained_run") / "run")
    loop.train_and_evaluate(
        wm.preset("tiny"), wt.OptimConfig(lr=3e-3), loop.DataConfig(dir=synth_dataset()),
        loop.RunConfig(steps=6, batch_size=4, log_every=3, eval_every=6, targets=64,
                       progress=False), workdir)
    return workdir
