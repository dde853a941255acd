"""Models whose every parameter is random (plain helper, imported as `from random_params
import randomized_split`).

A freshly initialised WaveNet has all-zero biases: a test run on it cannot tell a
computation that drops a bias from one that adds it. These parameters are random
everywhere - biases, input and genre embeddings, every kernel - at scales that keep the
gates away from saturation, so each of them visibly changes the outputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wavegen.model import wavenet as wm
from wavegen.training.steps import merge_model, split_model

BIAS_SCALE = 0.5


def randomize(params: dict, seed: int) -> dict:
    """params with every array redrawn: zero arrays (the biases) as N(0, BIAS_SCALE^2),
    the others with fresh normal noise of their own spread added."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = []
    for x, k in zip(leaves, keys):
        noise = jax.random.normal(k, x.shape, jnp.float32)
        spread = float(jnp.std(x))
        new.append(noise * BIAS_SCALE if spread == 0.0 else x + noise * spread)
    return jax.tree.unflatten(treedef, new)


def randomized_split(cfg: wm.ModelConfig, seed: int = 0):
    """(model, graphdef, params) of a model with every parameter random."""
    graphdef, params = split_model(wm.create_model(cfg, seed=seed))
    params = randomize(params, seed + 1000)
    return merge_model(graphdef, params), graphdef, params
