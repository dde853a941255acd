"""Real audio from the training run's dataset, for sampling to compare with and check by.

- `genre_chunk_counts`: chunks per genre in a split (what the model was trained on).
- `read_songs`: whole songs of a split, stitched back from their chunks (chunk k's targets
  continue chunk k-1's: `wavegen.data.audio.Chunker`), as float audio per genre.
- `reference_clips`: a few seconds of one real song per genre (the listening page's
  "what the model imitates").

Reading uses TFDS on the dataset directory the pipeline wrote; nothing here trains.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from wavegen.data import audio
from wavegen.data.dataset import DatasetSpec
from wavegen.errors import UserError


class ReferenceError(UserError):
    """The run's dataset cannot be found or read; the message is one line."""


def _split(data_dir: str, split: str, features: tuple[str, ...]):
    """The split's examples, decoding only `features` (numpy iterator)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder_from_directory(data_dir)
    except Exception as e:  # TFDS raises several types for a missing or broken directory
        raise ReferenceError(f"dataset {data_dir} cannot be opened: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if split not in builder.info.splits:
        raise ReferenceError(f"dataset {data_dir} has no split {split!r}")
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=tfds.decode.
                            PartialDecoding({f: True for f in features}))
    return tfds.as_numpy(ds)


def genre_chunk_counts(data_dir: str, split: str, spec: DatasetSpec) -> dict[str, int]:
    """Chunks per genre name in `split` (every genre of the spec, 0 for none)."""
    counts = Counter(int(ex["genre"]) for ex in _split(data_dir, split, ("genre",)))
    return {name: counts.get(i, 0) for i, name in enumerate(spec.genres)}


def read_songs(data_dir: str, split: str, spec: DatasetSpec, *,
               max_seconds_per_genre: float | None = None) -> dict[str, list[np.ndarray]]:
    """Songs of `split` per genre name, each stitched from its chunks in order and
    dequantized to float audio; at most about `max_seconds_per_genre` of audio per genre
    (whole songs, in the split's order)."""
    chunks: dict[tuple[str, str], dict[int, np.ndarray]] = defaultdict(dict)
    held: Counter = Counter()
    limit = None if max_seconds_per_genre is None else max_seconds_per_genre * spec.sample_rate
    for ex in _split(data_dir, split, ("audio", "genre", "song_id", "chunk_index")):
        genre = spec.genres[int(ex["genre"])]
        song = ex["song_id"].decode("utf-8") if isinstance(ex["song_id"], bytes) \
            else str(ex["song_id"])
        if (genre, song) not in chunks and limit is not None and held[genre] >= limit:
            continue
        chunks[(genre, song)][int(ex["chunk_index"])] = np.asarray(ex["audio"])
        held[genre] += spec.target_samples
    songs: dict[str, list[np.ndarray]] = defaultdict(list)
    for (genre, _), parts in sorted(chunks.items()):
        songs[genre].append(_stitch(parts, spec))
    return dict(songs)


def _stitch(parts: dict[int, np.ndarray], spec: DatasetSpec) -> np.ndarray:
    """A song's float audio from its chunks: the first chunk whole, then each next chunk's
    targets, up to the first missing chunk index."""
    first = min(parts)
    pieces = [parts[first]]
    k = first + 1
    while k in parts:
        pieces.append(parts[k][spec.context_samples:])
        k += 1
    bins = np.concatenate(pieces)
    return audio.dequantize(bins, spec.quantization, spec.bits)


def reference_clips(data_dir: str, split: str, spec: DatasetSpec, genres, seconds: float
                    ) -> dict[str, np.ndarray]:
    """About `seconds` of the longest song read for each genre asked for (genres with no
    song in the split are left out)."""
    songs = read_songs(data_dir, split, spec, max_seconds_per_genre=seconds)
    n = int(round(seconds * spec.sample_rate))
    return {g: max(songs[g], key=len)[:n] for g in genres if songs.get(g)}
