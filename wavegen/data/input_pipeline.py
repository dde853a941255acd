"""The training input pipeline: the preprocessing pipeline's TFDS shards -> numpy batches.

Everything about the audio (sample rate, bits, chunk and context lengths, genres) comes
from the dataset's metadata (`wavegen.dataset.load_dataset_spec`); nothing is retyped.

Batches are dicts of numpy arrays shaped for `jax.pmap`, leading axis = local devices::

    {"audio": (devices, per_device, receptive_field + targets) int32,
     "genre": (devices, per_device) int32}            (+ "mask" float32 for evaluation)

The crop. A chunk holds `context_samples` of context, then `target_samples` new samples
(consecutive chunks overlap by the context, so every sample is a target exactly once).
A model with receptive field RF sees its input through RF samples (the output at t uses
inputs t-RF+1 .. t and predicts t+1), so each example is cropped to a window of
RF + T samples that ends inside the chunk and whose last T samples are targets in the
chunk's target region: the model reads window[:-1] and its last T outputs are scored
against window[RF:]. Every scored target has its full RF samples of context inside the
chunk, so there is no mask over time and no wasted context; outputs whose context would
reach before the window are never scored. With T = target_samples (the default) the window
is exactly the chunk's last RF + target_samples samples; with a smaller T the training
window's position in the target region is drawn per example (seeded, see below).

Determinism and resuming. The training stream is a deterministic function of (dataset,
seed, process index, process count, batch shape): file order and the shuffle buffer are
seeded, the per-example crop offset is drawn with a stateless RNG keyed by (seed, the
example's position in the stream), and tf.data runs with `deterministic=True`. A run
restores its position with `BatchIterator.save(prefix)` / `restore(prefix)`, which
checkpoint the tf.data iterator itself (`tf.train.Checkpoint(iterator=...)`: the shuffle
buffer, file positions and prefetched elements), so resuming costs one small file read
instead of replaying the stream. Batches handed out are exactly those after the saved
point; the Python wrapper holds no read-ahead of its own (prefetching happens inside
tf.data, whose buffer is part of the checkpoint). Restoring requires a pipeline built with
the same arguments. Because the stream is deterministic, re-creating the iterator and
skipping n batches (`skip_batches`) reaches the same position when no iterator checkpoint
is at hand - exact, but it reads and discards the skipped data.

Multi-host: each process reads its own `tfds.even_splits` part of the split
(`jax.process_index()` of `jax.process_count()`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from wavegen.data.dataset import DatasetSpec, load_dataset_spec


def _tf():
    import tensorflow as tf

    return tf


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


def window_length(receptive_field: int, targets: int) -> int:
    """Samples per example: RF - 1 inputs of context, T targets, and the last target."""
    return receptive_field + targets


def check_window(spec: DatasetSpec, receptive_field: int, targets: int) -> None:
    """Refuses a window that does not fit the dataset's chunks, naming the numbers."""
    if receptive_field < 1:
        raise ValueError(f"receptive_field must be >= 1, got {receptive_field}")
    if receptive_field > spec.context_samples:
        raise ValueError(
            f"receptive field of {receptive_field} samples exceeds the dataset's context of "
            f"{spec.context_samples} samples per chunk: the first targets of a chunk would "
            f"lack context (re-run the pipeline with --context_samples >= {receptive_field} "
            "or use a smaller model)")
    if not 0 < targets <= spec.target_samples:
        raise ValueError(f"targets per example must be in 1..{spec.target_samples} (the "
                         f"chunk's target samples), got {targets}")


def _window_bounds(spec: DatasetSpec, receptive_field: int, targets: int) -> tuple[int, int]:
    """First and last allowed window start: its targets stay in the chunk's target region."""
    lo = spec.context_samples - receptive_field
    hi = spec.chunk_samples - receptive_field - targets
    return lo, hi


def _local_devices(num_devices: int | None) -> int:
    if num_devices is not None:
        if num_devices < 1:
            raise ValueError(f"num_devices must be >= 1, got {num_devices}")
        return num_devices
    import jax

    return jax.local_device_count()


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in 0..{process_count - 1}")
    return process_index, process_count


def load_split(data_dir: str, split: str, *, shuffle_files: bool = False, seed: int = 0,
               process_index: int | None = None, process_count: int | None = None):
    """The split's examples as a tf.data.Dataset of {"audio", "genre"} (this process's part)."""
    tf, tfds = _tf(), _tfds()
    load_dataset_spec(data_dir)  # one clear error for a missing or incomplete dataset
    builder = tfds.builder_from_directory(data_dir)
    if split not in builder.info.splits:
        raise ValueError(f"{data_dir} has no split {split!r}; it has "
                         f"{', '.join(sorted(builder.info.splits)) or 'none'}")
    index, count = _process(process_index, process_count)
    if count > 1:
        split = tfds.even_splits(split, n=count, drop_remainder=True)[index]
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(shuffle_seed=seed, options=options, try_autocache=False,
                                  shuffle_reshuffle_each_iteration=True)
    return builder.as_dataset(
        split=split, shuffle_files=shuffle_files, read_config=read_config,
        decoders=tfds.decode.PartialDecoding({"audio": True, "genre": True}))


class BatchIterator:
    """Numpy batches from a tf.data pipeline, with checkpointable position (see module doc)."""

    def __init__(self, dataset, spec: DatasetSpec, window: int):
        self._dataset = dataset
        self._it = iter(dataset)
        self.spec = spec
        self.window = window

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._it)
        return {k: v.numpy() for k, v in batch.items()}

    def save(self, prefix: str) -> str:
        """Writes the iterator's position (prefix.index, prefix.data-*); returns the path."""
        tf = _tf()
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        return tf.train.Checkpoint(iterator=self._it).write(prefix)

    def restore(self, prefix: str) -> None:
        """Continues exactly after the batch that was last handed out before `save`."""
        tf = _tf()
        if not tf.io.gfile.exists(prefix + ".index"):
            raise FileNotFoundError(f"no input-pipeline checkpoint at {prefix} "
                                    f"({prefix}.index is missing)")
        tf.train.Checkpoint(iterator=self._it).read(prefix).assert_consumed()

    def skip_batches(self, n: int) -> None:
        """Advances by n batches (reads them): the replay route to a position."""
        for _ in range(n):
            next(self._it)


def _windows(data_dir: str, receptive_field: int, targets: int | None,
             per_device_batch: int, num_devices: int | None):
    """What both streams need: (spec, devices, window length, (first, last) window start).
    `targets` None: the chunk's target samples."""
    spec = load_dataset_spec(data_dir)
    targets = spec.target_samples if targets is None else int(targets)
    check_window(spec, receptive_field, targets)
    if per_device_batch < 1:
        raise ValueError(f"per_device_batch must be >= 1, got {per_device_batch}")
    return (spec, _local_devices(num_devices), window_length(receptive_field, targets),
            _window_bounds(spec, receptive_field, targets))


def train_batches(data_dir: str, *, receptive_field: int, per_device_batch: int,
                  targets: int | None = None, seed: int = 0, split: str = "train",
                  shuffle_buffer: int = 512, num_devices: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  prefetch: int = 2) -> BatchIterator:
    """The endless, shuffled training stream of (devices, per_device, RF + T) batches.

    `targets` (T) defaults to the chunk's target samples (each sample scored once per
    epoch); a smaller T crops a seeded random window from the target region.
    """
    tf = _tf()
    spec, devices, length, (lo, hi) = _windows(data_dir, receptive_field, targets,
                                               per_device_batch, num_devices)

    def crop(position, ex):
        if hi > lo:
            start = lo + tf.random.stateless_uniform(
                [], seed=tf.stack([tf.constant(seed, tf.int64), position]),
                minval=0, maxval=hi - lo + 1, dtype=tf.int32)
        else:
            start = lo
        audio = tf.cast(ex["audio"][start:start + length], tf.int32)
        return {"audio": tf.ensure_shape(audio, [length]),
                "genre": tf.cast(ex["genre"], tf.int32)}

    ds = load_split(data_dir, split, shuffle_files=True, seed=seed,
                    process_index=process_index, process_count=process_count)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(per_device_batch, drop_remainder=True).batch(devices, drop_remainder=True)
    return BatchIterator(ds.prefetch(prefetch), spec, length)


def eval_batches(data_dir: str, *, receptive_field: int, per_device_batch: int,
                 split: str = "validation", num_devices: int | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One pass over a split in order, every target sample scored once.

    Windows are each chunk's last RF + target_samples samples. The last batch is padded
    with copies of a real example and marked by "mask" (1 real, 0 padding), so every
    batch has the same shape for pmap.
    """
    tf = _tf()
    spec, devices, length, (start, _) = _windows(data_dir, receptive_field, None,
                                                 per_device_batch, num_devices)

    def crop(ex):
        return {"audio": tf.cast(ex["audio"][start:start + length], tf.int32),
                "genre": tf.cast(ex["genre"], tf.int32)}

    ds = load_split(data_dir, split, process_index=process_index, process_count=process_count)
    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(devices * per_device_batch).prefetch(2)
    for i, batch in enumerate(ds):
        if max_batches is not None and i >= max_batches:
            return
        audio, genre = batch["audio"].numpy(), batch["genre"].numpy()
        n, full = len(audio), devices * per_device_batch
        mask = np.zeros(full, np.float32)
        mask[:n] = 1.0
        if n < full:
            audio = np.concatenate([audio, np.repeat(audio[:1], full - n, axis=0)])
            genre = np.concatenate([genre, np.repeat(genre[:1], full - n, axis=0)])
        yield {"audio": audio.reshape(devices, per_device_batch, length),
               "genre": genre.reshape(devices, per_device_batch),
               "mask": mask.reshape(devices, per_device_batch)}


# --------------------------------------------------------------------------------------
# The unigram baseline


def bin_histogram(data_dir: str, split: str, *, process_index: int | None = 0,
                  process_count: int | None = 1) -> np.ndarray:
    """Counts of each bin over the split's target samples (each chunk's target region)."""
    tf = _tf()
    spec = load_dataset_spec(data_dir)
    k, context = spec.num_classes, spec.context_samples
    ds = load_split(data_dir, split, process_index=process_index, process_count=process_count)
    ds = ds.map(lambda ex: tf.math.bincount(tf.cast(ex["audio"][context:], tf.int32),
                                            minlength=k, maxlength=k, dtype=tf.int64),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.reduce(tf.zeros([k], tf.int64), lambda a, b: a + b).numpy()


def entropy_bits(counts: np.ndarray) -> float:
    """The entropy (bits) of the distribution given by counts."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("entropy of an empty histogram")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def unigram_entropy_bits(data_dir: str, split: str) -> float:
    """Bits per sample of the best context-free model of the split: its bin histogram's
    entropy. A model must get below this to be using context."""
    return entropy_bits(bin_histogram(data_dir, split))


def check_splits(data_dir: str, *splits: str) -> None:
    """One clear error, before any step, if a split is missing or empty."""
    info = _tfds().builder_from_directory(data_dir).info.splits
    for split in splits:
        if split not in info or info[split].num_examples == 0:
            have = ", ".join(f"{k} ({v.num_examples})" for k, v in sorted(info.items()))
            raise ValueError(f"{data_dir} has no examples in split {split!r} (it has: "
                             f"{have or 'none'}); re-run the pipeline with a --split that "
                             "gives it songs, or choose data.train_split/data.eval_split")
