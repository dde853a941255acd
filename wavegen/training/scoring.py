"""Scoring: the one place an evaluation's numbers are computed.

Every evaluation (training's periodic one, `evaluate.py`'s report, the benchmarks) scores a
batch with the pure per-device `score` (per-batch sums) and adds batches up with
`evaluate`; `eval_step` is `score` under the model's own loss (`model_loss`). Nothing here
knows the optimizer: evaluation and generation never import the training step
(`wavegen.training.steps`, which builds its training step on `model_loss`).

The loss of one example: the model reads window[:-1] (RF - 1 + T samples) and its last T
outputs are scored against window[RF:]; see `wavegen.data.input_pipeline` for the window.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavegen.data import input_pipeline
from wavegen.model.wavenet import WaveNet, receptive_field

AXIS = "batch"


def merge_model(graphdef: nnx.GraphDef, params: dict) -> WaveNet:
    return nnx.merge(graphdef, params)


def model_loss(model: WaveNet, batch: dict) -> jax.Array:
    """Bits per target, (per_device, T): the last T outputs against window[RF:]."""
    rf = receptive_field(model.cfg)
    audio = batch["audio"]
    if audio.shape[-1] <= rf:
        raise ValueError(f"windows of {audio.shape[-1]} samples leave no targets for a "
                         f"receptive field of {rf}")
    genre = batch["genre"] if model.cfg.num_genres else None
    outputs = model(audio[:, :-1], genre)[:, rf - 1:]
    return model.nll_bits(outputs, audio[:, rf:])


def score(bits: jax.Array, batch: dict, num_classes: int,
          axis_name: str | None = AXIS) -> dict[str, jax.Array]:
    """The per-batch sums every evaluation reads, from per-target bits (per_device, T).

    Only real examples (batch["mask"] 1) count. `nll_bits_sum` and `targets` are summed
    over `axis_name`; `example_bits` (per_device,) is each example's own bits sum, and
    `target_counts` (num_classes,) this device's histogram of the scored target bins (the
    unigram baseline's counts). The targets are the last T samples of each window, the
    ones `model_loss` scored (window[RF:]), so any model's bits can be scored here.
    """
    weights = batch["mask"][:, None] * jnp.ones_like(bits)
    sums = {"nll_bits_sum": jnp.sum(bits * weights), "targets": jnp.sum(weights)}
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    targets = batch["audio"][:, -bits.shape[-1]:]
    # Integer counts: exact however many targets a split has once summed on the host.
    real = (weights > 0).astype(jnp.int32)
    counts = jnp.bincount(targets.reshape(-1), weights=real.reshape(-1), length=num_classes)
    return {**sums, "example_bits": jnp.sum(bits * weights, axis=-1),
            "target_counts": counts}


def eval_step(params: dict, batch: dict, *, graphdef: nnx.GraphDef,
              axis_name: str | None = AXIS) -> dict[str, jax.Array]:
    """`score` of this device's shard of the batch under the model's own loss."""
    model = merge_model(graphdef, params)
    return score(model_loss(model, batch), batch, model.cfg.num_classes, axis_name)


# --------------------------------------------------------------------------------------
# Data-parallel wrappers


def make_p_eval_step(graphdef: nnx.GraphDef) -> Callable:
    """jax.pmap'd eval_step(params, batch) -> `score`'s sums (per device: leading axis)."""
    return jax.pmap(functools.partial(eval_step, graphdef=graphdef, axis_name=AXIS),
                    axis_name=AXIS)


def replicate(tree: Any, devices: list | None = None) -> Any:
    """One copy per local device, stacked on a new leading axis (what pmap expects)."""
    devices = list(devices or jax.local_devices())
    mesh = jax.sharding.Mesh(np.array(devices), (AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))

    def put(x):
        x = np.asarray(x)
        return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape), sharding)

    return jax.tree.map(put, tree)


def unreplicate(tree: Any) -> Any:
    """The first device's copy of every leaf."""
    return jax.tree.map(lambda x: x[0], tree)


# --------------------------------------------------------------------------------------
# Evaluation over a split


def evaluate(p_eval_step: Callable, params: Any, batches: Iterable[dict], *,
             examples: bool = False) -> dict:
    """NLL (bits/sample) over the batches, and the unigram baseline on the same targets.

    `p_eval_step(params, batch)` returns `score`'s sums (wavegen's `make_p_eval_step`, or
    any model's pmapped step built on `score`); `params` are replicated. The baseline is
    the entropy of the scored targets' bin histogram (`target_counts`): the best a model
    ignoring context can do on them. `examples`: also "examples", one (song_id, genre,
    bits sum) per real example in order; the batches then carry "song_id" (`eval_batches`
    with song_ids=True), which stays on the host.
    """
    nll, count, hist, rows = 0.0, 0.0, None, []
    for batch in batches:
        batch = dict(batch)
        ids = batch.pop("song_id", None)  # bytes: host-side bookkeeping only
        sums = p_eval_step(params, batch)
        nll += float(sums["nll_bits_sum"][0])
        count += float(sums["targets"][0])
        batch_hist = np.asarray(sums["target_counts"], np.int64).sum(axis=0)
        hist = batch_hist if hist is None else hist + batch_hist
        if examples:
            rows += _real_examples(batch, sums, ids)
    # `count` is summed over every device of every process, so all processes stop here
    # together, before a gather that needs a histogram from each.
    if count == 0:
        raise ValueError("evaluation saw no targets (an empty split?)")
    if jax.process_count() > 1:  # every process saw its own part of the split
        from jax.experimental import multihost_utils

        hist = np.asarray(multihost_utils.process_allgather(hist)).sum(axis=0)
    out = {"nll_bits": nll / count, "unigram_bits": input_pipeline.entropy_bits(hist),
           "targets": count, "target_counts": hist}
    return {**out, "examples": rows} if examples else out


def _real_examples(batch: dict, sums: dict, ids: np.ndarray | None) -> list[tuple]:
    """(song_id, genre, bits sum) of each real example of a scored batch."""
    real = np.flatnonzero(np.asarray(batch["mask"]).reshape(-1) > 0)
    bits = np.asarray(sums["example_bits"]).reshape(-1)
    genres = np.asarray(batch["genre"]).reshape(-1)
    ids = None if ids is None else np.asarray(ids).reshape(-1)
    return [(None if ids is None else ids[i].decode("utf-8"), int(genres[i]), float(bits[i]))
            for i in real]
