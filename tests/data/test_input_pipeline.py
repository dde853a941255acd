"""The input pipeline: pmap-shaped batches from the Beam pipeline's dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wavegen.data import input_pipeline as ip
from wavegen.data.dataset import DatasetError, open_dataset

SR = 8000
CONTEXT = 300
RF = 101  # any receptive field up to the context


@pytest.fixture(scope="module")
def data_dir(synth_dataset):
    return synth_dataset(sample_rate=SR, seconds=3.0, songs_per_style=3, chunk_seconds=0.1,
                         context_samples=CONTEXT)


@pytest.fixture(scope="module")
def ds(data_dir):
    return open_dataset(data_dir)


def win(ds, rf=RF, targets=None):
    return ip.Window(ds.spec, rf, targets)


def raw_examples(data_dir, split):
    """Every example of a split as (audio uint8, genre) straight from TFDS."""
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(data_dir).as_dataset(split=split)
    return [(ex["audio"], int(ex["genre"])) for ex in tfds.as_numpy(ds)]


def test_batches_are_shaped_for_pmap_and_are_chunk_tails(data_dir, ds):
    spec = ds.spec
    it = ip.train_batches(ds, win(ds), per_device_batch=3, num_devices=2)
    batch = next(it)
    length = RF + spec.target_samples
    assert batch["audio"].shape == (2, 3, length) and batch["audio"].dtype == np.int32
    assert batch["genre"].shape == (2, 3) and batch["genre"].dtype == np.int32
    # With every target sample of the chunk scored, a window is the chunk's last
    # RF + target_samples samples, paired with the chunk's genre.
    tails = {(a[-length:].tobytes(), g) for a, g in raw_examples(data_dir, "train")}
    for window, genre in zip(batch["audio"].reshape(6, -1), batch["genre"].reshape(-1)):
        assert (window.astype(np.uint8).tobytes(), genre) in tails


def test_shorter_windows_stay_in_the_target_region(data_dir, ds):
    spec = ds.spec
    targets = 200
    it = ip.train_batches(ds, win(ds, targets=targets), per_device_batch=4, num_devices=1,
                          seed=3)
    chunks = [a for a, _ in raw_examples(data_dir, "train")]
    starts = set()
    for _ in range(4):
        for window in next(it)["audio"].reshape(4, -1).astype(np.uint8):
            found = [s for c in chunks
                     for s in range(len(c) - len(window) + 1)
                     if c[s] == window[0] and np.array_equal(c[s:s + len(window)], window)]
            assert found, "a window that is not a piece of any chunk"
            # The window's targets (its last T samples) lie in the chunk's target region.
            assert all(s + RF >= spec.context_samples for s in found)
            starts.update(found)
    assert len(starts) > 1  # the position is drawn, not fixed


def test_the_stream_is_a_function_of_the_seed(data_dir, ds):
    def first(seed, n=4):
        it = ip.train_batches(ds, win(ds, targets=150), per_device_batch=2, num_devices=1,
                              seed=seed)
        return np.stack([next(it)["audio"] for _ in range(n)])

    a = first(7)
    np.testing.assert_array_equal(a, first(7))
    assert not np.array_equal(a, first(8))


def test_save_and_restore_resume_exactly(data_dir, ds, tmp_path):
    kw = dict(per_device_batch=2, num_devices=2, seed=5, shuffle_buffer=16)
    it = ip.train_batches(ds, win(ds, targets=120), **kw)
    for _ in range(7):  # past the first epoch's end as well (the train split is small)
        next(it)
    path = it.save(str(tmp_path / "iterator" / "ckpt"))
    expected = [next(it) for _ in range(12)]

    resumed = ip.train_batches(ds, win(ds, targets=120), **kw)
    resumed.restore(str(tmp_path / "iterator" / "ckpt"))
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["audio"], want["audio"])
        np.testing.assert_array_equal(got["genre"], want["genre"])
    # The replay route reaches the same position.
    replay = ip.train_batches(ds, win(ds, targets=120), **kw)
    replay.skip_batches(7)
    np.testing.assert_array_equal(next(replay)["audio"], expected[0]["audio"])
    assert path.startswith(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no input-pipeline checkpoint"):
        resumed.restore(str(tmp_path / "nothing"))


def test_eval_covers_the_split_once_with_a_mask(data_dir, ds):
    spec = ds.spec
    raw = raw_examples(data_dir, "validation")
    batches = list(ip.eval_batches(ds, win(ds), per_device_batch=2, num_devices=2))
    assert len(batches) == math.ceil(len(raw) / 4)
    windows = []
    for b in batches:
        assert b["audio"].shape == (2, 2, RF + spec.target_samples)
        real = b["mask"].reshape(-1) > 0
        windows += [w.astype(np.uint8).tobytes() for w in b["audio"].reshape(4, -1)[real]]
    assert sorted(windows) == sorted(a[spec.context_samples - RF:].tobytes() for a, _ in raw)
    assert sum(b["mask"].sum() for b in batches) == len(raw)


def test_processes_read_disjoint_parts(data_dir, ds):
    def windows(index):
        return {w.tobytes() for b in ip.eval_batches(
            ds, win(ds), per_device_batch=1, num_devices=1,
            split="train", process_index=index, process_count=2)
            for w, m in zip(b["audio"].reshape(1, -1), b["mask"].reshape(-1)) if m}

    a, b = windows(0), windows(1)
    assert a and b and not a & b
    assert abs(len(a) - len(b)) <= 1


def test_unigram_entropy_is_the_histogram_entropy(data_dir, ds):
    spec = ds.spec
    counts = np.zeros(spec.num_classes, np.int64)
    for a, _ in raw_examples(data_dir, "validation"):
        counts += np.bincount(a[spec.context_samples:], minlength=spec.num_classes)
    np.testing.assert_array_equal(ip.bin_histogram(ds, "validation"), counts)
    p = counts[counts > 0] / counts.sum()
    expected = float(-(p * np.log2(p)).sum())
    assert ip.unigram_entropy_bits(ds, "validation") == pytest.approx(expected)
    assert 2.0 < expected < 8.0  # music, not silence or noise
    assert ip.entropy_bits([5, 5, 5, 5, 0]) == pytest.approx(2.0)


def test_bad_requests_are_refused_clearly(ds, tmp_path):
    spec = ds.spec
    with pytest.raises(ValueError, match=rf"receptive field of 301 samples \(37\.6 ms at "
                                         rf"8000 Hz\) exceeds the dataset's context of {CONTEXT}"):
        win(ds, rf=301)
    with pytest.raises(ValueError, match=rf"train.targets must be in 1..{spec.target_samples}"):
        win(ds, targets=spec.target_samples + 1)
    with pytest.raises(ValueError, match=r"no split 'test'; it has train \(\d+\), "
                                         r"validation \(\d+\)"):
        next(ip.eval_batches(ds, win(ds), per_device_batch=1, num_devices=1, split="test"))
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(str(tmp_path / "missing"))
