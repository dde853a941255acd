"""The training input pipeline: the preprocessing pipeline's TFDS shards -> numpy batches.

Everything about the audio (sample rate, bits, chunk and context lengths, genres) comes
from the opened dataset (`wavegen.data.dataset.open_dataset`), passed in; nothing is
retyped and nothing is read twice. The model enters as its receptive field in a `Window`,
checked against the dataset's chunks once, where it is made.

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

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterator

import numpy as np

from wavegen.data.dataset import Dataset, DatasetError, DatasetSpec, find_bad_shard
from wavegen.errors import UserError


def _tf():
    import tensorflow as tf

    return tf


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


@dataclasses.dataclass(frozen=True)
class Window:
    """Where examples are cut from a chunk, for a model of `receptive_field` samples.

    Training windows are RF + `targets` samples whose targets lie in the chunk's target
    region; evaluation windows are each chunk's last RF + target_samples samples. Made
    once per run: the model/dataset fit (receptive field vs context) is checked here.
    """

    spec: DatasetSpec
    receptive_field: int
    targets: int | None = None  # training targets per example; None: the chunk's

    def __post_init__(self):
        spec, rf = self.spec, self.receptive_field
        if rf < 1:
            raise ValueError(f"receptive_field must be >= 1, got {rf}")
        if rf > spec.context_samples:
            raise UserError(
                f"the model's receptive field of {rf} samples "
                f"({1000.0 * rf / spec.sample_rate:.1f} ms at {spec.sample_rate} Hz) exceeds "
                f"the dataset's context of {spec.context_samples} samples per chunk: the "
                f"first targets of a chunk would lack context (re-run the pipeline with "
                f"--context_samples >= {rf}, or use a smaller model)")
        if self.targets is not None and not 0 < self.targets <= spec.target_samples:
            raise UserError(f"train.targets must be in 1..{spec.target_samples} (the "
                            f"chunk's target samples), got {self.targets}")

    @property
    def train_targets(self) -> int:
        return self.spec.target_samples if self.targets is None else int(self.targets)

    @property
    def train_length(self) -> int:
        """Samples per training example: RF - 1 inputs of context, T targets, the last."""
        return self.receptive_field + self.train_targets

    @property
    def train_bounds(self) -> tuple[int, int]:
        """First and last allowed start: the targets stay in the chunk's target region."""
        lo = self.spec.context_samples - self.receptive_field
        return lo, self.spec.chunk_samples - self.train_length

    @property
    def eval_length(self) -> int:
        return self.receptive_field + self.spec.target_samples

    @property
    def eval_start(self) -> int:
        return self.spec.context_samples - self.receptive_field


@contextlib.contextmanager
def reading(dataset: Dataset, split: str):
    """Turns TensorFlow's read failures of a split (a corrupt or cut-short record, a
    record of another length, a shard gone) into one DatasetError naming the shard: TF's
    own errors name only a byte offset. Only a failure the shards explain is turned;
    anything else keeps its traceback."""
    tf = _tf()
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
            tf.errors.NotFoundError) as e:
        problem = find_bad_shard(dataset, split.split("[")[0])
        if problem is None:
            raise
        raise DatasetError(problem) from e


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


def load_split(dataset: Dataset, split: str, *, shuffle_files: bool = False, seed: int = 0,
               process_index: int | None = None, process_count: int | None = None,
               song_ids: bool = False):
    """The split's examples as a tf.data.Dataset of {"audio", "genre"} (+ "song_id" if
    asked), this process's part."""
    tf, tfds = _tf(), _tfds()
    if split not in dataset.builder.info.splits:
        raise ValueError(f"{dataset.dir} has no split {split!r}; it has "
                         f"{dataset.describe_splits()}")
    index, count = _process(process_index, process_count)
    if count > 1:
        split = tfds.even_splits(split, n=count, drop_remainder=True)[index]
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(shuffle_seed=seed, options=options, try_autocache=False,
                                  shuffle_reshuffle_each_iteration=True)
    keys = {"audio": True, "genre": True, **({"song_id": True} if song_ids else {})}
    return dataset.builder.as_dataset(
        split=split, shuffle_files=shuffle_files, read_config=read_config,
        decoders=tfds.decode.PartialDecoding(keys))


class BatchIterator:
    """Numpy batches from a tf.data pipeline, with checkpointable position (see module doc)."""

    def __init__(self, dataset, spec: DatasetSpec, window: int,
                 source: tuple[Dataset, str] | None = None):
        self._dataset = dataset
        self._it = iter(dataset)
        self.spec = spec
        self.window = window
        self._source = source  # (dataset, split) read: names the shard of a read failure

    def _next(self):
        if self._source is None:
            return next(self._it)
        with reading(*self._source):
            return next(self._it)

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self._next()
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
            self._next()


def _check_batch(per_device_batch: int) -> None:
    if per_device_batch < 1:
        raise ValueError(f"per_device_batch must be >= 1, got {per_device_batch}")


def train_batches(dataset: Dataset, window: Window, *, per_device_batch: int, seed: int = 0,
                  split: str = "train", shuffle_buffer: int = 512,
                  num_devices: int | None = None, process_index: int | None = None,
                  process_count: int | None = None, prefetch: int = 2) -> BatchIterator:
    """The endless, shuffled training stream of (devices, per_device, RF + T) batches.

    T = window.train_targets: the chunk's target samples by default (each sample scored
    once per epoch); a smaller T crops a seeded random window from the target region.
    """
    tf = _tf()
    _check_batch(per_device_batch)
    devices, length = _local_devices(num_devices), window.train_length
    lo, hi = window.train_bounds

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

    ds = load_split(dataset, split, shuffle_files=True, seed=seed,
                    process_index=process_index, process_count=process_count)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(per_device_batch, drop_remainder=True).batch(devices, drop_remainder=True)
    return BatchIterator(ds.prefetch(prefetch), dataset.spec, length, (dataset, split))


def eval_batches(dataset: Dataset, window: Window, *, per_device_batch: int,
                 split: str = "validation", num_devices: int | None = None,
                 process_index: int | None = None, process_count: int | None = None,
                 max_batches: int | None = None, song_ids: bool = False
                 ) -> Iterator[dict[str, np.ndarray]]:
    """One pass over a split in order, every target sample scored once.

    Windows are each chunk's last RF + target_samples samples. The last batch is padded
    with copies of a real example and marked by "mask" (1 real, 0 padding), so every
    batch has the same shape for pmap. `song_ids`: also "song_id" (devices, per_device)
    bytes, for host-side bookkeeping (not for the device).
    """
    tf = _tf()
    _check_batch(per_device_batch)
    devices, length, start = _local_devices(num_devices), window.eval_length, window.eval_start

    def crop(ex):
        out = {"audio": tf.cast(ex["audio"][start:start + length], tf.int32),
               "genre": tf.cast(ex["genre"], tf.int32)}
        if song_ids:
            out["song_id"] = ex["song_id"]
        return out

    ds = load_split(dataset, split, process_index=process_index, process_count=process_count,
                    song_ids=song_ids)
    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    full = devices * per_device_batch
    ds = ds.batch(full).prefetch(2)
    it = iter(ds)
    for i in itertools.count():
        if max_batches is not None and i >= max_batches:
            return
        with reading(dataset, split):
            batch = next(it, None)
        if batch is None:
            return
        arrays = {k: v.numpy() for k, v in batch.items()}
        n = len(arrays["audio"])
        mask = np.zeros(full, np.float32)
        mask[:n] = 1.0
        out = {"mask": mask.reshape(devices, per_device_batch)}
        for k, v in arrays.items():
            if n < full:
                v = np.concatenate([v, np.repeat(v[:1], full - n, axis=0)])
            out[k] = v.reshape((devices, per_device_batch) + v.shape[1:])
        yield out


# --------------------------------------------------------------------------------------
# The unigram baseline


def bin_histogram(dataset: Dataset, split: str, *, process_index: int | None = 0,
                  process_count: int | None = 1) -> np.ndarray:
    """Counts of each bin over the split's target samples (each chunk's target region)."""
    tf = _tf()
    k, context = dataset.spec.num_classes, dataset.spec.context_samples
    ds = load_split(dataset, split, process_index=process_index, process_count=process_count)
    ds = ds.map(lambda ex: tf.math.bincount(tf.cast(ex["audio"][context:], tf.int32),
                                            minlength=k, maxlength=k, dtype=tf.int64),
                num_parallel_calls=tf.data.AUTOTUNE)
    with reading(dataset, split):
        return ds.reduce(tf.zeros([k], tf.int64), lambda a, b: a + b).numpy()


def entropy_bits(counts: np.ndarray) -> float:
    """The entropy (bits) of the distribution given by counts."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("entropy of an empty histogram")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def unigram_entropy_bits(dataset: Dataset, split: str) -> float:
    """Bits per sample of the best context-free model of the split: its bin histogram's
    entropy. A model must get below this to be using context."""
    return entropy_bits(bin_histogram(dataset, split))
