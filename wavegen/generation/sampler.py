"""Sampling from a checkpoint: rebuild the model from what the run saved, generate, write.

`run_sampling(cfg)` (the command `experiments/sample.py`) loads the model config and the dataset's spec (sample rate, bits,
quantization, genre names) from the checkpoint itself, restores the parameters with
orbax, primes the caches with a song decoded by the pipeline's own audio functions if
asked, generates streams with `wavegen.generation.generator` in chunks (a progress bar with rate and ETA),
and writes 16-bit WAVs, spectrogram PNGs, `samples.json` and the listening page
`index.html`. Nothing about the model is typed on the command line.
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
from wavegen.generation import generator
from wavegen.generation import listening_page as page
from wavegen.model import wavenet as model_lib
from wavegen.training import checkpoints as ckpt_lib
from wavegen.training import steps as train_lib

log = logging.getLogger("wavegen.sample")


class SamplingError(ValueError):
    """A sampling request that cannot be served; the message is one clear line."""


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    checkpoint: str  # a training run directory (or its checkpoints/ folder)
    output_dir: str
    step: str = "latest"  # latest, best, or a step number
    seconds: float = 4.0
    num_samples: int = 4  # streams (per genre with each_genre)
    temperature: float = 1.0
    genre: str | None = None  # one of the dataset's genre names
    each_genre: bool = False  # num_samples streams for every genre of the dataset
    prime: str | None = None  # an audio file to continue
    prime_seconds: float = 1.0
    seed: int = 0
    use_ema: bool = False
    chunk: int = 4000  # samples per stream per generation call (progress granularity)
    progress: bool = True

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


@dataclasses.dataclass(frozen=True)
class Loaded:
    graphdef: object
    params: object
    model_cfg: model_lib.ModelConfig
    spec: DatasetSpec
    step: int
    run_dir: str


def _checkpoint_dir(path: str) -> tuple[str, str]:
    """(run dir, its checkpoints dir) for either of them."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return path, os.path.join(path, "checkpoints")
    if os.path.basename(path) == "checkpoints" and os.path.isdir(path):
        return os.path.dirname(path), path
    raise SamplingError(f"no checkpoint at {path}: expected a training run directory "
                        "holding checkpoints/")


def load(run_path: str, step: str = "latest", use_ema: bool = False) -> Loaded:
    """The model of a checkpoint, rebuilt from its saved config, with its parameters."""
    run_dir, ckpt_dir = _checkpoint_dir(run_path)
    ckpts = ckpt_lib.Checkpoints(ckpt_dir, create=False)
    try:
        try:
            n = ckpts.resolve(step)
            meta = ckpts.meta(n)
            model_cfg = ckpt_lib.model_config_from_meta(meta)
            spec = ckpt_lib.dataset_spec_from_meta(meta)
            optim_cfg = train_lib.OptimConfig(**meta.get("optim", {}))
        except (ckpt_lib.CheckpointError, TypeError, ValueError) as e:
            raise SamplingError(f"{ckpt_dir}: {e}") from e
        graphdef, target = train_lib.create_train_state(model_cfg, optim_cfg)
        if use_ema and target.ema_params is None:
            raise SamplingError(f"{run_dir} kept no EMA of its parameters (trained with "
                                "optim.ema_decay=0); use use_ema=false")
        target = jax.tree.map(np.asarray, target)
        params = ckpts.restore_params(n, target, use_ema=use_ema)
    finally:
        ckpts.close()
    return Loaded(graphdef, params, model_cfg, spec, n, run_dir)


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


def _streams(cfg: SampleConfig, loaded: Loaded) -> list[str | None]:
    """The genre of every stream (None for an unconditioned model)."""
    spec, conditioned = loaded.spec, bool(loaded.model_cfg.num_genres)
    if (cfg.genre is not None or cfg.each_genre) and not conditioned:
        raise SamplingError("this model was trained without genre conditioning; leave "
                            "genre unset")
    if cfg.each_genre:
        names = [g for g in spec.genres if g != UNKNOWN_GENRE] or list(spec.genres)
        return [g for g in names for _ in range(cfg.num_samples)]
    if cfg.genre is not None:
        try:
            spec.genre_index(cfg.genre)
        except ValueError as e:
            raise SamplingError(str(e)) from e
        return [cfg.genre] * cfg.num_samples
    if conditioned:  # no genre asked: the dataset's catch-all label
        return [UNKNOWN_GENRE] * cfg.num_samples
    return [None] * cfg.num_samples


def run_sampling(cfg: SampleConfig) -> dict:
    """The sampling run: generates the streams, writes them; returns what samples.json
    holds."""
    loaded = load(cfg.checkpoint, cfg.step, cfg.use_ema)
    spec = loaded.spec
    genres = _streams(cfg, loaded)
    prime = prime_bins(cfg.prime, spec, cfg.prime_seconds) if cfg.prime else None
    length = int(round(cfg.seconds * spec.sample_rate))
    if length < 1:
        raise SamplingError(f"seconds={cfg.seconds} is less than one sample at "
                            f"{spec.sample_rate} Hz")
    genre_idx = None if genres[0] is None else np.array(
        [spec.genre_index(g) for g in genres], np.int32)
    os.makedirs(cfg.output_dir, exist_ok=True)
    bins, timing = _generate(cfg, loaded, len(genres), genre_idx, prime, length)
    streams = [_write_stream(cfg, spec, i, g, bins[i]) for i, g in enumerate(genres)]
    result = {
        "checkpoint": loaded.run_dir, "checkpoint_step": loaded.step,
        "settings": dataclasses.asdict(cfg),
        "sample_rate": spec.sample_rate, "quantization": spec.quantization,
        "bits": spec.bits, "receptive_field": model_lib.receptive_field(loaded.model_cfg),
        "num_streams": len(genres), "samples_per_stream": length, **timing,
        "samples": streams,
    }
    with open(os.path.join(cfg.output_dir, "samples.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
    write_page(cfg.output_dir, result)
    return result


def _generate(cfg: SampleConfig, loaded: Loaded, batch: int, genre_idx, prime,
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
    bar = _bar(cfg, batch * length)
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
                  bins: np.ndarray) -> dict:
    """Stream i's WAV and spectrogram; its entry in samples.json."""
    x = audio.dequantize(bins, spec.quantization, spec.bits)
    wav, png = f"sample_{i:03d}.wav", f"sample_{i:03d}.png"
    audio.write_wav(os.path.join(cfg.output_dir, wav), x, spec.sample_rate)
    label = f"{wav}: genre {genre or '-'}, temperature {cfg.temperature:g}" + (
        f", primed with {os.path.basename(cfg.prime)}" if cfg.prime else "")
    page.spectrogram_png(os.path.join(cfg.output_dir, png), x, spec.sample_rate, label)
    return {"wav": wav, "png": png, "genre": genre, "temperature": cfg.temperature,
            "prime": cfg.prime, "seconds": len(bins) / spec.sample_rate,
            "rms": float(np.sqrt(np.mean(x ** 2))),
            "clipped_fraction": float(np.mean(np.abs(x) >= 0.999))}


def write_page(out: str, result: dict) -> str:
    """index.html with the run's training curve (if its metrics are at hand)."""
    curve = None
    metrics = os.path.join(result["checkpoint"], "metrics.jsonl")
    if os.path.exists(metrics):
        with open(metrics) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [r for r in rows if r["step"] <= result["checkpoint_step"]] or rows
        curve = "training_curve.png"
        page.training_curve_png(os.path.join(out, curve), rows,
                                  f"{result['checkpoint']} (sampled at step "
                                  f"{result['checkpoint_step']})")
    facts = {"run": result["checkpoint"], "checkpoint step": result["checkpoint_step"],
             "audio": f"{result['sample_rate']} Hz, {result['quantization']} "
                      f"{result['bits']} bits",
             "receptive field": f"{result['receptive_field']} samples",
             "generation speed": f"{result['samples_per_s']:.0f} samples/s over "
                                 f"{result['num_streams']} streams"}
    return page.listening_page(os.path.join(out, "index.html"), "wavegen samples", facts,
                                 result["samples"], curve)


def _bar(cfg: SampleConfig, total: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", unit_scale=True, desc="generate",
                dynamic_ncols=True)
