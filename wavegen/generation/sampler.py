"""Sampling from a checkpoint: rebuild the model from what the run saved, generate, write.

`run_sampling(cfg)` (the command `experiments/sample.py`) loads the model config and the
dataset's spec (sample rate, bits, quantization, genre names) from the checkpoint itself,
restores its parameters alone (`wavegen.training.run_dir.load_run`, the loader evaluation
uses), primes the caches with a song decoded by the pipeline's own audio
functions if asked, generates streams with `wavegen.generation.generator` in chunks (a
progress bar with rate and ETA), and writes 16-bit WAVs, spectrogram PNGs, `samples.json`
and the listening page `index.html`. Nothing about the model is typed on the command line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import jax
import numpy as np

from wavegen.data import audio
from wavegen.data.dataset import UNKNOWN_GENRE, DatasetSpec
from wavegen.errors import UserError
from wavegen.generation import generator, genre_check, references
from wavegen.generation import listening_page as page
from wavegen.model import wavenet as model_lib
from wavegen.progress import progress_bar
from wavegen.training import metrics as run_metrics
from wavegen.training import resources
from wavegen.training import run_dir as run_lib
from wavegen.training.run_dir import Run

log = logging.getLogger("wavegen.sample")


class SamplingError(UserError):
    """A sampling request that cannot be served; the message is one clear line."""


REFERENCE_SECONDS = 4.0  # at most this much of a real song per genre on the page


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    checkpoint: str  # a training run directory (or its checkpoints/ folder)
    output_dir: str
    step: str = run_lib.DEFAULT_STEP  # best, latest, or a step number (see run_dir)
    seconds: float = 4.0
    num_samples: int = 4  # streams (per genre when the genre is unset or each_genre)
    temperature: float = 1.0
    genre: str | None = None  # one of the dataset's trained genre names
    each_genre: bool = False  # num_samples streams for every trained genre
    prime: str | None = None  # an audio file to continue
    prime_seconds: float = 1.0
    seed: int = 0
    use_ema: bool | None = None  # None: the EMA exactly when the run kept one
    chunk: int = 4000  # samples per stream per generation call (progress granularity)
    progress: bool = True
    data_dir: str | None = None  # the run's dataset; None: data.dir of its config.yaml
    references: bool = True  # a real validation song per genre on the page
    genre_check: bool = True  # name the samples' genres with a classifier (samples.json)
    # XLA:CPU threads of the sampling process (`wavegen.runtime.limit_cpu_threads`, which
    # the command applies before JAX starts); None: every core. One thread by default:
    # a cached step is too small to split over cores (`make bench` compares the two).
    cpu_threads: int | None = 1

    def __post_init__(self):
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise SamplingError(f"seconds must be > 0, got {self.seconds}")
        if self.num_samples < 1:
            raise SamplingError(f"num_samples must be >= 1, got {self.num_samples}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise SamplingError(f"temperature must be a finite number >= 0, got "
                                f"{self.temperature}")
        if self.prime is not None and not self.prime_seconds > 0:
            raise SamplingError(f"prime_seconds must be > 0, got {self.prime_seconds}")
        if self.genre is not None and self.each_genre:
            raise SamplingError("give genre=NAME or each_genre=true, not both")
        if self.chunk < 1:
            raise SamplingError(f"chunk must be >= 1, got {self.chunk}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise SamplingError(f"cpu_threads must be >= 1 or null (every core), got "
                                f"{self.cpu_threads}")


def prime_bins(path: str, spec: DatasetSpec, seconds: float) -> np.ndarray:
    """A song's first `seconds`, decoded, mixed down, resampled and quantized exactly as
    the pipeline does (wavegen.data.audio)."""
    if not os.path.exists(path):
        raise SamplingError(f"prime {path}: no such file")
    try:
        x = audio.load_audio(path, spec.sample_rate, max_seconds=seconds)
    except audio.AudioDecodeError as e:
        raise SamplingError(f"prime {e}") from e
    if len(x) == 0:
        raise SamplingError(f"prime {path}: prime_seconds={seconds} is less than one sample "
                            f"at {spec.sample_rate} Hz")
    return audio.quantize(x, spec.quantization, spec.bits).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class RunData:
    """The run's dataset, when it can be found: where, its splits, and the training
    chunks per genre."""

    data_dir: str
    train_split: str
    eval_split: str
    trained: dict[str, int]  # genre -> training chunks


def run_data(cfg: SampleConfig, loaded: Run) -> RunData | None:
    """The run's dataset (data_dir, or the one the run recorded), or None with a warning
    when it is not at hand: sampling still works, without the checks that need it."""
    data_dir = cfg.data_dir or loaded.data.get("dir")
    if not data_dir or not os.path.isdir(data_dir):
        log.warning("the run's dataset %s is not at hand (set data_dir=...): genres cannot "
                    "be checked against the training chunks, and the page has no real "
                    "songs to compare with", data_dir or "(unrecorded)")
        return None
    train_split, eval_split = loaded.data["train_split"], loaded.data["eval_split"]
    try:
        trained = references.genre_chunk_counts(data_dir, train_split, loaded.spec)
    except references.ReferenceError as e:
        raise SamplingError(str(e)) from e
    return RunData(data_dir, train_split, eval_split, trained)


def _streams(cfg: SampleConfig, loaded: Run, data: RunData | None) -> list[str | None]:
    """The genre of every stream (None for an unconditioned model): the genre asked for,
    or num_samples streams for each trained genre."""
    spec, conditioned = loaded.spec, bool(loaded.model_cfg.num_genres)
    if (cfg.genre is not None or cfg.each_genre) and not conditioned:
        raise SamplingError("this model was trained without genre conditioning; leave "
                            "genre unset")
    if not conditioned:
        return [None] * cfg.num_samples
    if data is not None:
        trained = [g for g in spec.genres if data.trained.get(g, 0) > 0]
    else:  # without the dataset: every genre but the catch-all label
        trained = [g for g in spec.genres if g != UNKNOWN_GENRE] or list(spec.genres)
    if cfg.genre is not None:
        try:
            spec.genre_index(cfg.genre)
        except ValueError as e:
            raise SamplingError(str(e)) from e
        if data is not None and cfg.genre not in trained:
            raise SamplingError(f"genre {cfg.genre!r} has no training chunks in "
                                f"{data.data_dir} (split {data.train_split}); the model "
                                f"was trained on: {', '.join(map(repr, trained))}")
        return [cfg.genre] * cfg.num_samples
    if not trained:
        raise SamplingError(f"no genre has training chunks in {data.data_dir} (split "
                            f"{data.train_split})")
    return [g for g in trained for _ in range(cfg.num_samples)]


def run_sampling(cfg: SampleConfig) -> dict:
    """The sampling run: generates the streams, writes them; returns what samples.json
    holds."""
    loaded = run_lib.load_run(cfg.checkpoint, cfg.step, cfg.use_ema)
    spec = loaded.spec
    data = run_data(cfg, loaded)
    genres = _streams(cfg, loaded, data)
    prime = prime_bins(cfg.prime, spec, cfg.prime_seconds) if cfg.prime else None
    length = int(round(cfg.seconds * spec.sample_rate))
    if length < 1:
        raise SamplingError(f"seconds={cfg.seconds} is less than one sample at "
                            f"{spec.sample_rate} Hz")
    # Before any generation: a length that cannot be held or written is refused now, not
    # after days of generating.
    resources.check_sampling_fits(len(genres), length, cfg.seconds, spec.sample_rate,
                                  cfg.output_dir)
    genre_idx = None if genres[0] is None else np.array(
        [spec.genre_index(g) for g in genres], np.int32)
    os.makedirs(cfg.output_dir, exist_ok=True)
    bins, timing = _generate(cfg, loaded, len(genres), genre_idx, prime, length)
    waves = [audio.dequantize(b, spec.quantization, spec.bits) for b in bins]
    streams = [_write_stream(cfg, spec, i, g, x) for i, (g, x) in enumerate(zip(genres,
                                                                                 waves))]
    result = {
        "checkpoint": loaded.run_dir, "checkpoint_step": loaded.step,
        "settings": dataclasses.asdict(cfg), "use_ema": loaded.use_ema,
        "sample_rate": spec.sample_rate, "quantization": spec.quantization,
        "bits": spec.bits, "receptive_field": model_lib.receptive_field(loaded.model_cfg),
        "num_streams": len(genres), "samples_per_stream": length, **timing,
        "samples": streams,
        "references": _write_references(cfg, spec, data, genres),
        "genre_check": _genre_check(cfg, spec, data, waves, genres),
    }
    with open(os.path.join(cfg.output_dir, "samples.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
    write_page(cfg.output_dir, result)
    return result


def _generate(cfg: SampleConfig, loaded: Run, batch: int, genre_idx, prime,
              length: int) -> tuple[np.ndarray, dict]:
    """(bins (batch streams, length), timing facts): generation in equal chunks with a
    progress bar; the compilation is timed apart."""
    spec = loaded.spec
    state = generator.start(loaded.graphdef, loaded.params, jax.random.key(cfg.seed),
                            num_streams=batch,
                            start_bin=generator.silence_bin(spec.quantization, spec.bits),
                            genre=genre_idx, prime=prime)
    # Equal chunks (the last may overshoot; it is trimmed): one compiled program.
    calls = -(-length // min(cfg.chunk, length))
    chunk = -(-length // calls)
    t0 = time.perf_counter()  # compile outside the timing: one throw-away chunk
    jax.block_until_ready(generator.generate_chunk(loaded.graphdef, loaded.params, state,
                                                   chunk, temperature=cfg.temperature)[0])
    compile_s = time.perf_counter() - t0
    parts, done = [], 0
    bar = progress_bar("generate", "sample", batch * length, cfg.progress, unit_scale=True)
    t0 = time.perf_counter()
    while done < length:
        bins, state = generator.generate_chunk(loaded.graphdef, loaded.params, state, chunk,
                                               temperature=cfg.temperature)
        parts.append(np.asarray(bins))
        if bar is not None:
            bar.update(batch * (min(done + chunk, length) - done))
        done += chunk
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return (np.concatenate(parts, axis=1)[:, :length],
            {"samples_per_s": batch * done / seconds, "generation_s": seconds,
             "compile_s": compile_s})


def _write_stream(cfg: SampleConfig, spec: DatasetSpec, i: int, genre: str | None,
                  x: np.ndarray) -> dict:
    """Stream i's WAV and spectrogram; its entry in samples.json."""
    wav, png = f"sample_{i:03d}.wav", f"sample_{i:03d}.png"
    audio.write_wav(os.path.join(cfg.output_dir, wav), x, spec.sample_rate)
    label = f"{wav}: genre {'-' if genre is None else genre}, temperature " \
            f"{cfg.temperature:g}" + (f", primed with {os.path.basename(cfg.prime)}"
                                      if cfg.prime else "")
    page.spectrogram_png(os.path.join(cfg.output_dir, png), x, spec.sample_rate, label)
    return {"wav": wav, "png": png, "genre": genre, "temperature": cfg.temperature,
            "prime": cfg.prime, "seconds": len(x) / spec.sample_rate,
            "rms": float(np.sqrt(np.mean(x ** 2))),
            "clipped_fraction": float(np.mean(np.abs(x) >= 0.999))}


def _write_references(cfg: SampleConfig, spec: DatasetSpec, data: RunData | None,
                      genres: list[str | None]) -> list[dict]:
    """A few seconds of a real song of each sampled genre from the run's validation split
    (the same rate and quantization: decoded from the dataset), with its spectrogram."""
    if not cfg.references or data is None:
        return []
    wanted = [g for g in dict.fromkeys(genres) if g is not None]
    seconds = min(REFERENCE_SECONDS, max(cfg.seconds, 1.0))
    clips = references.reference_clips(data.data_dir, data.eval_split, spec, wanted,
                                       seconds)
    out = []
    for i, g in enumerate(g for g in wanted if g in clips):
        wav, png = f"reference_{i:03d}.wav", f"reference_{i:03d}.png"
        audio.write_wav(os.path.join(cfg.output_dir, wav), clips[g], spec.sample_rate)
        page.spectrogram_png(os.path.join(cfg.output_dir, png), clips[g], spec.sample_rate,
                             f"{wav}: a real {data.eval_split} song, genre {g}")
        out.append({"wav": wav, "png": png, "genre": g, "split": data.eval_split,
                    "seconds": len(clips[g]) / spec.sample_rate})
    return out


def _genre_check(cfg: SampleConfig, spec: DatasetSpec, data: RunData | None, waves,
                 genres: list[str | None]) -> dict | None:
    """The genre classifier's verdict on the streams (`genre_check.check_waves`), or why
    there is none."""
    if not cfg.genre_check or genres[0] is None:
        return None
    if data is None:
        return {"skipped": "the run's dataset is not at hand"}
    try:
        clf = genre_check.fit_from_dataset(data.data_dir, spec, data.train_split)
        return genre_check.check_waves(clf, data.data_dir, spec, waves, genres,
                                       data.eval_split)
    except (ValueError, references.ReferenceError) as e:
        return {"skipped": str(e)}


def write_page(out: str, result: dict) -> str:
    """index.html with the run's training curve (if its metrics are at hand)."""
    curve = None
    rows = run_metrics.read_metrics(run_metrics.metrics_path(result["checkpoint"]))
    if rows:
        rows = [r for r in rows if r["step"] <= result["checkpoint_step"]] or rows
        curve = "training_curve.png"
        page.training_curve_png(os.path.join(out, curve), rows,
                                f"{result['checkpoint']} (sampled at step "
                                f"{result['checkpoint_step']})")
    facts = {"run": result["checkpoint"], "checkpoint step": result["checkpoint_step"],
             "parameters": "EMA" if result.get("use_ema") else "as trained",
             "audio": f"{result['sample_rate']} Hz, {result['quantization']} "
                      f"{result['bits']} bits",
             "receptive field": f"{result['receptive_field']} samples",
             "generation speed": f"{result['samples_per_s']:.0f} samples/s over "
                                 f"{result['num_streams']} streams"}
    check = result.get("genre_check")
    if check and check.get("samples_accuracy") is not None:
        facts["genre check"] = (
            f"a classifier on {check['window_seconds']:g} s windows names the genre of "
            f"{check['samples_accuracy']:.0%} of the samples' windows (real "
            f"{check['real_split']} songs: "
            + ("-" if check["real_accuracy"] is None else f"{check['real_accuracy']:.0%}")
            + f"; chance {check['chance']:.0%})")
    return page.listening_page(os.path.join(out, "index.html"), "wavegen samples", facts,
                               result["samples"], curve, result.get("references", ()))

