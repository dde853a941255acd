"""The dataset's schema and metadata: one home for the facts shared by writer and readers.

The Beam pipeline writes TFRecord shards of examples serialized with `features(...)`, and
records the audio facts (`DatasetSpec`) in the TFDS metadata (`DIR/metadata.json`). A
reader opens a dataset once with `open_dataset(DIR)`: the returned `Dataset` holds the
spec and the TFDS builder, and is passed to everything that reads the data (the input
pipeline, evaluation), so `metadata.json` is read and the builder made once per run.
`load_dataset_spec(DIR)` reads only the spec (no TensorFlow). Nothing about the audio
format is typed twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from wavegen.data import audio, paths
from wavegen.errors import UserError

DATASET_NAME = "wavegen"
UNKNOWN_GENRE = "unknown"
# The dataset's file names, here only. The TFDS shard file names:
# wavegen-train.tfrecord-00000-of-00004 (shard_filename; SHARD_PATTERN matches them).
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
SHARD_DIGITS = 5
MAX_SHARDS = 10**SHARD_DIGITS - 1  # shards per split: the names count to 5 digits
SHARD_PATTERN = re.compile(rf"{DATASET_NAME}-[A-Za-z][A-Za-z0-9_]*\.tfrecord-"
                           rf"\d{{{SHARD_DIGITS}}}-of-\d{{{SHARD_DIGITS}}}")
METADATA_VERSION = 1
INFO_FILE = "dataset_info.json"  # written last: without it a directory is no dataset


def shard_filename(split: str, shard: int, num_shards: int) -> str:
    """The file name of shard `shard` (from 0) of `num_shards` of a split."""
    width = SHARD_DIGITS
    return FILENAME_TEMPLATE.format(DATASET=DATASET_NAME, SPLIT=split, FILEFORMAT="tfrecord",
                                    SHARD_X_OF_Y=f"{shard:0{width}d}-of-{num_shards:0{width}d}")


class DatasetError(UserError):
    """A dataset directory that is missing, incomplete or not a wavegen dataset."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The audio facts of a dataset, written with it and read by training and sampling."""

    sample_rate: int
    quantization: str  # "mulaw" or "linear"
    bits: int  # 2**bits classes
    chunk_samples: int  # every `audio` example's length, context included
    context_samples: int  # leading samples of each chunk that are context only
    genres: tuple[str, ...] = (UNKNOWN_GENRE,)

    def __post_init__(self):
        if self.quantization not in audio.QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {audio.QUANTIZATIONS}, "
                             f"got {self.quantization!r}")
        audio.bins_dtype(self.bits)
        audio.chunk_stride(self.chunk_samples, self.context_samples)
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if UNKNOWN_GENRE not in self.genres:
            raise ValueError(f"genres must include {UNKNOWN_GENRE!r}: {self.genres}")

    @property
    def num_classes(self) -> int:
        return audio.num_classes(self.bits)

    @property
    def target_samples(self) -> int:
        """Samples per chunk that are training targets (chunk minus context)."""
        return self.chunk_samples - self.context_samples

    @property
    def dtype(self) -> np.dtype:
        return audio.bins_dtype(self.bits)

    def genre_index(self, name: str) -> int:
        try:
            return self.genres.index(name)
        except ValueError:
            raise ValueError(f"unknown genre {name!r}; the dataset's genres are: "
                             f"{', '.join(self.genres)}") from None

    def to_metadata(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["genres"] = list(self.genres)
        d["wavegen_metadata_version"] = METADATA_VERSION
        return d

    @classmethod
    def from_metadata(cls, md: dict[str, Any], where: str = "metadata") -> "DatasetSpec":
        fields = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in fields if k not in md]
        if missing:
            raise DatasetError(f"{where}: not a wavegen dataset, metadata lacks "
                               f"{', '.join(missing)}")
        kw = {k: md[k] for k in fields}
        kw["genres"] = tuple(kw["genres"])
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where}: invalid dataset metadata: {e}") from e


def genre_names(seen: Sequence[str]) -> tuple[str, ...]:
    """The ClassLabel names: the genres seen, sorted, with `unknown` always present."""
    names = {g for g in seen if g}
    names.add(UNKNOWN_GENRE)
    return tuple(sorted(names))


def features(spec: DatasetSpec):
    """The TFDS features of one example. Shared by the writer and every reader."""
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        # The bins, stored as raw bytes (not widened to int64).
        "audio": tfds.features.Tensor(shape=(spec.chunk_samples,), dtype=spec.dtype,
                                      encoding="bytes"),
        # Stable and readable: a file's path relative to the input it was found under.
        "song_id": tfds.features.Text(),
        "chunk_index": tfds.features.Scalar(dtype=np.int32),
        "genre": tfds.features.ClassLabel(names=list(spec.genres)),
    })


def example(spec: DatasetSpec, bins: np.ndarray, song_id: str, chunk_index: int,
            genre: str) -> dict[str, Any]:
    if bins.shape != (spec.chunk_samples,) or bins.dtype != spec.dtype:
        raise ValueError(f"{song_id}#{chunk_index}: chunk has shape {bins.shape} "
                         f"{bins.dtype}, expected ({spec.chunk_samples},) {spec.dtype}")
    return {"audio": bins, "song_id": song_id, "chunk_index": chunk_index, "genre": genre}


def load_dataset_spec(data_dir: str) -> DatasetSpec:
    """Reads a dataset directory's DatasetSpec, with one clear error if it is not one."""
    if not paths.exists(data_dir):
        raise DatasetError(f"dataset directory {data_dir} does not exist")
    info = os.path.join(data_dir, INFO_FILE)
    if not paths.exists(info):
        raise DatasetError(f"{data_dir} is not a complete dataset: no dataset_info.json "
                           "(was the pipeline run to the end?)")
    path = os.path.join(data_dir, "metadata.json")
    if not paths.exists(path):
        raise DatasetError(f"{data_dir}: no metadata.json, so no sample rate, bits or "
                           "chunk length; not a wavegen dataset")
    with paths.open_text(path) as f:
        try:
            md = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e})") from e
    return DatasetSpec.from_metadata(md, where=path)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An opened dataset directory: its spec and its TFDS builder (`open_dataset`)."""

    dir: str
    spec: DatasetSpec
    builder: Any  # tfds ReadOnlyBuilder

    def num_examples(self, split: str) -> int:
        """Examples in `split`; 0 when the dataset has no such split."""
        info = self.builder.info.splits
        return info[split].num_examples if split in info else 0

    def describe_splits(self) -> str:
        info = self.builder.info.splits
        return ", ".join(f"{k} ({v.num_examples})" for k, v in sorted(info.items())) or "none"

    def check_splits(self, *splits: str) -> None:
        """One clear error if a split is missing or empty."""
        for split in splits:
            if self.num_examples(split) == 0:
                raise DatasetError(
                    f"{self.dir} has no examples in split {split!r} (it has: "
                    f"{self.describe_splits()}); re-run the pipeline with a --split that "
                    "gives it songs, or choose data.train_split/data.eval_split")


def open_dataset(data_dir: str) -> Dataset:
    """Opens a dataset directory once: its spec (metadata.json) and TFDS builder, with
    one clear error if it is not a complete wavegen dataset: every shard that
    dataset_info.json lists is there with a plausible size, and the first record of each
    split has the declared chunk length. A record damaged later in a shard is named when
    it is read (`input_pipeline.reading`)."""
    spec = load_dataset_spec(data_dir)
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder_from_directory(data_dir)
    except Exception as e:  # tfds raises several types for unreadable metadata
        raise DatasetError(f"{data_dir}: unreadable TFDS metadata ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from e
    check_features(data_dir, spec, builder.info.features)
    dataset = Dataset(dir=data_dir, spec=spec, builder=builder)
    check_shards(dataset)
    check_first_records(dataset)
    return dataset


# TFRecord framing around each record's data: its length (8 bytes) and the length's CRC
# (4), then the data's CRC (4).
RECORD_FRAMING = 16


def _file_size(path: str) -> int | None:
    """The size of a local or remote file, or None when it does not exist."""
    if paths.is_local(path):
        try:
            return os.path.getsize(paths.local_path(path))
        except FileNotFoundError:
            return None
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    return tf.io.gfile.stat(path).length


def split_shards(dataset: "Dataset", split: str) -> list[tuple[str, int]]:
    """(path, records) of every shard of `split` that dataset_info.json lists."""
    info = dataset.builder.info.splits[split]
    return [(str(p), int(n)) for p, n in zip(info.filepaths, info.shard_lengths)]


def check_shards(dataset: "Dataset") -> None:
    """Every shard dataset_info.json lists exists and is big enough for its records (each
    holds at least a chunk's audio bytes plus the TFRecord framing), and each split's
    shards add up to the bytes dataset_info.json records: a deleted or truncated shard is
    named when the dataset is opened, not after training steps have run."""
    spec = dataset.spec
    least_per_record = RECORD_FRAMING + spec.chunk_samples * spec.dtype.itemsize
    for split, info in sorted(dataset.builder.info.splits.items()):
        shards = split_shards(dataset, split)
        total = 0
        for path, records in shards:
            size = _file_size(path)
            if size is None:
                raise DatasetError(
                    f"{path}: missing shard ({dataset.dir}/{INFO_FILE} lists "
                    f"{len(shards)} shard(s) of split {split!r}); re-run the pipeline or "
                    "restore the file")
            least = records * least_per_record
            if size < least:
                raise DatasetError(
                    f"{path}: truncated shard: {size} bytes, but its {records} records of "
                    f"{spec.chunk_samples}-sample chunks need at least {least}; re-run the "
                    "pipeline or restore the file")
            total += size
        recorded = int(info.num_bytes or 0)
        if recorded and total != recorded:
            names = ", ".join(os.path.basename(p) for p, _ in shards)
            raise DatasetError(
                f"{dataset.dir}: the {split!r} shard(s) ({names}) hold {total} bytes, "
                f"{INFO_FILE} records {recorded}: a shard was truncated or replaced; re-run "
                "the pipeline or restore the files")


def _audio_lengths(records):
    """The audio feature's byte length of each serialized example in `records` (a batch
    of strings), as a numpy array."""
    import tensorflow as tf

    parsed = tf.io.parse_example(records, {"audio": tf.io.FixedLenFeature([], tf.string)})
    return tf.strings.length(parsed["audio"]).numpy()


def _length_problem(dataset: "Dataset", path: str, index: int, length: int) -> str:
    spec = dataset.spec
    return (f"{path}: record {index} holds {length // spec.dtype.itemsize} audio samples, "
            f"but {dataset.dir}/metadata.json and features.json declare chunk_samples="
            f"{spec.chunk_samples}; the metadata was edited or the shard belongs to another "
            "dataset: re-run the pipeline")


def check_first_records(dataset: "Dataset") -> None:
    """The first record of each split holds a chunk of the declared length: metadata.json
    and features.json edited together cannot agree with each other and not with the
    data. Reads one record per split."""
    import tensorflow as tf

    expected = dataset.spec.chunk_samples * dataset.spec.dtype.itemsize
    for split in sorted(dataset.builder.info.splits.keys()):
        for path, records in split_shards(dataset, split):
            if records == 0:
                continue
            try:
                first = [r for r in tf.data.TFRecordDataset(path).take(1)]
            except tf.errors.OpError as e:
                raise DatasetError(f"{path}: unreadable shard ({_tf_message(e)}); re-run "
                                   "the pipeline or restore the file") from None
            if first:
                length = int(_audio_lengths(tf.stack(first))[0])
                if length != expected:
                    raise DatasetError(_length_problem(dataset, path, 0, length))
            break


def _tf_message(error) -> str:
    """A TensorFlow error's own message, without the op's decoration."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}", "", text)
    return " ".join(text.split("[Op:")[0].split()) or type(error).__name__


def find_bad_shard(dataset: "Dataset", split: str) -> str | None:
    """Reads every record of the split, shard by shard, checking each record's checksums
    and its audio length: one line naming the first shard at fault, or None when every
    record reads back well. For after a read failed (it reads the whole split)."""
    import tensorflow as tf

    expected = dataset.spec.chunk_samples * dataset.spec.dtype.itemsize
    for path, records in split_shards(dataset, split):
        seen = 0
        try:
            for batch in tf.data.TFRecordDataset(path).batch(256):
                lengths = _audio_lengths(batch)
                bad = np.flatnonzero(lengths != expected)
                if bad.size:
                    return _length_problem(dataset, path, seen + int(bad[0]),
                                           int(lengths[bad[0]]))
                seen += len(lengths)
        except tf.errors.NotFoundError:
            return f"{path}: missing shard (deleted while the dataset was read)"
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            return (f"{path}: corrupt record ({_tf_message(e)}; a checksum mismatch or a "
                    "record cut short); re-run the pipeline or restore the file")
        if seen != records:
            return (f"{path}: {seen} records, {dataset.dir}/{INFO_FILE} lists {records}; "
                    "re-run the pipeline or restore the file")
    return None


def check_features(data_dir: str, spec: DatasetSpec, feats) -> None:
    """metadata.json against features.json (and genre.labels.txt): the stored examples'
    audio length and dtype and the genre names must be the spec's, or nothing read
    would mean what the spec says. One line naming every difference."""
    problems = []
    try:
        audio_f, genre_f = feats["audio"], feats["genre"]
    except KeyError as e:
        raise DatasetError(f"{data_dir}: features.json lacks the {e} feature; not a "
                           "wavegen dataset") from None
    if tuple(audio_f.shape) != (spec.chunk_samples,):
        problems.append(f"audio length {tuple(audio_f.shape)} in features.json, "
                        f"chunk_samples={spec.chunk_samples} in metadata.json")
    if np.dtype(audio_f.np_dtype) != spec.dtype:
        problems.append(f"audio dtype {np.dtype(audio_f.np_dtype)} in features.json, "
                        f"{spec.dtype} for bits={spec.bits} in metadata.json")
    if tuple(genre_f.names) != spec.genres:
        problems.append(f"genres {list(genre_f.names)} in features.json/genre.labels.txt, "
                        f"{list(spec.genres)} in metadata.json")
    if problems:
        raise DatasetError(f"{data_dir}: metadata.json contradicts features.json: "
                           + "; ".join(problems))

