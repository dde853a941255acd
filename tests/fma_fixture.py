"""FMA-shaped fixtures, made on the spot: tracks.csv, fma_metadata.zip, fma_<subset>.zip.

They follow the real distribution's layout (see /work/shared/fma-format.md): tracks.csv's
two-row column header and `track_id,,,` row, long quoted fields holding commas and
newlines, members `fma_small/000/000002.mp3` next to `README.txt` and `checksums`, deflate
compression. Nothing is downloaded.

    from fma_fixture import write_metadata_zip, write_fma_zip, mp3_bytes
    tracks = [{"track_id": 2, "genre_top": "Hip-Hop", "split": "training"},
              {"track_id": 5, "genre_top": "", "split": "test", "subset": "medium"}]
    meta = write_metadata_zip(tmp_path / "fma_metadata.zip", tracks)
    audio = write_fma_zip(tmp_path / "fma_small.zip", "small", {2: mp3_bytes(), 5: mp3_bytes()})
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
import soundfile as sf

# A realistic selection of tracks.csv's columns, in FMA's order (the real file has 52).
COLUMNS = [
    ("album", "comments"), ("album", "date_created"), ("album", "id"), ("album", "tags"),
    ("album", "title"), ("artist", "bio"), ("artist", "id"), ("artist", "location"),
    ("artist", "name"), ("artist", "website"), ("set", "split"), ("set", "subset"),
    ("track", "bit_rate"), ("track", "comments"), ("track", "date_created"),
    ("track", "duration"), ("track", "genre_top"), ("track", "genres"),
    ("track", "genres_all"), ("track", "license"), ("track", "listens"), ("track", "tags"),
    ("track", "title"),
]
# genre_id: (title, parent, top_level), as in genres.csv.
GENRES = {2: ("International", 0, 2), 10: ("Pop", 0, 10), 12: ("Rock", 0, 12),
          15: ("Electronic", 0, 15), 17: ("Folk", 0, 17), 21: ("Hip-Hop", 0, 21),
          38: ("Experimental", 0, 38), 1235: ("Instrumental", 0, 1235),
          25: ("Punk", 12, 12), 26: ("Post-Rock", 12, 12)}
_GENRE_ID = {title: gid for gid, (title, parent, _) in GENRES.items() if parent == 0}
TRACK_KEYS = ("track_id", "genre_top", "split", "subset", "title", "artist", "bio",
              "duration", "genres")


def _values(t: Mapping) -> dict[tuple[str, str], object]:
    """One track dict -> its cells by column; see write_tracks_csv for the keys."""
    unknown = set(t) - set(TRACK_KEYS)
    if unknown or "track_id" not in t:
        raise ValueError(f"fma_fixture: track {t!r}: needs track_id; known keys are "
                         f"{', '.join(TRACK_KEYS)}")
    tid = int(t["track_id"])
    genre = t.get("genre_top", "Rock") or ""
    genres = t.get("genres", [_GENRE_ID.get(genre, 38)] if genre else [])
    artist = t.get("artist", f"Artist {tid % 7}")
    return {
        ("album", "comments"): 0, ("album", "date_created"): "2008-11-26 01:44:45",
        ("album", "id"): tid // 10, ("album", "tags"): "['lo-fi', 'home recording']",
        ("album", "title"): f"Album, volume {tid // 10}",
        ("artist", "bio"): t.get("bio", f'<p>{artist}, a band "from somewhere".\n'
                                        f"Formed in 2004,\r\nstill playing.</p>"),
        ("artist", "id"): tid % 7, ("artist", "location"): "Brooklyn, NY",
        ("artist", "name"): artist, ("artist", "website"): "http://example.invalid/",
        ("set", "split"): t.get("split", "training"), ("set", "subset"): t.get("subset", "small"),
        ("track", "bit_rate"): 256000, ("track", "comments"): 0,
        ("track", "date_created"): "2008-11-26 01:48:12",
        ("track", "duration"): t.get("duration", 30),
        ("track", "genre_top"): genre, ("track", "genres"): str(list(genres)),
        ("track", "genres_all"): str(sorted(set(genres) | {GENRES.get(g, ("", 0, g))[2]
                                                             for g in genres})),
        ("track", "license"): "Attribution-NonCommercial-ShareAlike 3.0",
        ("track", "listens"): 1293, ("track", "tags"): "[]",
        ("track", "title"): t.get("title", f"Track {tid}"),
    }


def tracks_csv_text(tracks: Sequence[Mapping]) -> str:
    """tracks.csv's text for `tracks` (see write_tracks_csv)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([""] + [top for top, _ in COLUMNS])
    w.writerow([""] + [sub for _, sub in COLUMNS])
    w.writerow(["track_id"] + [""] * len(COLUMNS))
    for t in tracks:
        cells = _values(t)
        w.writerow([int(t["track_id"])] + [cells[c] for c in COLUMNS])
    return out.getvalue()


def write_tracks_csv(path, tracks: Sequence[Mapping]) -> str:
    """Writes a tracks.csv in FMA's layout; returns its path.

    Each track is a dict with `track_id` (int) and optionally: `genre_top` (default
    'Rock'; '' or None leaves it empty, as FMA does for many tracks), `split` (default
    'training'), `subset` (default 'small'), `title`, `artist`, `bio` (by default a
    quoted value with commas, quotes and a line break, like real artist bios),
    `duration` (seconds, default 30) and `genres` (a list of genre ids).
    """
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(tracks_csv_text(tracks))
    return str(path)


def _genres_csv_text() -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
    for gid, (title, parent, top) in sorted(GENRES.items()):
        w.writerow([gid, 100 + gid, parent, title, top])
    return out.getvalue()


def write_metadata_zip(path, tracks: Sequence[Mapping]) -> str:
    """Writes an fma_metadata.zip holding fma_metadata/tracks.csv (see write_tracks_csv)
    and a small fma_metadata/genres.csv; returns its path."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.mkdir("fma_metadata")
        zf.writestr("fma_metadata/tracks.csv", tracks_csv_text(tracks))
        zf.writestr("fma_metadata/genres.csv", _genres_csv_text())
    return str(path)


def member_name(subset: str, track_id: int) -> str:
    """'fma_small/000/000002.mp3' for subset 'small' and track 2."""
    padded = f"{track_id:06d}"
    return f"fma_{subset}/{padded[:3]}/{padded}.mp3"


def write_fma_zip(path, subset: str, members: Mapping[int, bytes],
                  extra_members: Mapping[str, bytes] | None = None) -> str:
    """Writes an FMA audio archive (like fma_small.zip); returns its path.

    `members` maps track ids to the bytes of their mp3 (`mp3_bytes()` makes a real one; any
    bytes do for a broken member), stored as `fma_<subset>/<ddd>/<dddddd>.mp3` with folder
    entries, deflate compression, and `fma_<subset>/README.txt` and `fma_<subset>/checksums`
    (sha1 lines) as in the real archives. `extra_members` maps full member names to bytes,
    written as they are (odd members for tests).
    """
    top = f"fma_{subset}/"
    names = {member_name(subset, tid): data for tid, data in sorted(members.items())}
    checksums = "".join(f"{hashlib.sha1(data).hexdigest()}  {name[len(top):]}\n"
                        for name, data in names.items())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.mkdir(top)
        zf.writestr(top + "README.txt", f"This is the {subset} subset of the Free Music "
                                        "Archive (FMA) dataset, a test fixture.\n")
        zf.writestr(top + "checksums", checksums)
        folders = set()
        for name, data in names.items():
            folder = name.rsplit("/", 1)[0] + "/"
            if folder not in folders:
                folders.add(folder)
                zf.mkdir(folder)
            zf.writestr(name, data)
        for name, data in (extra_members or {}).items():
            zf.writestr(name, data)
    return str(path)


def mp3_bytes(seconds: float = 1.0, sr: int = 22050, freq: float = 440.0,
              seed: int = 0) -> bytes:
    """A real, decodable mono mp3: a sine with a little noise."""
    t = np.arange(int(round(seconds * sr))) / sr
    noise = np.random.default_rng(seed).standard_normal(len(t))
    x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * noise
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32)[:, None], sr, format="MP3", subtype="MPEG_LAYER_III")
    return buf.getvalue()
