"""Scoring a checkpoint on a whole split: the figure to report (`experiments/evaluate.py`).

`evaluate_checkpoint(cfg)` restores a run's parameters (the EMA by default when the run
kept one), scores every target of every chunk of the split once (data-parallel over the
local devices), and writes `RUN_DIR/eval/<split>-<step>.json` with

- `bits_per_sample`: the model's mean NLL over every target of the split;
- `per_genre`: the same per genre label, and `per_song` (also
  `<split>-<step>-songs.csv`), worst songs first;
- two context-free baselines: `unigram_train_bits`, the bin histogram of the train
  split (add-one smoothed, so every bin has mass) scored on this split's targets - a real
  model fitted without looking at this split - and `split_entropy_bits`, this split's own
  bin entropy (the best any context-free model could do on it, an optimistic floor).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
from collections import defaultdict

import jax
import numpy as np

from wavegen.data import input_pipeline
from wavegen.data.dataset import Dataset, DatasetError, open_dataset
from wavegen.errors import UserError
from wavegen.model import wavenet as model_lib
from wavegen.progress import progress_bar
from wavegen.training import run_dir as run_lib
from wavegen.training import scoring

log = logging.getLogger("wavegen.evaluate")


class EvaluationError(UserError):
    """An evaluation that cannot run; the message is one clear line."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    checkpoint: str  # a training run directory
    step: str = run_lib.DEFAULT_STEP  # best, latest or a step number (see run_dir)
    split: str = "test"
    use_ema: bool | None = None  # None: the EMA exactly when the run kept one
    batches: int | None = None  # None: the whole split; N: only the first N batches
    batch_size: int = 16  # global, over the local devices
    data_dir: str | None = None  # None: the dataset the run trained on
    progress: bool = True

    def __post_init__(self):
        if self.batches is not None and self.batches < 1:
            raise EvaluationError(f"batches must be >= 1 or null, got {self.batches}")
        if self.batch_size < 1:
            raise EvaluationError(f"batch_size must be >= 1, got {self.batch_size}")


def evaluate_checkpoint(cfg: EvalConfig) -> dict:
    """Scores the checkpoint on the split; writes and returns the report."""
    run = run_lib.load_run(cfg.checkpoint, cfg.step, cfg.use_ema)
    dataset = _open_matching_dataset(cfg, run)
    train_split = run.data["train_split"]  # the run's own
    for split in (cfg.split, train_split):
        if dataset.num_examples(split) == 0:
            raise EvaluationError(f"{dataset.dir} has no examples in split {split!r} (it "
                                  f"has: {dataset.describe_splits()})")
    per_example, hist = _score(cfg, dataset, run.graphdef, run.params, run.model_cfg)
    report = _report(cfg, run.run_dir, run.step, run.use_ema, dataset, per_example, hist,
                     train_split)
    _write(run.run_dir, report)
    return report


def _open_matching_dataset(cfg: EvalConfig, run: run_lib.Run) -> Dataset:
    """data_dir=..., else the dataset the run recorded; refused when its audio settings
    are not the ones the run trained on."""
    path = cfg.data_dir or run.data.get("dir")
    if not path:
        raise EvaluationError(f"{run.run_dir} does not record its dataset; pass "
                              "data_dir=DIR")
    try:
        dataset = open_dataset(path)
    except DatasetError as e:
        raise EvaluationError(f"{e} (pass data_dir=DIR if the dataset moved)") from e
    if dataset.spec != run.spec:
        raise EvaluationError(f"{path} is not the dataset {run.run_dir} trained on: its "
                              f"audio settings differ ({dataset.spec} vs {run.spec})")
    return dataset


def _score(cfg: EvalConfig, dataset: Dataset, graphdef, params, model_cfg):
    """(song_id, genre index, bits sum) of every real example, and the scored targets'
    histogram."""
    devices = jax.local_devices()
    n = len(devices)
    if cfg.batch_size % n:
        raise EvaluationError(f"batch_size={cfg.batch_size} does not divide evenly over "
                              f"{n} device(s)")
    window = input_pipeline.Window(dataset.spec, model_lib.receptive_field(model_cfg))
    batches = input_pipeline.eval_batches(
        dataset, window, per_device_batch=cfg.batch_size // n, split=cfg.split,
        num_devices=n, max_batches=cfg.batches, song_ids=True)
    total = math.ceil(dataset.num_examples(cfg.split) / cfg.batch_size)
    scores = scoring.evaluate(
        scoring.make_p_eval_step(graphdef), scoring.replicate(params, devices),
        progress_bar("evaluate", "batch", min(total, cfg.batches or total), cfg.progress,
                     batches), examples=True)
    return scores["examples"], scores["target_counts"]


def unigram_cross_entropy_bits(train_counts: np.ndarray, counts: np.ndarray) -> float:
    """Bits/sample of the add-one-smoothed unigram model of `train_counts` on `counts`."""
    train_counts = np.asarray(train_counts, np.float64)
    p = (train_counts + 1.0) / (train_counts.sum() + train_counts.size)
    counts = np.asarray(counts, np.float64)
    return float(-(counts * np.log2(p)).sum() / counts.sum())


def _report(cfg: EvalConfig, run_dir: str, step: int, use_ema: bool, dataset: Dataset,
            rows: list, hist: np.ndarray, train_split: str) -> dict:
    """The report: overall, per genre and per song, with the unigram model of the run's
    training split scored on this split."""
    spec = dataset.spec
    per_chunk = spec.target_samples
    songs: dict[str, list] = defaultdict(lambda: [0.0, 0, None])
    genres: dict[str, list] = defaultdict(lambda: [0.0, 0, 0])
    for song, g, bits in rows:
        s = songs[song]
        s[0] += bits
        s[1] += per_chunk
        s[2] = spec.genres[g]
        gr = genres[spec.genres[g]]
        gr[0] += bits
        gr[1] += per_chunk
        gr[2] += 1
    total_bits, total_targets = sum(r[2] for r in rows), per_chunk * len(rows)
    train_hist = input_pipeline.bin_histogram(dataset, train_split)
    per_song = sorted(({"song_id": k, "genre": v[2], "bits_per_sample": v[0] / v[1],
                        "targets": v[1]} for k, v in songs.items()),
                      key=lambda r: -r["bits_per_sample"])
    return {
        "checkpoint": run_dir, "step": step, "split": cfg.split, "use_ema": use_ema,
        "dataset": dataset.dir, "complete": cfg.batches is None,
        "bits_per_sample": total_bits / total_targets, "targets": total_targets,
        "chunks": len(rows), "songs": len(songs),
        "unigram_train_bits": unigram_cross_entropy_bits(train_hist, hist),
        "split_entropy_bits": input_pipeline.entropy_bits(hist),
        "per_genre": {g: {"bits_per_sample": v[0] / v[1], "targets": v[1], "chunks": v[2]}
                      for g, v in sorted(genres.items())},
        "per_song": per_song,
    }


def _write(run_dir: str, report: dict) -> None:
    out = os.path.join(run_dir, run_lib.EVAL)
    os.makedirs(out, exist_ok=True)
    name = f"{report['split']}-{report['step']}"
    report["json"] = os.path.join(out, name + ".json")
    report["csv"] = os.path.join(out, name + "-songs.csv")
    with open(report["csv"], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["song_id", "genre", "bits_per_sample", "targets"])
        w.writeheader()
        w.writerows(report["per_song"])
    with open(report["json"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)


def format_report(r: dict) -> str:
    genres = ", ".join(f"{g} {v['bits_per_sample']:.3f}" for g, v in r["per_genre"].items())
    part = "" if r["complete"] else " (first batches only: batches=N)"
    return (f"{r['split']} split{part}, step {r['step']}{' (EMA)' if r['use_ema'] else ''}: "
            f"{r['bits_per_sample']:.3f} bits/sample over {r['targets']} targets of "
            f"{r['chunks']} chunks from {r['songs']} songs; unigram (train) "
            f"{r['unigram_train_bits']:.3f}, split entropy {r['split_entropy_bits']:.3f}; "
            f"per genre: {genres}; -> {r['json']}")
