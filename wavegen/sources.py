"""Where songs come from: turning `--input` values into a list of songs with stable ids.

Paths go through Beam's FileSystems, so local paths, gs:// and s3:// all work where
their Beam extras are installed. Listing happens once, when the pipeline is built; the
songs themselves are read by the workers.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
from collections.abc import Iterable, Sequence

from wavegen import audio
from wavegen.dataset import UNKNOWN_GENRE

GENRE_FROM = ("folder", "none")
_GLOB_CHARS = re.compile(r"[*?\[]")


class SourceError(ValueError):
    """An --input that cannot be used, named in the message."""


@dataclasses.dataclass(frozen=True)
class SongRef:
    """One input song: what it is called, where to read it, its label and split."""

    song_id: str  # unique and readable, e.g. 'rock/song1.mp3' (relative to its input)
    uri: str  # the file to read
    input: str  # the --input it was found under (for messages)
    genre: str = UNKNOWN_GENRE
    split: str = ""
    size: int = -1  # bytes, when the filesystem says

    def with_(self, **kw) -> "SongRef":
        return dataclasses.replace(self, **kw)


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _relative(path: str, base: str) -> str:
    if _is_local(path):
        return os.path.relpath(path, base).replace(os.sep, "/")
    base = base.rstrip("/") + "/"
    return path[len(base):] if path.startswith(base) else posixpath.basename(path)


def _parent_name(path: str) -> str:
    return posixpath.basename(posixpath.dirname(path.replace(os.sep, "/"))) or UNKNOWN_GENRE


def expand_input(spec: str, genre_from: str = "none") -> list[SongRef]:
    """One --input value (file, folder searched recursively, or glob) -> its songs.

    A file's song id is its path relative to the input: for a folder, relative to the
    folder; for a glob, relative to the folder before the first wildcard; for a single
    file, its name. Raises SourceError if the input matches nothing usable.
    """
    fs = _fs()
    if genre_from not in GENRE_FROM:
        raise SourceError(f"--genre_from must be one of {GENRE_FROM}, got {genre_from!r}")
    if _GLOB_CHARS.search(spec):
        base = posixpath.dirname(_GLOB_CHARS.split(spec, 1)[0]) if not _is_local(spec) \
            else os.path.dirname(_GLOB_CHARS.split(spec, 1)[0])
        metas = fs.match([spec])[0].metadata_list
        found = [m for m in metas if audio.is_audio_path(m.path)]
        kind = "glob"
    elif _is_local(spec) and os.path.isdir(spec):
        base = spec.rstrip("/") or "/"
        found = [m for m in fs.match([fs.join(base, "**")])[0].metadata_list
                 if audio.is_audio_path(m.path)]
        kind = "folder"
    elif fs.exists(spec):
        base = os.path.dirname(spec) if _is_local(spec) else posixpath.dirname(spec)
        found = fs.match([spec])[0].metadata_list
        kind = "file"
        if not audio.is_audio_path(spec):
            raise SourceError(f"--input {spec}: not a supported audio file (expected one "
                              f"of {', '.join(audio.AUDIO_EXTENSIONS)})")
    else:
        # A remote "folder" is a prefix.
        base = spec.rstrip("/")
        found = [] if _is_local(spec) else [
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
        genre = _parent_name(m.path) if genre_from == "folder" else UNKNOWN_GENRE
        songs.append(SongRef(song_id=_relative(m.path, base), uri=m.path, input=spec,
                             genre=genre, size=int(m.size_in_bytes)))
    return songs


def check_unique(songs: Iterable[SongRef]) -> None:
    """Song ids must be unique across all inputs: a collision names both sources."""
    seen: dict[str, SongRef] = {}
    for s in songs:
        other = seen.get(s.song_id)
        if other is not None:
            raise SourceError(
                f"song id {s.song_id!r} comes from two sources: {other.uri} "
                f"(--input {other.input}) and {s.uri} (--input {s.input}); "
                "rename one or pass the inputs in separate runs")
        seen[s.song_id] = s


def discover(inputs: Sequence[str], genre_from: str = "none") -> list[SongRef]:
    """All songs of all --input values, sorted by id, ids unique."""
    if not inputs:
        raise SourceError("no --input given")
    songs: list[SongRef] = []
    for spec in inputs:
        songs.extend(expand_input(spec, genre_from))
    # The same file reached through two inputs (a folder and a glob inside it) is one
    # song, named after the first input that found it.
    by_uri: dict[str, SongRef] = {}
    for s in songs:
        by_uri.setdefault(s.uri, s)
    songs = sorted(by_uri.values(), key=lambda s: s.song_id)
    check_unique(songs)
    return songs
