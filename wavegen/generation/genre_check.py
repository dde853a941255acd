"""Can you hear the genre? A small classifier on spectral band statistics of 1 s windows.

Features of a window: its spectrum in frames of 1024 samples (hop 512, Hann), pooled into
BANDS log-spaced bands from 60 Hz to Nyquist, in dB; per band the mean and the standard
deviation over the window's frames, and the mean frame-to-frame rise (spectral flux).
The classifier standardizes the features with the training windows' mean and spread and
names the genre whose mean window is nearest (a nearest-centroid rule: no training loop,
no extra dependency). Fitted on the dataset's real training songs, it names the genre of
real validation windows; run on generated samples it says whether the genre is audible.

    clf = fit_from_dataset(data_dir, spec)             # the training split's songs
    clf.accuracy(waves, genres, sample_rate)           # -> fraction of windows right

The listening run (`wavegen.generation.sampler`) writes `check_waves`'s result into
samples.json as `genre_check`; a demo reads it from there.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wavegen.data.dataset import DatasetSpec
from wavegen.generation import references

WINDOW_SECONDS = 1.0
BANDS = 16
FRAME, HOP = 1024, 512
LOWEST_HZ = 60.0  # the first band starts here; every band holds at least one FFT bin
MAX_TRAIN_SECONDS_PER_GENRE = 600.0


def windows(x: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """The whole WINDOW_SECONDS windows of x, back to back."""
    n = int(round(WINDOW_SECONDS * sample_rate))
    return [x[i:i + n] for i in range(0, len(x) - n + 1, n)]


def features(window: np.ndarray, sample_rate: int) -> np.ndarray:
    """Band statistics of one window: (3 * BANDS,) float64."""
    x = np.asarray(window, np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP] * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1.0 / sample_rate)
    edges = np.geomspace(LOWEST_HZ, sample_rate / 2.0, BANDS + 1)
    band = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) + 1e-10
                     for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    db = 10.0 * np.log10(band)
    flux = np.maximum(np.diff(db, axis=0), 0.0).mean(axis=0) if len(db) > 1 \
        else np.zeros(BANDS)
    return np.concatenate([db.mean(axis=0), db.std(axis=0), flux])


@dataclasses.dataclass(frozen=True)
class GenreClassifier:
    genres: tuple[str, ...]  # the genres it can name
    centroids: np.ndarray  # (genres, features), standardized
    mean: np.ndarray
    scale: np.ndarray
    sample_rate: int

    def predict(self, x: np.ndarray) -> list[str]:
        """The genre named for each whole window of x (none if x is shorter than one)."""
        f = [features(w, self.sample_rate) for w in windows(x, self.sample_rate)]
        if not f:
            return []
        z = (np.stack(f) - self.mean) / self.scale
        d = ((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=-1)
        return [self.genres[i] for i in d.argmin(axis=1)]

    def accuracy(self, waves, genres, sample_rate: int) -> float | None:
        """The fraction of windows of `waves` whose genre is named right (None: no whole
        window)."""
        if sample_rate != self.sample_rate:
            raise ValueError(f"audio at {sample_rate} Hz; the classifier was fitted at "
                             f"{self.sample_rate} Hz")
        right = total = 0
        for x, g in zip(waves, genres):
            named = self.predict(x)
            right += sum(n == g for n in named)
            total += len(named)
        return right / total if total else None


def fit(songs: dict[str, list[np.ndarray]], sample_rate: int) -> GenreClassifier:
    """Fits on whole windows of each genre's songs (at least two genres with a window)."""
    rows, labels = [], []
    for genre, waves in sorted(songs.items()):
        for x in waves:
            for w in windows(x, sample_rate):
                rows.append(features(w, sample_rate))
                labels.append(genre)
    genres = tuple(sorted(set(labels)))
    if len(genres) < 2:
        raise ValueError(f"a genre classifier needs whole {WINDOW_SECONDS:g} s windows of "
                         f"at least two genres; got {', '.join(genres) or 'none'}")
    f = np.stack(rows)
    mean, scale = f.mean(axis=0), f.std(axis=0) + 1e-6
    z = (f - mean) / scale
    labels = np.asarray(labels)
    centroids = np.stack([z[labels == g].mean(axis=0) for g in genres])
    return GenreClassifier(genres, centroids, mean, scale, sample_rate)


def fit_from_dataset(data_dir: str, spec: DatasetSpec, split: str = "train"
                     ) -> GenreClassifier:
    """Fitted on `split`'s songs (at most MAX_TRAIN_SECONDS_PER_GENRE per genre)."""
    songs = references.read_songs(data_dir, split, spec,
                                  max_seconds_per_genre=MAX_TRAIN_SECONDS_PER_GENRE)
    return fit(songs, spec.sample_rate)


def check_waves(clf: GenreClassifier, data_dir: str, spec: DatasetSpec, waves, genres,
                eval_split: str = "validation") -> dict:
    """The check's figures: accuracy on the samples, and on real `eval_split` songs of
    the same genres (what a perfect imitation would reach), with chance for reference."""
    real = references.read_songs(data_dir, eval_split, spec,
                                 max_seconds_per_genre=MAX_TRAIN_SECONDS_PER_GENRE)
    real_waves = [x for g in clf.genres for x in real.get(g, [])]
    real_genres = [g for g in clf.genres for _ in real.get(g, [])]
    per_stream = [clf.predict(x) for x in waves]
    return {"window_seconds": WINDOW_SECONDS, "genres": list(clf.genres),
            "chance": 1.0 / len(clf.genres),
            "samples_accuracy": clf.accuracy(waves, genres, spec.sample_rate),
            "real_accuracy": clf.accuracy(real_waves, real_genres, spec.sample_rate),
            "real_split": eval_split,
            "named": [{"genre": g, "named": n} for g, n in zip(genres, per_stream)]}

