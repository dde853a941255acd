"""The dataset's file names have one home (wavegen.data.dataset): the names the pipeline
writes are the ones TFDS reads, and the pattern the output folder matches is theirs."""

import random

import tensorflow_datasets as tfds

from wavegen.data import dataset


def test_shard_names_are_the_ones_tfds_reads_and_match_the_pattern():
    rng = random.Random(7)
    for split in ("train", "validation", "test", "fold_2"):
        n = rng.randint(1, 3000)
        tfds_names = [p.name for p in tfds.core.ShardedFileTemplate(
            data_dir="/nowhere", template=dataset.FILENAME_TEMPLATE,
            dataset_name=dataset.DATASET_NAME, split=split,
            filetype_suffix="tfrecord").sharded_filepaths(n)]
        ours = [dataset.shard_filename(split, i, n) for i in range(n)]
        assert ours == tfds_names
        assert all(dataset.SHARD_PATTERN.fullmatch(name) for name in ours)
    largest = dataset.shard_filename("train", dataset.MAX_SHARDS - 1, dataset.MAX_SHARDS)
    assert dataset.SHARD_PATTERN.fullmatch(largest)
    assert not dataset.SHARD_PATTERN.fullmatch(
        dataset.shard_filename("train", 0, dataset.MAX_SHARDS + 1))  # a 6th digit
    assert not dataset.SHARD_PATTERN.fullmatch("wavegen-train.tfrecord-00000-of-00002.bak")
