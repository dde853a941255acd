"""Where songs come from: `--input` values -> songs with stable ids, and reading them.

An input is an audio file, a folder (searched recursively for audio files), a glob, a
zip archive (e.g. FMA's fma_small.zip: each audio member is a song, read straight from the
archive as a stream), or a URL list (`*.urls`: one http(s) URL per line, optional sha256).
Paths go through Beam's FileSystems, so local paths, gs:// and s3:// all work where their
Beam extras are installed. Listing happens once, when the pipeline is built; the songs
themselves are read by the workers (`open_song`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import posixpath
import re
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from wavegen.data import audio
from wavegen.data.paths import is_local, local_path
from wavegen.ingest import fetch
from wavegen.ingest import fma_metadata as fma
from wavegen.data.dataset import UNKNOWN_GENRE

GENRE_FROM = ("folder", "none", "fma")
SPLIT_FROM = ("hash", "fma")
FILE, ZIP, URL = "file", "zip", "url"
_GLOB_CHARS = re.compile(r"[*?\[]")


class SourceError(ValueError):
    """An --input that cannot be used, named in the message."""


@dataclasses.dataclass(frozen=True)
class SongRef:
    """One input song: what it is called, where to read it, its label and split."""

    song_id: str  # unique and readable: 'rock/song1.mp3', an FMA track id '2', or a URL
    uri: str  # the file, the archive holding the member, or the URL
    input: str  # the --input it was found under (for messages)
    kind: str = FILE  # FILE, ZIP (uri is the archive, member the song) or URL
    member: str = ""
    genre: str = UNKNOWN_GENRE
    split: str = ""
    size: int = -1  # bytes, when known before reading
    sha256: str = ""  # expected checksum of a URL's body, when the list gives one
    track_id: int = -1  # FMA track id, when the name says
    reject: str = ""  # "reason: detail" for a song known to be unusable when listed

    def with_(self, **kw) -> "SongRef":
        return dataclasses.replace(self, **kw)

    @property
    def where(self) -> str:
        """Where the song is, for messages: a path, 'archive.zip:member' or a URL."""
        return f"{self.uri}:{self.member}" if self.kind == ZIP else self.uri


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _relative(path: str, base: str) -> str:
    if is_local(path):
        return os.path.relpath(local_path(path), local_path(base)).replace(os.sep, "/")
    base = base.rstrip("/") + "/"
    return path[len(base):] if path.startswith(base) else posixpath.basename(path)


def _parent_name(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path.replace(os.sep, "/"))) or UNKNOWN_GENRE


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def is_archive(path: str) -> bool:
    return _ext(path) == ".zip"


def is_url_list(path: str) -> bool:
    return _ext(path) == ".urls"


def _is_input_file(path: str) -> bool:
    return audio.is_audio_path(path) or is_archive(path) or is_url_list(path)


# --------------------------------------------------------------------------------------
# Listing


def expand_input(spec: str, genre_from: str = "none") -> list[SongRef]:
    """One --input value -> its songs.

    - an audio file: one song, its id the file name;
    - a folder: its audio files, searched recursively, ids relative to the folder;
    - a glob: the audio files, archives and URL lists it matches, ids of audio files
      relative to the folder before the first wildcard;
    - a zip archive: its audio members (ids: the FMA track id for FMA member names,
      otherwise the member's path);
    - a URL list (*.urls): its URLs (ids: the URLs).
    Raises SourceError if the input matches nothing usable.
    """
    fs = _fs()
    if genre_from not in GENRE_FROM:
        raise SourceError(f"--genre_from must be one of {GENRE_FROM}, got {genre_from!r}")
    literal = is_local(spec) and os.path.exists(local_path(spec))  # 'Album [FLAC]/': a folder
    if _GLOB_CHARS.search(spec) and not literal:
        prefix = _GLOB_CHARS.split(spec, 1)[0]
        base = os.path.dirname(prefix) if is_local(spec) else posixpath.dirname(prefix)
        found = [m for m in fs.match([spec])[0].metadata_list if _is_input_file(m.path)]
        kind = "glob"
    elif is_local(spec) and os.path.isdir(local_path(spec)):
        base = spec.rstrip("/") or "/"
        found = [m for m in _walk(local_path(base)) if audio.is_audio_path(m.path)]
        kind = "folder"
    elif fs.exists(spec):
        base = os.path.dirname(spec) if is_local(spec) else posixpath.dirname(spec)
        found = fs.match([spec])[0].metadata_list
        kind = "file"
        if not _is_input_file(spec):
            raise SourceError(f"--input {spec}: not a supported input (expected an audio "
                              f"file ({', '.join(audio.AUDIO_EXTENSIONS)}), a .zip archive "
                              "or a .urls list)")
    else:
        # A remote "folder" is a prefix.
        base = spec.rstrip("/")
        found = [] if is_local(spec) else [
            m for m in fs.match([base + "/**"])[0].metadata_list
            if audio.is_audio_path(m.path)]
        kind = "folder"
        if not found:
            raise SourceError(f"--input {spec}: no such file or folder")
    if not found:
        raise SourceError(f"--input {spec}: the {kind} holds no "
                          f"{'/'.join(e[1:] for e in audio.AUDIO_EXTENSIONS)} files")
    songs = []
    for m in found:
        if is_archive(m.path):
            songs.extend(list_archive(m.path, spec, genre_from))
        elif is_url_list(m.path):
            songs.extend(list_urls(m.path, spec, genre_from))
        else:
            rel = _relative(m.path, base)
            songs.append(SongRef(
                song_id=rel, uri=m.path, input=spec, kind=FILE,
                genre=_parent_name(m.path) if genre_from == "folder" else UNKNOWN_GENRE,
                size=int(m.size_in_bytes), track_id=_track_id(rel)))
    return songs


@dataclasses.dataclass(frozen=True)
class _Found:
    path: str
    size_in_bytes: int


def _walk(folder: str) -> list[_Found]:
    """Every file under a local folder (taken literally: '[' or '*' in its name are not
    wildcards), in a stable order."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            out.append(_Found(path, os.path.getsize(path)))
    return out


def _track_id(name: str) -> int:
    tid = fma.track_id_from_member(name)
    return -1 if tid is None else tid


def list_archive(path: str, spec: str, genre_from: str = "none") -> list[SongRef]:
    """The audio members of a zip archive, read from its central directory only."""
    try:
        with _fs().open(path, compression_type="uncompressed") as f, zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"--input {spec}: {path} is not a readable zip archive ({e})") from e
    songs = []
    for info in infos:
        if info.is_dir() or not audio.is_audio_path(info.filename):
            continue
        tid = _track_id(info.filename)
        songs.append(SongRef(
            song_id=str(tid) if tid >= 0 else info.filename, uri=path, input=spec, kind=ZIP,
            member=info.filename, size=info.file_size, track_id=tid,
            genre=_parent_name(info.filename) if genre_from == "folder" else UNKNOWN_GENRE))
    if not songs:
        raise SourceError(f"--input {spec}: the archive {path} holds no audio members")
    return songs


def list_urls(path: str, spec: str, genre_from: str = "none") -> list[SongRef]:
    """The songs of a URL list: one per distinct URL (bad schemes are kept, and rejected
    by the worker so that they are counted and dead-lettered like any failure)."""
    with _fs().open(path, compression_type="uncompressed") as f:
        text = f.read().decode("utf-8")
    try:
        entries = fetch.parse_url_list(text, path)
    except ValueError as e:
        raise SourceError(f"--input {spec}: {e}") from e
    if not entries:
        raise SourceError(f"--input {spec}: the URL list {path} holds no URLs")
    return [SongRef(song_id=e.url, uri=e.url, input=spec, kind=URL, sha256=e.sha256 or "",
                    genre=_parent_name(e.url.split("?")[0]) if genre_from == "folder"
                    else UNKNOWN_GENRE)
            for e in entries]


def check_unique(songs: Iterable[SongRef]) -> None:
    """Song ids must be unique across all inputs: a collision names both sources."""
    seen: dict[str, SongRef] = {}
    for s in songs:
        other = seen.get(s.song_id)
        if other is not None:
            raise SourceError(
                f"song id {s.song_id!r} comes from two sources: {other.where} "
                f"(--input {other.input}) and {s.where} (--input {s.input}); "
                "remove one of them or pass them in separate runs")
        seen[s.song_id] = s


def discover(inputs: Sequence[str], genre_from: str = "none") -> list[SongRef]:
    """All songs of all --input values, sorted by id, ids unique."""
    if not inputs:
        raise SourceError("no --input given")
    songs: list[SongRef] = []
    for spec in inputs:
        songs.extend(expand_input(spec, genre_from))
    # The same song reached through two inputs (a folder and a glob inside it) is one
    # song, named after the first input that found it.
    by_place: dict[str, SongRef] = {}
    for s in songs:
        by_place.setdefault(s.where, s)
    songs = sorted(by_place.values(), key=lambda s: s.song_id)
    check_unique(songs)
    return songs


# --------------------------------------------------------------------------------------
# FMA metadata


@dataclasses.dataclass
class MetadataReport:
    """How the inputs and the FMA metadata line up (goes into summary.json)."""

    tracks_in_metadata: int = 0
    songs_with_metadata: int = 0
    songs_without_metadata: list[str] = dataclasses.field(default_factory=list)
    tracks_missing_from_inputs: list[int] = dataclasses.field(default_factory=list)

    def to_summary(self, examples: int = 5) -> dict:
        return {
            "tracks_in_metadata": self.tracks_in_metadata,
            "songs_with_metadata": self.songs_with_metadata,
            "songs_without_metadata": {"count": len(self.songs_without_metadata),
                                       "examples": self.songs_without_metadata[:examples]},
            "tracks_missing_from_inputs": {
                "count": len(self.tracks_missing_from_inputs),
                "examples": self.tracks_missing_from_inputs[:examples]},
        }


def apply_metadata(songs: Sequence[SongRef], meta: dict[int, fma.FmaTrack],
                   genre_from: str, split_from: str) -> tuple[list[SongRef], MetadataReport]:
    """Labels songs from FMA's tracks.csv: top genre and/or FMA's own split.

    With split_from='fma', a song without a split in the metadata is rejected (reason
    no_metadata): FMA's split keeps each artist in one split, a hash would not.
    """
    report = MetadataReport(tracks_in_metadata=len(meta))
    out = []
    for s in songs:
        track = meta.get(s.track_id) if s.track_id >= 0 else None
        if track is None:
            report.songs_without_metadata.append(s.song_id)
        else:
            report.songs_with_metadata += 1
        if genre_from == "fma":
            s = s.with_(genre=(track.genre_top if track and track.genre_top
                               else UNKNOWN_GENRE))
        if split_from == "fma":
            split = fma.FMA_SPLITS.get(track.split, "") if track else ""
            if split:
                s = s.with_(split=split)
            else:
                s = s.with_(reject=f"no_metadata: {s.where}: no FMA split for this "
                                   "track in the metadata (--split_from=fma)")
        out.append(s)
    present = [s.track_id for s in songs if s.track_id in meta]
    report.tracks_missing_from_inputs = sorted(fma.expected_tracks(meta, present)
                                               - {s.track_id for s in songs})
    return out, report


# --------------------------------------------------------------------------------------
# Reading


class ArchiveCache:
    """Open zip archives, kept across songs so each central directory is read once.

    A member up to `in_memory_bytes` is inflated into memory in one pass: decoders seek
    (mp3 readers look for a tag at the end, then rewind), and every seek in a deflate
    stream means inflating again from the start. A larger member is streamed through
    the decompressor, seeks and all, so memory stays bounded whatever its size. Nothing
    is extracted to disk.
    """

    def __init__(self, max_open: int = 4, in_memory_bytes: int = 64 << 20):
        self.max_open = max_open
        self.in_memory_bytes = in_memory_bytes
        self._open: OrderedDict[str, tuple] = OrderedDict()

    def member(self, uri: str, member: str) -> BinaryIO:
        if uri in self._open:
            self._open.move_to_end(uri)
            zf = self._open[uri][1]
        else:
            f = open(local_path(uri), "rb") if is_local(uri) else \
                _fs().open(uri, compression_type="uncompressed")
            zf = zipfile.ZipFile(f)
            self._open[uri] = (f, zf)
            while len(self._open) > self.max_open:
                _, (old_f, old_zf) = self._open.popitem(last=False)
                old_zf.close()
                old_f.close()
        if zf.getinfo(member).file_size <= self.in_memory_bytes:
            return io.BytesIO(zf.read(member))
        return zf.open(member)

    def close(self):
        for f, zf in self._open.values():
            zf.close()
            f.close()
        self._open.clear()


class SongTooLarge(Exception):
    """A song over --max_song_bytes: read no further."""


@contextlib.contextmanager
def open_song(song: SongRef, archives: ArchiveCache, fetch_cfg: fetch.FetchConfig,
              ) -> Iterator[str | BinaryIO]:
    """Yields what the decoder reads: a local path, or a binary file object.

    Raises SongTooLarge (size over fetch_cfg.max_bytes), fetch.FetchError (URLs), OSError.
    """
    if song.size > fetch_cfg.max_bytes:
        raise SongTooLarge(f"{song.where}: {song.size} bytes is over the limit of "
                           f"{fetch_cfg.max_bytes} (--max_song_bytes)")
    if song.kind == ZIP:
        with archives.member(song.uri, song.member) as f:
            yield f
    elif song.kind == URL:
        got = fetch.fetch(song.uri, fetch_cfg, song.sha256 or None)
        with got.file as f:
            yield f
    elif is_local(song.uri):
        yield local_path(song.uri)
    else:
        with _fs().open(song.uri, compression_type="uncompressed") as f:
            yield f
