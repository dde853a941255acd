"""The demo's embedded corpus: three audibly different styles as genre folders, mp3 and
wav, plus one corrupt file; and the Makefile/README keep their promises."""

import os
import re

import numpy as np
import pytest

from beam_pipelines.ingest import song_chunks as sc
from experiments import demo_corpus
from wavegen.data import audio
from wavegen.data.dataset import DatasetSpec

from helpers import ROOT


def _centroid_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return float((spec * f).sum() / spec.sum())


def test_corpus_has_three_styles_in_both_formats_and_one_corrupt_file(tmp_path):
    info = demo_corpus.make_corpus(str(tmp_path), songs_per_style=2, seconds=2.0)
    assert info["songs"] == 6 and len(info["styles"]) == 3
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path)
                   for d, _, fs in os.walk(tmp_path) for f in fs)
    assert {f.split("/")[0] for f in files} == set(info["styles"])
    assert {os.path.splitext(f)[1] for f in files} == {".mp3", ".wav"}
    spec = DatasetSpec(16000, "mulaw", 8, 2000, 500)
    centroids = {}
    for f in files:
        path = str(tmp_path / f)
        if f.endswith("corrupt.mp3"):
            with pytest.raises(sc.SongFailure):
                list(sc.song_chunks(path, path, spec, sc.SongStats()))
            continue
        x = audio.load_audio(path, 16000)
        assert len(x) == pytest.approx(32000, abs=1200) and np.abs(x).max() > 0.1
        centroids.setdefault(f.split("/")[0], []).append(_centroid_hz(x, 16000))
    # Audibly different: their spectral centroids are far apart.
    means = sorted(np.mean(v) for v in centroids.values())
    assert means[1] > 1.2 * means[0] and means[2] > 1.2 * means[1]


def test_readme_shows_the_commands_the_makefile_has():
    readme = open(os.path.join(ROOT, "README.md")).read()
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    for target in ("setup", "test", "demo", "bench"):
        assert re.search(rf"^{target}:", makefile, re.M)
        assert f"make {target}" in readme
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert re.search(r"^make test$", ci, re.M)


def test_demo_training_runs_on_what_the_budget_leaves(tmp_path, monkeypatch):
    from experiments import demo

    assert demo.train_minutes(14, 60) == round((14 * 60 - 60 - demo.RESERVE_S) / 60, 2)
    assert demo.train_minutes(14, 14 * 60) == demo.MIN_TRAIN_MINUTES  # never zero
    commands = []
    monkeypatch.setattr(demo, "_run", lambda cmd, what: commands.append(cmd))
    demo.train_step(str(tmp_path), "data", None, real=False, minutes=9.5)
    assert "train.max_minutes=9.5" in commands[0] and "+experiment=demo" in commands[0]
    demo.train_step(str(tmp_path), "data", 2000, real=True, minutes=None)
    assert not any(a.startswith("train.max_minutes") for a in commands[1])
    assert "train.steps=2000" in commands[1]
