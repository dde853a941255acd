"""The pipeline's output folder: checked before any work, locked while a run writes to it,
and a dataset in it replaced so that a crash at any moment loses neither the old nor the
new one.

A folder is wavegen's only when it proves it: its metadata.json is a wavegen dataset's
metadata, or it holds the marker (`.wavegen-output.json`) every run writes into the folder
it writes to, or an interrupted replacement's journal. Any other folder holding anything
but a lock file is refused, even with --overwrite; so are filesystem roots and the home
folder. In a wavegen folder the pipeline deletes or overwrites only names a wavegen dataset
writes, by exact name (the old dataset's shards as its dataset_info.json lists them, its
metadata and report files), and removes only scratch folders named
`.wavegen-staging-<12 hex>` / `.wavegen-old-<12 hex>` that hold the marker written when
they were made (`.wavegen-scratch`).

Replacing a dataset (`replace_dataset`) is journaled: the new dataset is complete in a
staging folder inside the output folder; a journal (`.wavegen-replace.json`, written
atomically) names the old and the new files; the old files move into a backup folder
(dataset_info.json first), the new ones move in (dataset_info.json last), and the journal
and the backup go. A run killed part-way leaves the journal, and both datasets on disk;
the next run into the folder (`recover`, under the lock) finishes the replacement before
anything else. Local folders are locked with flock; remote ones (gs://, s3://) are not.

Nothing read from the output folder can name a path outside it: a journal is used only
when its folders are plain names of the exact scratch patterns (real folders holding the
scratch marker, not links) and its file lists plain dataset file names (`journal_problem`);
any other journal is refused in one line and nothing is moved.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator

from apache_beam.io.filesystems import FileSystems

from wavegen.data.dataset import INFO_FILE, SHARD_PATTERN, shard_filename
from wavegen.data.paths import is_local, local_path
from wavegen.errors import UserError, one_line

LOCK_FILE = ".wavegen.lock"
JOURNAL = ".wavegen-replace.json"
MARKER = ".wavegen-output.json"  # written by every run into the folder it writes to
SCRATCH_MARKER = ".wavegen-scratch"  # written into each staging/backup folder at mkdir
STAGING_PREFIX = ".wavegen-staging-"
BACKUP_PREFIX = ".wavegen-old-"
METADATA_FILES = (INFO_FILE, "features.json", "metadata.json", "genre.labels.txt")
REPORT_FILES = ("failed.jsonl", "summary.json")
LATEST_REPORT_FILES = ("failed.latest.jsonl", "summary.latest.json")
_SCRATCH = re.compile(rf"({re.escape(STAGING_PREFIX)}|{re.escape(BACKUP_PREFIX)})[0-9a-f]{{12}}")


class OutputError(UserError):
    """An --output_dir the pipeline must not or cannot write to (one line)."""


def _join(folder: str, name: str) -> str:
    return os.path.join(folder, name)


def _list(folder: str) -> list[str]:
    """Names directly inside `folder` ([] when it does not exist)."""
    if is_local(folder):
        path = local_path(folder)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    found = FileSystems.match([_join(folder, "*")])[0].metadata_list
    prefix = folder.rstrip("/") + "/"
    return sorted({m.path[len(prefix):].split("/", 1)[0] for m in found
                   if m.path.startswith(prefix)})


def _read_json(path: str):
    """The JSON object in `path`; None when missing, unreadable or not a JSON object."""
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            value = json.loads(f.read().decode("utf-8"))
    except Exception:  # missing, unreadable or not JSON
        return None
    return value if isinstance(value, dict) else None


def is_wavegen_folder(folder: str) -> bool:
    """Whether `folder` proves a wavegen run wrote it: its metadata.json is a wavegen
    dataset's, or it holds a run's marker or a well-formed replacement journal (by their
    content)."""
    metadata = _read_json(_join(folder, "metadata.json")) or {}
    marker = _read_json(_join(folder, MARKER)) or {}
    journal = _read_json(_join(folder, JOURNAL))
    return ("wavegen_metadata_version" in metadata or marker.get("wavegen_output") == 1
            or (journal is not None and journal_problem(journal) is None))


def _write_small(path: str, text: str) -> None:
    with FileSystems.create(path, compression_type="uncompressed") as f:
        f.write(text.encode("utf-8"))


def mark_output_dir(out: str) -> None:
    """Marks `out` as written by wavegen (under `locked`, after the check, before the
    run's first file goes into `out` itself)."""
    _write_small(_join(out, MARKER), json.dumps({"wavegen_output": 1}) + "\n")


def make_scratch(out: str, prefix: str = STAGING_PREFIX) -> str:
    """A new staging (or backup) folder in `out`, with its marker; returns its path."""
    path = _join(out, f"{prefix}{uuid.uuid4().hex[:12]}")
    _make_marked(path)
    return path


def _make_marked(path: str) -> None:
    FileSystems.mkdirs(path)
    _write_small(_join(path, SCRATCH_MARKER), "made by a wavegen run; removed with it\n")


def _is_scratch(path: str) -> bool:
    """A staging or backup folder a run made: its exact name, a real folder (not a link to
    one elsewhere), and its marker."""
    if not _SCRATCH.fullmatch(os.path.basename(path.rstrip("/"))):
        return False
    if is_local(path) and (os.path.islink(local_path(path))
                           or not os.path.isdir(local_path(path))):
        return False
    return _exists(_join(path, SCRATCH_MARKER))


def is_dataset_name(name: object) -> bool:
    """Whether `name` is a plain file name a wavegen dataset holds: a shard (its exact
    pattern), a metadata or a report file."""
    return isinstance(name, str) and (
        bool(SHARD_PATTERN.fullmatch(name))
        or name in METADATA_FILES + REPORT_FILES + LATEST_REPORT_FILES)


def _check_local_place(out: str) -> None:
    """Roots, the home folder, files, links to nothing and unwritable places are
    refused."""
    path = local_path(out)
    if os.path.islink(path.rstrip("/") or path) and not os.path.exists(path):
        raise OutputError(f"--output_dir={out}: a link to {os.readlink(path.rstrip('/'))}, "
                          "which does not exist (or loops); create the folder it names or "
                          "choose another --output_dir")
    real = os.path.realpath(path)
    if os.path.dirname(real) == real:
        raise OutputError(f"--output_dir={out}: a filesystem root; name a folder for the "
                          "dataset")
    if real == os.path.realpath(os.path.expanduser("~")):
        raise OutputError(f"--output_dir={out}: your home folder; name a folder for the "
                          "dataset")
    if os.path.exists(real) and not os.path.isdir(real):
        raise OutputError(f"--output_dir={out}: a file, not a folder")
    existing = real
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OutputError(f"--output_dir={out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"--output_dir={out}: {existing} is not writable")


def check_output_dir(out: str, overwrite: bool) -> str:
    """The output folder, checked before any work: one line (OutputError) when refused.

    Returns it without a trailing slash."""
    if not out or not out.strip():
        raise OutputError("--output_dir is empty")
    if is_local(out):
        _check_local_place(out)
    out = out.rstrip("/") or out
    names = [n for n in _list(out)  # a lock and a killed run's marked scratch: ours
             if n != LOCK_FILE and not _is_scratch(_join(out, n))]
    if names and not is_wavegen_folder(out):
        raise OutputError(f"--output_dir={out} holds files that are not a wavegen dataset's "
                          f"(e.g. {', '.join(map(repr, names[:3]))}); wavegen writes only "
                          "into an empty folder or a wavegen dataset (--overwrite does not "
                          "change that)")
    if INFO_FILE in names and JOURNAL not in names and not overwrite:
        raise OutputError(f"{out} already holds a dataset; pass --overwrite to replace it")
    return out


@contextlib.contextmanager
def locked(out: str) -> Iterator[None]:
    """Holds an exclusive lock on a local output folder (created if needed) while the run
    writes to it; a second run is refused with OutputError naming the holder."""
    if not is_local(out):
        if not FileSystems.exists(out):
            FileSystems.mkdirs(out)
        yield
        return
    os.makedirs(local_path(out), exist_ok=True)
    path = _join(local_path(out), LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
            raise OutputError(f"--output_dir={out}: another wavegen run (pid {holder}) is "
                              "writing to this folder; wait for it to end") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race)


# --------------------------------------------------------------------------------------
# Replacing a dataset


def old_dataset_files(out: str) -> list[str]:
    """The names of the dataset in `out`: its shards (as its dataset_info.json lists them,
    or by their exact pattern if it is unreadable), metadata and report files; none when
    the folder does not prove it is wavegen's."""
    if not is_wavegen_folder(out):
        return []
    names = set(_list(out))
    shards: set[str] = set()
    try:
        with FileSystems.open(_join(out, INFO_FILE), compression_type="uncompressed") as f:
            info = json.loads(f.read().decode("utf-8"))
        for split in info.get("splits", []):
            n = len(split.get("shardLengths", []))
            shards |= {shard_filename(split["name"], i, n) for i in range(n)}
    except Exception:  # no or unreadable dataset_info.json: the names wavegen writes
        shards = {n for n in names if SHARD_PATTERN.fullmatch(n)}
    keep = METADATA_FILES + REPORT_FILES + LATEST_REPORT_FILES
    return sorted(n for n in names if n in shards or n in keep)


def after_step(done: int) -> None:
    """Called after each step of a replacement with the number of steps done; does
    nothing. Tests replace it (monkeypatch, or tests/pipeline/crash_at_step.py in a
    subprocess) to stop a replacement at any step."""


class _Steps:
    """Counts the steps of a replacement, calling `after_step` after each."""

    def __init__(self):
        self.done = 0

    def __call__(self) -> None:
        self.done += 1
        after_step(self.done)


def _rename(src: str, dst: str) -> None:
    if is_local(src):
        os.replace(local_path(src), local_path(dst))
    else:
        FileSystems.rename([src], [dst])


def _exists(path: str) -> bool:
    return os.path.lexists(local_path(path)) if is_local(path) else FileSystems.exists(path)


def _remove_tree(path: str) -> None:
    if not _exists(path):
        return
    if is_local(path):
        import shutil

        shutil.rmtree(local_path(path), ignore_errors=True)
    else:
        FileSystems.delete([path.rstrip("/") + "/"])


def _write_journal(out: str, journal: dict) -> None:
    path = _join(out, JOURNAL)
    text = json.dumps(journal, indent=1).encode("utf-8")
    if is_local(out):
        tmp = local_path(path) + ".tmp"
        with open(tmp, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, local_path(path))
    else:  # an object store writes an object whole or not at all
        with FileSystems.create(path, compression_type="uncompressed") as f:
            f.write(text)


_JOURNAL_KEYS = ("staging", "backup", "old", "new", "phase")
_PHASES = ("backup", "install")


def journal_problem(journal: object) -> str | None:
    """What makes `journal` something other than a replacement journal wavegen writes;
    None when it is one. Its folders must be plain names of the exact scratch patterns and
    its file lists plain dataset file names, so nothing it names is outside the output
    folder or anything but a dataset's file."""
    if not isinstance(journal, dict):
        return "not a JSON object"
    keys = set(journal)
    if keys != set(_JOURNAL_KEYS):
        missing, extra = set(_JOURNAL_KEYS) - keys, keys - set(_JOURNAL_KEYS)
        return "; ".join(filter(None, [
            missing and f"missing {', '.join(sorted(missing))}",
            extra and f"unknown key(s) {', '.join(sorted(map(repr, extra))[:3])}"]))
    for key, prefix in (("staging", STAGING_PREFIX), ("backup", BACKUP_PREFIX)):
        value = journal[key]
        if not (isinstance(value, str) and value.startswith(prefix)
                and _SCRATCH.fullmatch(value)):
            return f"{key} is {_short(value)}, not a {prefix}<12 hex> folder name"
    if journal["phase"] not in _PHASES:
        return f"phase is {_short(journal['phase'])}, not one of {', '.join(_PHASES)}"
    for key in ("old", "new"):
        names = journal[key]
        if not isinstance(names, list):
            return f"{key} is {_short(names)}, not a list of file names"
        bad = [n for n in names if not is_dataset_name(n)]
        if bad:
            return f"{key} names {_short(bad[0])}, not a dataset's file name"
        if len(set(names)) != len(names):
            return f"{key} names a file twice"
    return None


def _short(value: object) -> str:
    text = one_line(json.dumps(value, ensure_ascii=True) if not isinstance(value, str)
                    else repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def read_journal(out: str) -> dict | None:
    """The replacement journal in `out`, checked (`journal_problem`); None when there is
    none; OutputError (one line, nothing moved) when it is not one wavegen wrote, or its
    staging or backup folder is not a marked scratch folder."""
    path = _join(out, JOURNAL)
    if not _exists(path):
        return None
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            journal = json.loads(f.read().decode("utf-8"))
        problem = journal_problem(journal)
    except Exception as e:  # unreadable, not UTF-8, not JSON
        problem = f"unreadable ({one_line(e)[:120]})"
    if problem is None:
        for key in ("staging", "backup"):
            folder = _join(out, journal[key])
            if _exists(folder) and not _is_scratch(folder):
                problem = (f"its {key} folder {journal[key]} is not a folder this run's "
                           "scratch marker proves wavegen's")
    if problem is not None:
        raise OutputError(f"{path}: not a replacement journal wavegen wrote ({problem}); "
                          "nothing was moved; move it away to continue")
    return journal


def replace_dataset(out: str, staging: str, new_files: list[str]) -> None:
    """Puts the complete dataset in `staging` (these file names) in place of the one in
    `out`, journaled so that a crash at any step leaves both recoverable (see the module
    docstring)."""
    step = _Steps()
    journal = {"staging": os.path.basename(staging.rstrip("/")),
               "backup": f"{BACKUP_PREFIX}{uuid.uuid4().hex[:12]}",
               "old": old_dataset_files(out), "new": sorted(set(new_files)),
               "phase": "backup"}
    _write_journal(out, journal)
    step()
    _roll_forward(out, journal, step)


def _info_first(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != INFO_FILE, n))


def _roll_forward(out: str, journal: dict, step) -> None:
    """Finishes a replacement from wherever it stopped; every step may be repeated."""
    staging, backup = _join(out, journal["staging"]), _join(out, journal["backup"])
    if journal["phase"] == "backup":
        if not _exists(backup):
            _make_marked(backup)
        for name in _info_first(journal["old"]):  # without its info, no longer a dataset
            if _exists(_join(out, name)):
                _rename(_join(out, name), _join(backup, name))
                step()
        journal = dict(journal, phase="install")
        _write_journal(out, journal)
        step()
    for name in reversed(_info_first(journal["new"])):  # dataset_info.json last
        if _exists(_join(staging, name)):
            _rename(_join(staging, name), _join(out, name))
            step()
    _remove_path(_join(out, JOURNAL))
    step()
    _remove_scratch_tree(backup)
    step()


def _roll_back(out: str, journal: dict) -> None:
    """Puts the old dataset back (its new files went missing from the staging folder)."""
    backup = _join(out, journal["backup"])
    for name in reversed(_info_first(journal["new"])):
        if _exists(_join(out, name)) and name not in journal["old"]:
            _remove_path(_join(out, name))
    for name in reversed(_info_first(journal["old"])):
        if _exists(_join(backup, name)):
            _rename(_join(backup, name), _join(out, name))
    _remove_path(_join(out, JOURNAL))
    _remove_scratch_tree(backup)


def replacement_pending(out: str) -> bool:
    """Whether a replacement journal waits for the next run (`recover`) to finish it."""
    return _exists(_join(out, JOURNAL))


def recover(out: str) -> str:
    """Finishes (or, when the new files are gone, undoes) a replacement a crash left
    half-done; returns what it did, '' if there was nothing to do. Call under `locked`."""
    journal = read_journal(out)
    if journal is None:
        return ""
    staging = _join(out, journal["staging"])
    installed = journal["phase"] == "install"
    complete = all(_exists(_join(staging, n)) or (installed and _exists(_join(out, n)))
                   for n in journal["new"])
    if complete:
        _roll_forward(out, journal, lambda: None)
        return f"{out}: finished putting in place the dataset of an interrupted run"
    _roll_back(out, journal)
    return f"{out}: put back the dataset an interrupted run was replacing"


def _remove_path(path: str) -> None:
    if not _exists(path):
        return
    if is_local(path):
        os.remove(local_path(path))
    else:
        FileSystems.delete([path])


def stale_scratch(out: str) -> list[str]:
    """Staging and backup folders left by killed runs, by their exact name and marker
    (none is in use: call under `locked` and after `recover`)."""
    return [_join(out, n) for n in _list(out) if _is_scratch(_join(out, n))]


def remove_scratch(path: str) -> None:
    """Removes a staging or backup folder (its exact name and marker) unless a replacement
    journal still needs it."""
    out = os.path.dirname(path.rstrip("/"))
    if _exists(_join(out, JOURNAL)):
        return
    _remove_scratch_tree(path)


def _remove_scratch_tree(path: str) -> None:
    """Removes a folder only when it is a marked scratch folder (`_is_scratch`)."""
    if _is_scratch(path):
        _remove_tree(path)
