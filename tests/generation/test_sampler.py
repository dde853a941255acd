"""experiments/sample.py end to end: train the smoke experiment, sample from its checkpoint,
check the WAVs, the pictures, samples.json, the listening page and the errors."""

import html.parser
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavegen.data import synth
from wavegen.training.checkpoints import CheckpointError
from wavegen.training.run_dir import load_run

from helpers import experiment_script, run_command, write_audio

SAMPLE = [sys.executable, experiment_script("sample")]
TRAIN = [sys.executable, experiment_script("train")]


def run(cmd, check=True, timeout=300):
    return run_command(cmd, timeout=timeout, check=check)


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
    res = run(SAMPLE + [f"checkpoint={run_dir}", "step=latest", "seconds=0.5",
                        "num_samples=3", "temperature=1.0", "genre=piano_waltz", "seed=3",
                        f"output_dir={out}"])
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
                  "references=false", f"output_dir={out}"])
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


def _nan_prime(tmp_path, value=np.nan):
    """A float WAV prime whose frame 300 is not finite."""
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (8000, 2)).astype(np.float32)
    x[300, 1] = value
    path = str(tmp_path / "nan_prime.wav")
    sf.write(path, x, 16000, subtype="FLOAT")
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_prime_with_non_finite_samples_is_a_sampling_error_naming_it(tmp_path, value):
    from wavegen.data.dataset import DatasetSpec
    from wavegen.generation import sampler

    spec = DatasetSpec(sample_rate=16000, quantization="mulaw", bits=8, chunk_samples=4000,
                       context_samples=1000)
    path = _nan_prime(tmp_path, value)
    with pytest.raises(sampler.SamplingError) as e:
        sampler.prime_bins(path, spec, 0.5)
    assert str(e.value) == f"prime {path}: NaN or infinite sample at frame 300"


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
        ([f"checkpoint={run_dir}", f"prime={_nan_prime(tmp_path)}"],
         f"prime {tmp_path / 'nan_prime.wav'}: NaN or infinite sample at frame 300"),
        ([f"checkpoint={run_dir}", "step=12345"], "no checkpoint at step 12345"),
        ([f"checkpoint={run_dir}", "seconds=1e-6"], "less than one sample"),
        ([f"checkpoint={run_dir}", "temperature=nan"], "temperature must be a finite"),
        ([f"checkpoint={run_dir}", "cpu_threads=0"], "cpu_threads must be >= 1 or null"),
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


# --------------------------------------------------------------------------------------
# Genres, EMA, references and the genre check


def _meta(out):
    return json.loads((out / "samples.json").read_text(encoding="utf-8"))


def sample_here(run_dir, out, **kw):
    """The sampling run in this process (faster than the command for many small runs)."""
    from wavegen.generation import sampler

    settings = dict(seconds=0.1, num_samples=1, references=False, genre_check=False,
                    progress=False)
    settings.update(kw)
    return sampler.run_sampling(sampler.SampleConfig(checkpoint=str(run_dir),
                                                     output_dir=str(out), **settings))


@pytest.mark.slow
def test_unset_genre_samples_every_trained_genre_and_untrained_is_refused(trained, tmp_path):
    from wavegen.generation import sampler

    _, run_dir = trained
    result = sample_here(run_dir, tmp_path / "all", num_samples=2)
    # Two streams per genre with training chunks; never the catch-all `unknown`.
    assert [s["genre"] for s in result["samples"]] == [
        g for g in ("ambient_pad", "piano_waltz", "synth_techno") for _ in range(2)]
    with pytest.raises(sampler.SamplingError) as e:
        sample_here(run_dir, tmp_path / "unknown", genre="unknown")
    assert "genre 'unknown' has no training chunks" in str(e.value)
    assert "'ambient_pad', 'piano_waltz', 'synth_techno'" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_the_ema_is_used_by_default_exactly_when_the_run_kept_one(trained, tmp_path):
    _, run_dir = trained  # trained with optim.ema_decay=0.9
    got = {}
    for name, use_ema in (("default", None), ("ema", True), ("raw", False)):
        result = sample_here(run_dir, tmp_path / name, genre="piano_waltz", use_ema=use_ema)
        got[name] = (result["use_ema"], sf.read(tmp_path / name / "sample_000.wav")[0])
    assert got["default"][0] is True and got["raw"][0] is False
    np.testing.assert_array_equal(got["default"][1], got["ema"][1])
    assert not np.array_equal(got["default"][1], got["raw"][1])


@pytest.mark.slow
def test_the_page_puts_a_real_song_beside_each_genre_and_checks_the_genre(trained, tmp_path):
    data, run_dir = trained
    out = tmp_path / "refs"
    run(SAMPLE + [f"checkpoint={run_dir}", "seconds=1.0", "num_samples=1",
                  f"output_dir={out}"])
    meta = _meta(out)
    refs = meta["references"]
    assert refs, "the validation split has songs: there must be a reference"
    sampled = {s["genre"] for s in meta["samples"]}
    for r in refs:
        assert r["genre"] in sampled and r["split"] == "validation"
        x, sr = sf.read(out / r["wav"])
        assert sr == 16000 and len(x) == 16000 and np.sqrt(np.mean(x ** 2)) > 1e-3
        assert (out / r["png"]).stat().st_size > 5000
    page = (out / "index.html").read_text(encoding="utf-8")
    first = refs[0]
    # The real song comes right before the first sample of its genre.
    i_ref = page.index(f'src="{first["wav"]}"')
    i_sample = page.index(next(f'src="{s["wav"]}"' for s in meta["samples"]
                               if s["genre"] == first["genre"]))
    assert i_ref < i_sample and "real validation song" in page
    check = meta["genre_check"]
    assert check["genres"] == ["ambient_pad", "piano_waltz", "synth_techno"]
    assert check["real_accuracy"] == 1.0  # the synthesized styles are easy to tell apart
    assert 0.0 <= check["samples_accuracy"] <= 1.0 and len(check["named"]) == 3
    assert "genre check" in page


# --------------------------------------------------------------------------------------
# Bad input


def _copy_run(run_dir, dest):
    shutil.copytree(run_dir, dest)
    return dest


def _edit_meta(run_dir, edit):
    for step in os.listdir(run_dir / "checkpoints"):
        path = run_dir / "checkpoints" / step / "meta" / "metadata"
        if path.exists():
            meta = json.loads(path.read_text(encoding="utf-8"))
            edit(meta)
            path.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


WEIRD = ['a$^$b "q" <i>&amp;', "two\nlines", "ünï©ødé 音楽 " + "x" * 300]


@pytest.mark.slow
def test_genre_names_are_data_in_plots_json_and_page(trained, tmp_path):
    """`$` (matplotlib mathtext), markup, quotes, a newline, Unicode and a long name are
    carried intact through the spectrograms, samples.json and the listening page."""
    _, run_dir = trained
    weird = _copy_run(run_dir, tmp_path / "weird")

    def rename(meta):
        meta["dataset"]["genres"][:3] = WEIRD

    _edit_meta(weird, rename)
    out = tmp_path / "out"
    res = run(SAMPLE + [f"checkpoint={weird}", "seconds=0.1", "num_samples=1",
                        f"output_dir={out}"], check=False)
    assert res.returncode == 0 and "Traceback" not in res.output, res.output[-3000:]
    meta = _meta(out)
    assert [s["genre"] for s in meta["samples"]] == WEIRD
    assert meta["references"] and all(r["genre"] in WEIRD for r in meta["references"])
    for s in meta["samples"]:
        assert (out / s["png"]).stat().st_size > 5000
    text = _Text()
    text.feed((out / "index.html").read_text(encoding="utf-8"))
    assert "i" not in text.tags  # `<i>` in a name is text, not a tag
    for g in WEIRD:
        assert f"genre: {g}" in text.data


class _Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.data, self.tags = "", set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.data += data


@pytest.mark.slow
def test_a_checkpoint_that_does_not_match_its_config_is_refused_in_one_line(trained,
                                                                            tmp_path):
    _, run_dir = trained
    for field, value in (("residual_channels", 24), ("stacks", 3), ("genre_embed_dim", 8)):
        bad = _copy_run(run_dir, tmp_path / f"bad_{field}")

        def edit(meta, field=field, value=value):
            meta["model_config"][field] = value

        _edit_meta(bad, edit)
        with pytest.raises(CheckpointError, match="does not match its model config") as e:
            load_run(str(bad))
        assert "\n" not in str(e.value)


@pytest.mark.slow
def test_malformed_metrics_rows_are_skipped_by_the_listening_page(trained, tmp_path, caplog):
    _, run_dir = trained
    run_copy = _copy_run(run_dir, tmp_path / "metrics")
    with open(run_copy / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "train_bits": 7.9\n')  # cut off mid-write
        f.write('not json at all\n[1, 2]\n{"train_bits": 1.0}\n{"step": "x"}\n')
        f.write('{"step": 4, "val_bits": "NaN?"}\n')
    out = tmp_path / "out"
    sample_here(run_copy, out, genre="piano_waltz")
    assert "skipped 5 malformed line(s)" in caplog.text
    assert (out / "training_curve.png").stat().st_size > 5000


# --------------------------------------------------------------------------------------
# One checkpoint loader for sampling and evaluation


def _params_equal(a, b):
    import jax

    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_a_checkpoint_saved_under_the_old_optimizer_names_samples(trained, tmp_path):
    _, run_dir = trained
    old = _copy_run(run_dir, tmp_path / "old_names")

    def rename(meta):
        optim = meta["optim"]
        optim["learning_rate"] = optim.pop("lr")
        optim["end_learning_rate"] = optim.pop("end_lr")

    _edit_meta(old, rename)
    got, want = load_run(str(old)), load_run(str(run_dir))
    assert got.use_ema and got.step == want.step
    assert _params_equal(got.params, want.params)


@pytest.mark.slow
def test_a_step_with_damaged_array_metadata_is_one_line(trained, tmp_path):
    _, run_dir = trained
    bad = _copy_run(run_dir, tmp_path / "damaged")
    step = max(int(s) for s in os.listdir(bad / "checkpoints") if s.isdigit())
    (bad / "checkpoints" / str(step) / "state" / "_METADATA").write_text("{not json")
    with pytest.raises(CheckpointError) as e:
        load_run(str(bad))
    assert f"{step}: unreadable array metadata" in str(e.value)
    assert "\n" not in str(e.value)
    res = run(SAMPLE + [f"checkpoint={bad}", f"output_dir={tmp_path}/o"], check=False)
    assert res.returncode == 1 and "unreadable array metadata" in res.output
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_sampling_and_evaluation_agree_on_the_ema_of_a_run_that_did_not_record_it(
        trained, tmp_path):
    """A run that kept an EMA but whose meta predates the `ema` flag: both use the EMA."""
    from wavegen.training import evaluation

    _, run_dir = trained  # trained with optim.ema_decay=0.9
    old = _copy_run(run_dir, tmp_path / "no_flag")
    _edit_meta(old, lambda meta: meta.pop("ema"))
    loaded = load_run(str(old))
    report = evaluation.evaluate_checkpoint(evaluation.EvalConfig(
        checkpoint=str(old), step="latest", split="validation", batches=1, batch_size=2,
        progress=False))
    assert loaded.use_ema is True and report["use_ema"] is True
    ema = evaluation.evaluate_checkpoint(evaluation.EvalConfig(
        checkpoint=str(old), step="latest", split="validation", batches=1, batch_size=2,
        use_ema=True, progress=False))
    assert report["bits_per_sample"] == ema["bits_per_sample"]
