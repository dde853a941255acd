"""experiments/sample.py end to end: train the smoke experiment, sample from its checkpoint,
check the WAVs, the pictures, samples.json, the listening page and the errors."""

import html.parser
import json
from pathlib import Path
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from helpers import write_audio
from wavegen.data import synth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = [sys.executable, os.path.join(ROOT, "experiments", "sample.py")]
TRAIN = [sys.executable, os.path.join(ROOT, "experiments", "train.py")]


def run(cmd, check=True, timeout=300):
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    res.output = res.stdout + res.stderr
    if check:
        assert res.returncode == 0, res.output[-4000:]
    return res


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_dataset):
    root = tmp_path_factory.mktemp("sampling")
    data = Path(synth_dataset())
    run_dir = root / "run"
    run(TRAIN + ["+experiment=smoke", f"data.dir={data}", f"hydra.run.dir={run_dir}",
                 "train.steps=20", "optim.ema_decay=0.9"])
    return data, run_dir


@pytest.mark.slow
def test_samples_have_the_requested_length_rate_and_are_music_not_noise(trained, tmp_path):
    data, run_dir = trained
    out = tmp_path / "out"
    res = run(SAMPLE + [f"checkpoint={run_dir}", "seconds=0.5", "num_samples=3",
                        "temperature=1.0", "genre=piano_waltz", "seed=3", f"output_dir={out}"])
    meta = json.loads((out / "samples.json").read_text())
    assert meta["checkpoint_step"] == 20 and meta["sample_rate"] == 16000
    assert meta["samples_per_s"] > 0 and meta["settings"]["genre"] == "piano_waltz"
    assert len(meta["samples"]) == 3
    waves = []
    for s in meta["samples"]:
        info = sf.info(out / s["wav"])
        assert (info.samplerate, info.frames, info.subtype) == (16000, 8000, "PCM_16")
        x, _ = sf.read(out / s["wav"])
        assert np.sqrt(np.mean(x ** 2)) > 1e-3  # not silent
        assert np.mean(np.abs(x) > 0.999) < 0.5  # not clipped everywhere
        assert (out / s["png"]).stat().st_size > 5000
        waves.append(x)
    assert not np.allclose(waves[0], waves[1])  # independent streams
    assert "samples/s" in res.output


@pytest.mark.slow
def test_the_same_seed_gives_the_same_song(trained, tmp_path):
    _, run_dir = trained
    a, b = [], []
    for out, got in ((tmp_path / "a", a), (tmp_path / "b", b)):
        run(SAMPLE + [f"checkpoint={run_dir}", "seconds=0.2", "num_samples=1", "seed=5",
                      "chunk=700", f"output_dir={out}"])
        got.append(sf.read(out / "sample_000.wav")[0])
    np.testing.assert_array_equal(a[0], b[0])


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.audio, self.images, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        src = a.get("src") or a.get("href")
        if src and "://" in src:
            self.external.append(src)
        if tag == "audio":
            self.audio.append(a["src"])
        if tag == "img":
            self.images.append(a["src"])
        if tag == "script":
            self.external.append("<script>")


@pytest.mark.slow
def test_each_genre_primed_page_references_files_that_play_and_decode(trained, tmp_path):
    import matplotlib.image

    data, run_dir = trained
    prime = write_audio(tmp_path / "prime.flac", synth.render_song("synth_techno", 1.5,
                                                                   44100, 99), 44100)
    out = tmp_path / "page"
    run(SAMPLE + [f"checkpoint={run_dir}", "step=best", "seconds=0.3", "num_samples=1",
                  "each_genre=true", f"prime={prime}", "prime_seconds=0.5", "use_ema=true",
                  f"output_dir={out}"])
    meta = json.loads((out / "samples.json").read_text())
    assert [s["genre"] for s in meta["samples"]] == ["ambient_pad", "piano_waltz",
                                                      "synth_techno"]
    assert all(s["prime"] == prime for s in meta["samples"])
    refs = _Refs()
    refs.feed((out / "index.html").read_text())
    assert not refs.external  # self-contained: no network, no scripts
    assert len(refs.audio) == 3 and len(refs.images) == 4  # 3 spectrograms + the curve
    for src in refs.audio:
        x, sr = sf.read(out / src)
        assert sr == 16000 and len(x) == 4800
    for src in refs.images:
        img = matplotlib.image.imread(out / src)
        assert img.shape[0] > 100 and img.shape[1] > 100
    page = (out / "index.html").read_text()
    assert f"checkpoint step</th><td>{meta['checkpoint_step']}" in page
    assert "training_curve.png" in refs.images


@pytest.mark.slow
def test_errors_are_one_clear_line(trained, tmp_path):
    data, run_dir = trained
    cases = [
        ([f"checkpoint={tmp_path}/none"], "no checkpoint at"),
        ([f"checkpoint={run_dir}", "seconds=0"], "seconds must be > 0"),
        ([f"checkpoint={run_dir}", "genre=polka"],
         "unknown genre 'polka'; the dataset's genres are: ambient_pad, piano_waltz"),
        ([f"checkpoint={run_dir}", f"prime={data / 'summary.json'}"],
         "prime"),
        ([f"checkpoint={run_dir}", "step=12345"], "no checkpoint at step 12345"),
        ([f"checkpoint={run_dir}", "seconds=1e-6"], "less than one sample"),
        ([f"checkpoint={run_dir}", "temperature=nan"], "temperature must be a finite"),
    ]
    for args, message in cases:
        res = run(SAMPLE + args + [f"output_dir={tmp_path}/o"], check=False)
        assert res.returncode == 1 and message in res.output, (args, res.output[-2000:])
        assert "Traceback" not in res.output
    # A checkpoint without its config.
    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "checkpoints", broken / "checkpoints")
    for step in os.listdir(broken / "checkpoints"):
        shutil.rmtree(broken / "checkpoints" / step / "meta", ignore_errors=True)
    res = run(SAMPLE + [f"checkpoint={broken}", f"output_dir={tmp_path}/o"], check=False)
    assert res.returncode == 1 and "no config" in res.output
