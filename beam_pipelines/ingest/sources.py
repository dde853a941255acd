"""Where songs come from: `--input` values -> songs with stable ids, and reading them.

An input is an audio file, a folder (searched recursively for audio files), a glob, a
zip archive (e.g. FMA's fma_small.zip: each audio member is a song, read straight from the
archive as a stream), or a URL list (`*.urls`: one http(s) URL per line, optional sha256).
Paths go through Beam's FileSystems, so local paths, gs:// and s3:// all work where their
Beam extras are installed. Listing happens once, when the pipeline is built; the songs
themselves are read by the workers (`open_song`).

Links inside a local folder: a link to a file is a song like any other file (a dangling
or looping one is rejected, not_a_file). A link to a folder is followed, once: its songs
get ids through the link's own path ('more/jazz/b.wav' for the link 'more'). Folders
are told apart by real path, so a link that leads back to a folder holding it (a loop),
into a folder already walked (a second route to the same songs, which would list them
twice under two ids), or to a folder holding one already walked, is not followed: the
link itself is rejected (not_a_file), its detail naming where it leads and why. The
input folder's own subfolders are walked before any link is followed, and links are
followed in the walk's sorted order, so which route wins does not depend on the order
the filesystem lists entries in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import io
import os
import posixpath
import re
import stat
import unicodedata
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from beam_pipelines.ingest import fetch, song_chunks
from beam_pipelines.ingest import fma_metadata as fma
from wavegen.data import audio
from wavegen.data.dataset import UNKNOWN_GENRE
from wavegen.data.paths import is_local, local_path
from wavegen.errors import UserError, one_line

GENRE_FROM = ("folder", "none", "fma")
SPLIT_FROM = ("hash", "fma")
DEFAULT_GENRE_FROM, DEFAULT_SPLIT_FROM = "none", "hash"
FILE, ZIP, URL = "file", "zip", "url"
_GLOB_CHARS = re.compile(r"[*?\[]")


class SourceError(UserError):
    """An --input that cannot be used, named in the message."""


@dataclasses.dataclass(frozen=True)
class SongRef:
    """One input song: what it is called, where to read it, its label and split."""

    song_id: str  # unique and readable: 'rock/song1.mp3', an FMA track id '2', or a URL
    uri: str  # the file, the archive holding the member, or the URL
    input: str  # the --input it was found under (for messages)
    kind: str = FILE  # FILE, ZIP (uri is the archive, member the song) or URL
    member: str = ""
    entry: int = -1  # ZIP: the member's index in the archive's central directory
    genre: str = UNKNOWN_GENRE
    split: str = ""
    size: int = -1  # bytes, when known before reading
    sha256: str = ""  # expected checksum of a URL's body, when the list gives one
    track_id: int = -1  # FMA track id, when the name says
    reject: str = ""  # "reason: detail" for a song known to be unusable when listed
    # URL: the credentials ('user:password') of a URL that had them, kept apart from uri
    # and song_id, which are stored and shown; used only for the request.
    userinfo: str = dataclasses.field(default="", repr=False)

    def with_(self, **kw) -> "SongRef":
        return dataclasses.replace(self, **kw)

    @property
    def where(self) -> str:
        """Where the song is, for messages: a path, 'archive.zip:member' or a URL."""
        return f"{self.uri}:{self.member}" if self.kind == ZIP else self.uri

    @property
    def place(self) -> tuple[str, int]:
        """What the song is, exactly: `where`, and which of the members of that name."""
        return self.where, self.entry


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
    With genre_from='folder' a song's genre is the name of its parent folder inside the
    input (a file at the top of a folder input has none). Entries that cannot be songs
    (links to nowhere, pipes, unreadable files, names with control characters...) are
    listed with `reject` set, so the run accounts for them without reading them.
    Raises SourceError if the input matches nothing usable.
    """
    if genre_from not in GENRE_FROM:
        raise SourceError(f"--genre_from must be one of {GENRE_FROM}, got {genre_from!r}")
    base, found, kind = _list_local(spec) if is_local(spec) else _list_remote(spec)
    if not found:
        raise SourceError(f"--input {spec}: the {kind} holds no "
                          f"{'/'.join(e[1:] for e in audio.AUDIO_EXTENSIONS)} files")
    songs = []
    for m in found:
        if m.problem:
            songs.append(SongRef(song_id=_relative(m.path, base), uri=m.path, input=spec,
                                 reject=m.problem))
        elif is_archive(m.path):
            songs.extend(list_archive(m.path, spec, genre_from))
        elif is_url_list(m.path):
            songs.extend(list_urls(m.path, spec, genre_from))
        else:
            rel = _relative(m.path, base)
            inside = kind != "file" and "/" in rel
            songs.append(SongRef(
                song_id=rel, uri=m.path, input=spec, kind=FILE,
                genre=_parent_name(m.path) if genre_from == "folder" and (
                    inside or kind == "file") else UNKNOWN_GENRE,
                size=m.size_in_bytes, track_id=_track_id(rel)))
    return [_check_names(s) for s in songs]


@dataclasses.dataclass(frozen=True)
class _Found:
    path: str
    size_in_bytes: int
    problem: str = ""  # "reason: detail" for what cannot be read as a song


def _list_local(spec: str) -> tuple[str, list[_Found], str]:
    """(base folder, entries, kind) of a local --input, read with the OS, never Beam (whose
    listing drops dangling links silently and would open a pipe)."""
    path = local_path(spec)
    if os.path.isdir(path):
        base = path.rstrip("/") or "/"
        try:
            os.scandir(base).close()
        except OSError as e:  # the input itself: stop with one line, as for a missing one
            raise SourceError(f"--input {spec}: cannot list the folder "
                              f"({one_line(e.strerror or e)})") from e
        return base, _walk(base), "folder"
    if os.path.lexists(path):  # 'Album [FLAC].mp3' is a file, not a glob
        if not _is_input_file(path):
            raise SourceError(f"--input {spec}: not a supported input (expected an audio "
                              f"file ({', '.join(audio.AUDIO_EXTENSIONS)}), a .zip archive "
                              "or a .urls list)")
        return os.path.dirname(path), [_stat(path)], "file"
    if _GLOB_CHARS.search(path):
        base = os.path.dirname(_GLOB_CHARS.split(path, 1)[0])
        matches = sorted(glob.glob(path, recursive=True, include_hidden=True))
        return base, [_stat(m) for m in matches
                      if _is_input_file(m) and not os.path.isdir(m)], "glob"
    raise SourceError(f"--input {spec}: no such file or folder")


def _list_remote(spec: str) -> tuple[str, list[_Found], str]:
    """(base, entries, kind) of a gs:// or s3:// --input, listed through Beam."""
    fs = _fs()
    if _GLOB_CHARS.search(spec):
        base = posixpath.dirname(_GLOB_CHARS.split(spec, 1)[0])
        found, kind = [m for m in fs.match([spec])[0].metadata_list
                       if _is_input_file(m.path)], "glob"
    elif fs.exists(spec):
        if not _is_input_file(spec):
            raise SourceError(f"--input {spec}: not a supported input")
        base, found, kind = posixpath.dirname(spec), fs.match([spec])[0].metadata_list, "file"
    else:  # a remote "folder" is a prefix
        base = spec.rstrip("/")
        found = [m for m in fs.match([base + "/**"])[0].metadata_list
                 if audio.is_audio_path(m.path)]
        kind = "folder"
        if not found:
            raise SourceError(f"--input {spec}: no such file or folder")
    return base, [_Found(m.path, int(m.size_in_bytes)) for m in found], kind


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def local_problem(path: str) -> str:
    """Why a local path cannot be read as a song ('reason: detail'), or '' for a regular,
    readable file. Never opens it (opening a pipe would block)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if os.path.islink(path):
            what = ("a symbolic link loop" if e.errno == errno.ELOOP
                    else f"a dangling symbolic link (to {os.readlink(path)})")
            return f"{song_chunks.NOT_A_FILE}: {path}: {what}"
        return f"{song_chunks.UNREADABLE}: {path}: {one_line(e.strerror or e)}"
    for test, what in _KINDS:
        if test(st.st_mode):
            return f"{song_chunks.NOT_A_FILE}: {path}: {what}, not a regular file"
    if not os.access(path, os.R_OK):
        return f"{song_chunks.UNREADABLE}: {path}: permission denied"
    return ""


def _stat(path: str) -> _Found:
    problem = local_problem(path)
    return _Found(path, -1 if problem else os.path.getsize(path), problem)


def _walk(folder: str) -> list[_Found]:
    """Every audio file under a local folder (taken literally: '[' or '*' in its name are
    not wildcards), in a stable order, following links to folders once (see
    `_follow_links`); a subfolder that cannot be listed, and a link to a folder that is
    not followed, are entries too (with their problem)."""
    out: list[_Found] = []
    walked = {os.path.realpath(folder)}  # real paths of every folder listed so far
    links = _walk_tree(folder, out, walked)
    _follow_links(links, out, walked)
    return out


def _walk_tree(top: str, out: list[_Found], walked: set[str]) -> list[str]:
    """Lists the folder `top` and its real subfolders into `out`, adding their real paths
    to `walked`; returns the links to folders found in them, not followed yet."""
    links = []

    def unlistable(e: OSError):
        out.append(_Found(e.filename, -1, f"{song_chunks.UNREADABLE}: {e.filename}: cannot "
                                          f"list the folder ({one_line(e.strerror or e)})"))

    for root, dirs, files in os.walk(top, onerror=unlistable):
        dirs.sort()
        linked = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        links.extend(os.path.join(root, d) for d in linked)
        dirs[:] = [d for d in dirs if d not in linked]
        walked.update(os.path.realpath(os.path.join(root, d)) for d in dirs)
        out.extend(_stat(os.path.join(root, name)) for name in sorted(files)
                   if audio.is_audio_path(name))
    return links


def _follow_links(links: list[str], out: list[_Found], walked: set[str]) -> None:
    """Follows each link to a folder, in order, unless it leads where the walk has been:
    into a folder already listed (a second route: its songs would be listed twice, under
    two ids) or to a folder holding one (a loop, or a superset of what was listed). Such a
    link is an entry itself, rejected (not_a_file) with where it leads. Links found in a
    followed folder join the end of the queue."""
    queue = list(links)
    while queue:
        link = queue.pop(0)
        target = os.path.realpath(link)
        why = _already_walked(link, target, walked)
        if why:
            out.append(_Found(link, -1, f"{song_chunks.NOT_A_FILE}: {link}: a link to the "
                                        f"folder {target}, not followed: {why}"))
            continue
        walked.add(target)
        queue.extend(_walk_tree(link, out, walked))


def _already_walked(link: str, target: str, walked: set[str]) -> str:
    """Why `link`, to the folder `target` (its real path), must not be followed, or ''."""
    home = os.path.realpath(os.path.dirname(link))
    if _inside(home, target):
        return "it leads back to a folder that holds it (a loop)"
    if target in walked:
        return "that folder is already walked (a second route to it)"
    held = sorted(w for w in walked if _inside(w, target))
    if held:
        return f"it holds {held[0]}, a folder already walked (a second route to it)"
    return ""


def _inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _check_names(song: SongRef) -> SongRef:
    """Rejects (bad_name) a song whose id or genre holds control characters: they would
    shift the lines of genre.labels.txt and garble every report. Rejects a genre that
    would not read back the same from genre.labels.txt (`_genre_problem`)."""
    if song.reject:
        return song.with_(genre=UNKNOWN_GENRE)
    for what, text in (("song id", song.song_id), ("genre", song.genre)):
        bad = sorted({c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
        if bad:
            return song.with_(genre=UNKNOWN_GENRE, reject=(
                f"{song_chunks.BAD_NAME}: {song.where!r}: its {what} {text!r} holds control "
                f"characters ({', '.join(repr(c) for c in bad)}); rename it"))
    problem = _genre_problem(song.genre)
    if problem:
        return song.with_(genre=UNKNOWN_GENRE, reject=(
            f"{song_chunks.BAD_NAME}: {song.where!r}: its genre {song.genre!r} {problem}, "
            "which genre.labels.txt does not keep; rename it"))
    return song


def _genre_problem(genre: str) -> str:
    """Why a genre would not come back exactly from the dataset's genre.labels.txt, or ''.

    TFDS writes the ClassLabel names one a line and reads each line back stripped of
    whitespace (str.strip: Unicode spaces too), skipping empty ones; metadata.json keeps
    the name as it is, and a dataset whose two lists differ is refused by training. Song
    ids are stored as bytes in the examples and come back exactly."""
    if not genre.strip():
        return "is empty or only whitespace"
    if genre != genre.strip():
        return "has leading or trailing whitespace"
    return ""


def _track_id(name: str) -> int:
    tid = fma.track_id_from_member(name)
    return -1 if tid is None else tid


NESTED_ARCHIVE_EXTENSIONS = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)


def _member_problem(info: zipfile.ZipInfo) -> str:
    """Why a listed member cannot be read ('reason: detail'), or ''."""
    if _ext(info.filename) in NESTED_ARCHIVE_EXTENSIONS:
        return f"{song_chunks.NESTED_ARCHIVE}: an archive inside the archive (not opened)"
    if info.flag_bits & 0x1:
        return f"{song_chunks.ENCRYPTED}: encrypted (needs a password)"
    if info.compress_type not in _ZIP_METHODS:
        return (f"{song_chunks.UNSUPPORTED_COMPRESSION}: compression method "
                f"{info.compress_type} is not one zipfile reads")
    return ""


def _duplicate(info: zipfile.ZipInfo, entry: int) -> str:
    return (f"{song_chunks.DUPLICATE_MEMBER}: a second member named {info.filename} (entry "
            f"{entry + 1} of the archive); only the first is read")


def list_archive(path: str, spec: str, genre_from: str = "none") -> list[SongRef]:
    """The audio members of a zip archive (and its nested archives, rejected), read from
    its central directory only.

    An archive can hold several members of one name (zip allows it): each is a song. The
    first is read; each later one is rejected (duplicate_member), its id the first's with
    '#2', '#3'... (no audio member's name ends that way, so ids stay unique)."""
    try:
        with _fs().open(path, compression_type="uncompressed") as f, zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise SourceError(f"--input {spec}: {path} is not a readable zip archive "
                          f"({one_line(e)})") from e
    songs = []
    copies: dict[str, int] = {}  # member name -> members of that name so far
    for entry, info in enumerate(infos):
        nested = _ext(info.filename) in NESTED_ARCHIVE_EXTENSIONS
        if info.is_dir() or not (audio.is_audio_path(info.filename) or nested):
            continue
        tid = _track_id(info.filename)
        copies[info.filename] = copy = copies.get(info.filename, 0) + 1
        problem = _member_problem(info) if copy == 1 else _duplicate(info, entry)
        song_id = str(tid) if tid >= 0 else info.filename
        songs.append(SongRef(
            song_id=song_id if copy == 1 else f"{song_id}#{copy}", uri=path, input=spec,
            kind=ZIP, member=info.filename, entry=entry, size=info.file_size, track_id=tid,
            reject=problem.replace(": ", f": {path}:{info.filename}: ", 1) if problem else "",
            genre=_parent_name(info.filename) if genre_from == "folder" else UNKNOWN_GENRE))
    if not songs:
        raise SourceError(f"--input {spec}: the archive {path} holds no audio members")
    return songs


def list_urls(path: str, spec: str, genre_from: str = "none") -> list[SongRef]:
    """The songs of a URL list: one per distinct URL. Bad schemes and malformed lines are
    kept, rejected (rejected_url), so that they are counted and dead-lettered like any
    failure. A URL's credentials (user:password@) are kept out of its id and uri, which
    are stored and shown, in `userinfo`, for the request only."""
    with _fs().open(path, compression_type="uncompressed") as f:
        text = f.read().decode("utf-8", errors="surrogateescape")
    try:
        entries = fetch.parse_url_list(text, path)
    except ValueError as e:
        raise SourceError(f"--input {spec}: {e}") from e
    if not entries:
        raise SourceError(f"--input {spec}: the URL list {path} holds no URLs")
    songs = []
    for e in entries:
        url, userinfo = fetch.split_userinfo(e.url)
        songs.append(SongRef(
            song_id=f"{path}:{e.line}" if e.problem else url, uri=url, input=spec,
            kind=URL, sha256=e.sha256 or "", userinfo=userinfo,
            reject=f"{fetch.REJECTED_URL}: {e.problem}" if e.problem else "",
            genre=_parent_name(url.split("?")[0]) if genre_from == "folder"
            and not e.problem else UNKNOWN_GENRE))
    return songs


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
    by_place: dict[tuple[str, int], SongRef] = {}
    for s in songs:
        by_place.setdefault(s.place, s)
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
        out.append(_check_names(s))
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

    def member(self, uri: str, member: str, entry: int = -1) -> BinaryIO:
        """The member `member` of the archive `uri`: the one at index `entry` of its
        central directory when given (zipfile, opening by name, would take the last of
        several members of that name), else the one zipfile finds by name."""
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
        infos = zf.infolist()
        if entry >= len(infos) or (entry >= 0 and infos[entry].filename != member):
            # the archive changed since it was listed
            raise zipfile.BadZipFile(f"entry {entry + 1} of the archive is no longer "
                                     f"{member!r}")
        info = infos[entry] if entry >= 0 else zf.getinfo(member)
        if info.file_size <= self.in_memory_bytes:
            return io.BytesIO(zf.read(info))
        return zf.open(info)

    def close(self):
        for f, zf in self._open.values():
            zf.close()
            f.close()
        self._open.clear()


class SongTooLarge(Exception):
    """A song over --max_song_bytes: read no further."""


class _GuardedMember:
    """A streamed archive member whose read errors (CRC, inflation) end its data instead
    of raising inside the decoder's callbacks (which must not raise); `error` keeps the
    first one for the caller."""

    _ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)

    def __init__(self, f: BinaryIO):
        self._f = f
        self.error: BaseException | None = None

    def read(self, n: int = -1) -> bytes:
        if self.error is None:
            try:
                return self._f.read(n)
            except self._ERRORS as e:
                self.error = e
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self._f.seek(offset, whence)
        except self._ERRORS as e:
            self.error = self.error or e
            return self._f.tell()

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()


def _failure(problem: str) -> song_chunks.SongFailure:
    reason, _, detail = problem.partition(": ")
    return song_chunks.SongFailure(reason, detail)


@contextlib.contextmanager
def _open_member(song: SongRef, archives: ArchiveCache) -> Iterator[BinaryIO]:
    """A member to decode; data that fails its CRC or inflation fails the song
    (corrupt_member), whatever the decoder made of it."""
    try:
        f = archives.member(song.uri, song.member, song.entry)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise song_chunks.SongFailure(song_chunks.CORRUPT_MEMBER,
                                      f"{song.where}: {one_line(e)}") from None
    guarded = f if isinstance(f, io.BytesIO) else _GuardedMember(f)
    try:
        yield guarded
    except song_chunks.SongFailure:
        if getattr(guarded, "error", None) is None:
            raise
    finally:
        guarded.close()
    if getattr(guarded, "error", None) is not None:
        raise song_chunks.SongFailure(song_chunks.CORRUPT_MEMBER,
                                      f"{song.where}: {one_line(guarded.error)}")


@contextlib.contextmanager
def open_song(song: SongRef, archives: ArchiveCache, fetch_cfg: fetch.FetchConfig,
              ) -> Iterator[str | BinaryIO]:
    """Yields what the decoder reads: a local path, or a binary file object.

    Raises SongTooLarge (size over fetch_cfg.max_bytes), fetch.FetchError (URLs),
    song_chunks.SongFailure (a local path that is no longer a regular, readable file; a
    corrupt archive member), OSError.
    """
    if song.size > fetch_cfg.max_bytes:
        raise SongTooLarge(f"{song.where}: {song.size} bytes is over the limit of "
                           f"{fetch_cfg.max_bytes} (--max_song_bytes)")
    if song.kind == ZIP:
        with _open_member(song, archives) as f:
            yield f
    elif song.kind == URL:
        got = fetch.fetch(fetch.with_userinfo(song.uri, song.userinfo), fetch_cfg,
                          song.sha256 or None)
        with got.file as f:
            yield f
    elif is_local(song.uri):
        problem = local_problem(local_path(song.uri))  # checked again: never open a pipe
        if problem:
            raise _failure(problem)
        yield local_path(song.uri)
    else:
        with _fs().open(song.uri, compression_type="uncompressed") as f:
            yield f
