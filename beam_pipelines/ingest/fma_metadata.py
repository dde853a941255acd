"""The Free Music Archive (FMA) dataset: its metadata (tracks.csv) and archive member names.

FMA ships audio as zip archives of mp3s named by track id (`fma_small/000/000002.mp3`) and
metadata as `fma_metadata.zip`, whose `tracks.csv` gives each track, among much else, its
top-level genre, FMA's own training/validation/test split, and the smallest subset (small,
medium, large) that holds it. `tracks.csv` has a two-row column header, (top, sub) pairs
such as ('track', 'genre_top'), then a `track_id,,,` row, then one row per track.

Standard library only (csv, zipfile); files are opened through Beam's FileSystems, so the
metadata may live on gs:// or s3:// as well as on local disk.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import posixpath
import re
import zipfile
import zlib
from collections.abc import Iterable
from typing import TextIO

from wavegen.errors import UserError

# FMA's split names -> ours.
FMA_SPLITS = {"training": "train", "validation": "validation", "test": "test"}
# Subsets nest: each holds every smaller one. Smallest first.
SUBSETS = ("small", "medium", "large")

_SPLIT_COL = ("set", "split")
_SUBSET_COL = ("set", "subset")
_GENRE_COL = ("track", "genre_top")
_REQUIRED = (_SPLIT_COL, _SUBSET_COL, _GENRE_COL)
_MEMBER = re.compile(r"(?:^|/)(\d{3})/(\d{6})\.mp3$", re.IGNORECASE)
_ZIP_MAGIC = b"PK\x03\x04"
_FIELD_LIMIT = 1 << 24  # artist bios and comments can be long


class MetadataError(UserError):
    """FMA metadata that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class FmaTrack:
    """What tracks.csv says about one track; "" for a value it leaves empty."""

    track_id: int
    genre_top: str  # e.g. 'Hip-Hop'
    split: str  # FMA's: 'training', 'validation' or 'test' (see FMA_SPLITS)
    subset: str  # 'small', 'medium' or 'large': the smallest subset holding the track


# --------------------------------------------------------------------------------------
# tracks.csv


def _column_index(top: list[str], sub: list[str], source: str) -> dict[tuple[str, str], int]:
    """Positions of the required (top, sub) columns in the two header rows."""
    pairs = {(t.strip(), s.strip()): i for i, (t, s) in enumerate(zip(top, sub))}
    missing = [f"{t}/{s}" for t, s in _REQUIRED if (t, s) not in pairs]
    if missing:
        raise MetadataError(
            f"{source}: not an FMA tracks.csv: no column {', '.join(missing)} in its "
            "two-row header (expected rows like ',album,...,set,set,track' and "
            "',comments,...,split,subset,genre_top')")
    return {col: pairs[col] for col in _REQUIRED}


def _is_index_name_row(row: list[str]) -> bool:
    return bool(row) and row[0].strip() == "track_id" and not any(c.strip() for c in row[1:])


def _checked(value: str, allowed: Iterable[str], what: str, where: str) -> str:
    if value and value not in allowed:
        raise MetadataError(f"{where}: {what} {value!r} is not one of {', '.join(allowed)}")
    return value


def _track(row: list[str], cols: dict[tuple[str, str], int], where: str) -> FmaTrack:
    """One data row -> FmaTrack."""
    needed = max(cols.values()) + 1
    if len(row) < needed:
        raise MetadataError(f"{where}: has {len(row)} fields, expected at least {needed} "
                            "(a truncated file?)")
    raw_id = row[0].strip()
    if not re.fullmatch(r"\d+", raw_id):
        raise MetadataError(f"{where}: track id {raw_id!r} is not a non-negative integer")
    return FmaTrack(
        track_id=int(raw_id),
        genre_top=row[cols[_GENRE_COL]].strip(),
        split=_checked(row[cols[_SPLIT_COL]].strip(), FMA_SPLITS, "split", where),
        subset=_checked(row[cols[_SUBSET_COL]].strip(), SUBSETS, "subset", where))


def read_tracks_csv(f: TextIO, source: str) -> dict[int, FmaTrack]:
    """Parses FMA's tracks.csv (a text stream opened with newline="") -> {track_id: FmaTrack}.

    Columns are found by their (top, sub) header pair, so extra or reordered columns do not
    matter; quoted fields may hold commas and newlines. The `track_id,,,` row after the
    header is skipped when present. Raises MetadataError (a ValueError) naming `source`
    and, for a bad row, its row and line numbers: required columns missing, a track id
    that is not an integer, a track listed twice, an unknown split or subset.
    """
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    reader = csv.reader(f)
    tracks: dict[int, FmaTrack] = {}
    first_seen: dict[int, str] = {}  # track id -> 'row R (line L)'
    end = 2  # the line the previous record ended on
    try:
        top, sub = next(reader, None), next(reader, None)
        if top is None or sub is None:
            raise MetadataError(f"{source}: not an FMA tracks.csv: fewer than two rows")
        cols = _column_index(top, sub, source)
        for number, row in enumerate(reader, start=3):
            start, end = end + 1, reader.line_num  # a record may span several lines
            row_line = f"row {number} (line {start})"
            where = f"{source}: {row_line}"
            if not any(c.strip() for c in row) or (number == 3 and _is_index_name_row(row)):
                continue
            track = _track(row, cols, where)
            if track.track_id in tracks:
                raise MetadataError(f"{where}: track {track.track_id} is listed twice "
                                    f"(first at {first_seen[track.track_id]})")
            tracks[track.track_id] = track
            first_seen[track.track_id] = row_line
    except csv.Error as e:
        raise MetadataError(f"{source}: line {reader.line_num}: malformed CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise MetadataError(f"{source}: not UTF-8 text (after line {reader.line_num}: "
                            f"{e.reason})") from None
    return tracks


def _text(binary) -> TextIO:
    return io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")


def _tracks_member(zf: zipfile.ZipFile, path: str) -> zipfile.ZipInfo:
    """The zip's one member named tracks.csv, at any depth."""
    found = [i for i in zf.infolist()
             if not i.is_dir() and posixpath.basename(i.filename) == "tracks.csv"]
    if not found:
        names = [i.filename for i in zf.infolist()][:5]
        listing = ", ".join(names) + (", ..." if len(zf.infolist()) > 5 else "")
        raise MetadataError(f"{path}: the zip holds no tracks.csv (it holds: "
                            f"{listing or 'nothing'}); FMA's is in fma_metadata.zip")
    if len(found) > 1:
        raise MetadataError(f"{path}: the zip holds several tracks.csv "
                            f"({', '.join(i.filename for i in found)}); extract the one to use")
    return found[0]


def _read_zip(raw, path: str) -> dict[int, FmaTrack]:
    """tracks.csv streamed out of a zip opened on `raw` (a seekable binary file)."""
    try:
        with zipfile.ZipFile(raw) as zf:
            info = _tracks_member(zf, path)
            with zf.open(info) as member, _text(member) as text:
                return read_tracks_csv(text, f"{path} (member {info.filename})")
    except (zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
        raise MetadataError(f"{path}: a damaged or unsupported zip: {e}") from None


def load_metadata(path: str) -> dict[int, FmaTrack]:
    """FMA metadata from `path`: a tracks.csv, or a zip holding one (fma_metadata.zip).

    Opened through Beam's FileSystems (local, gs://, s3://); a zip is recognised by its
    first bytes, whatever its name, and its tracks.csv is streamed, not extracted. Raises
    MetadataError (a ValueError) naming the path: no such file, a zip with no (or several)
    tracks.csv, or any problem `read_tracks_csv` reports.
    """
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise MetadataError(f"{path}: no such file (expected FMA's tracks.csv or "
                            "fma_metadata.zip)")
    try:
        raw = FileSystems.open(path, compression_type="uncompressed")
    except OSError as e:
        raise MetadataError(f"{path}: cannot open it: {e}") from None
    with raw:
        head = raw.read(len(_ZIP_MAGIC))
        raw.seek(0)
        if head == _ZIP_MAGIC:
            return _read_zip(raw, path)
        with _text(raw) as text:
            return read_tracks_csv(text, path)


# --------------------------------------------------------------------------------------
# Archives


def track_id_from_member(name: str) -> int | None:
    """The track id of an FMA audio archive member, or None for any other member.

    'fma_small/000/000002.mp3' -> 2, 'fma_full/155/155066.MP3' -> 155066: a six-digit
    zero-padded id with an .mp3 extension (any case), in a folder named by its first three
    digits. None for README.txt, checksums, folders, and names that break the pattern.
    """
    m = _MEMBER.search(name)
    if m is None or m.group(2)[:3] != m.group(1):
        return None
    return int(m.group(2))


def expected_tracks(meta: dict[int, FmaTrack], present: Iterable[int]) -> set[int]:
    """The metadata's tracks that an archive holding `present` should hold.

    Subsets nest (small in medium in large) and a track's subset is the smallest holding
    it, so the archive's subset is the largest subset among the present tracks the
    metadata knows; the result is every track of that subset or a smaller one (for
    'large', every track in the metadata). Empty when no present track is in the metadata.
    """
    rank = {name: i for i, name in enumerate(SUBSETS)}
    ranks = [rank[meta[t].subset] for t in present if t in meta and meta[t].subset in rank]
    if not ranks:
        return set()
    largest = max(ranks)
    if SUBSETS[largest] == "large":
        return set(meta)
    return {t for t, track in meta.items() if rank.get(track.subset, len(SUBSETS)) <= largest}
