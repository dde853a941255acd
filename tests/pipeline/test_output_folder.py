"""The output folder is sacred: only what a wavegen dataset wrote is deleted or
overwritten, by exact name; foreign folders, roots and home are refused; one run at a time;
and a crash at any step of putting a dataset in place loses neither dataset."""

import json
import os
import shutil
import sys

import pytest

from beam_pipelines import output_folder as of

from helpers import preprocess_cli, run_command, run_pipeline, tone, write_audio

CRASH_AT_STEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_at_step.py")
SMALL = ["--chunk_seconds=0.2", "--context_samples=200"]


def songs(folder, names, seconds=1.0):
    for i, name in enumerate(names):
        write_audio(folder / name, tone(seconds, 16000, freq=200 + 70 * i, seed=i), 16000)
    return folder


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, folder)] = open(p, "rb").read()
    return out


def dataset_ids(out) -> set:
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(out))
    return {ex["song_id"].decode() for split in builder.info.splits
            for ex in tfds.as_numpy(builder.as_dataset(split=split))}


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    old = songs(root / "old", ["a.wav", "b.wav", "c.wav"])
    new = songs(root / "new", ["x.wav", "y.wav"])
    return old, new


def test_a_folder_that_is_not_a_dataset_is_refused_even_with_overwrite(two_corpora, tmp_path,
                                                                       caplog):
    old, _ = two_corpora
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "summary.json").write_text('{"mine": true}')  # a name wavegen also writes
    before = snapshot(mine)
    for extra in ([], ["--overwrite"]):
        with caplog.at_level("ERROR"):
            assert run_pipeline(f"--input={old}", f"--output_dir={mine}", *SMALL, *extra) == 2
        assert snapshot(mine) == before
    assert "thesis.tex" in caplog.text and "not a wavegen dataset" in caplog.text


def test_common_names_alone_do_not_make_a_folder_wavegens(tmp_path):
    """A user's metadata.json, summary.json and .staging-<hex> folder are not a dataset's."""
    mine = tmp_path / "mine"
    (mine / ".staging-cafe").mkdir(parents=True)
    (mine / ".staging-cafe" / "precious.txt").write_text("keep me")
    (mine / "metadata.json").write_text('{"author": "me"}')
    (mine / "summary.json").write_text('{"mine": true}')
    (mine / ".wavegen-staging-0123456789ab").mkdir()  # our name, but no marker in it
    (mine / ".wavegen-staging-0123456789ab" / "notes.txt").write_text("mine too")
    before = snapshot(mine)
    for overwrite in (False, True):
        with pytest.raises(of.OutputError, match="not a wavegen dataset"):
            of.check_output_dir(str(mine), overwrite=overwrite)
    assert of.old_dataset_files(str(mine)) == []
    assert of.stale_scratch(str(mine)) == []
    of.remove_scratch(str(mine / ".wavegen-staging-0123456789ab"))
    assert snapshot(mine) == before


def test_a_run_that_writes_no_song_does_not_clobber_a_users_reports(tmp_path, caplog):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "broken.wav").write_bytes(b"not audio at all")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text('{"mine": true}')
    (mine / "failed.jsonl").write_text('{"my": "log"}\n')
    before = snapshot(mine)
    with caplog.at_level("ERROR"):
        assert run_pipeline(f"--input={bad}", f"--output_dir={mine}", *SMALL) == 2
    assert snapshot(mine) == before and "not a wavegen dataset" in caplog.text


def test_only_marked_scratch_folders_of_a_wavegen_folder_are_removed(two_corpora, tmp_path):
    old, _ = two_corpora
    out = tmp_path / "ds"
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", *SMALL) == 0
    stale = of.make_scratch(str(out))  # as a killed run leaves it
    (out / ".wavegen-staging-00000000abcd").mkdir()  # our name shape, no marker: not ours
    (out / ".staging-cafe").mkdir()
    assert of.stale_scratch(str(out)) == [stale]
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", "--overwrite", *SMALL) == 0
    assert not os.path.exists(stale)
    assert (out / ".wavegen-staging-00000000abcd").is_dir() and (out / ".staging-cafe").is_dir()


def test_overwrite_replaces_only_the_datasets_files_by_exact_name(two_corpora, tmp_path):
    old, new = two_corpora
    out = tmp_path / "ds"
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", "--split=train:1",
                        "--num_shards=3", *SMALL) == 0
    (out / "wavegen-notes.txt").write_text("my notes")  # shaped like ours, but not ours
    (out / "README.md").write_text("what this dataset is")
    assert run_pipeline(f"--input={new}", f"--output_dir={out}", "--split=train:1",
                        "--num_shards=1", "--overwrite", *SMALL) == 0
    assert (out / "wavegen-notes.txt").read_text() == "my notes"
    assert (out / "README.md").read_text() == "what this dataset is"
    shards = sorted(n for n in os.listdir(out) if ".tfrecord-" in n)
    assert shards == ["wavegen-train.tfrecord-00000-of-00001"]  # the old three are gone
    assert dataset_ids(out) == {"x.wav", "y.wav"}
    assert not [n for n in os.listdir(out) if n.startswith((of.STAGING_PREFIX, of.BACKUP_PREFIX))]


@pytest.mark.parametrize("where", ["/", "~"])
def test_roots_and_home_are_refused(two_corpora, tmp_path, monkeypatch, caplog, where):
    old, _ = two_corpora
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    target = str(home) if where == "~" else where
    with caplog.at_level("ERROR"):
        assert run_pipeline(f"--input={old}", f"--output_dir={target}", "--overwrite",
                            *SMALL) == 2
    assert os.listdir(cwd) == [] and os.listdir(home) == []
    assert ("filesystem root" if where == "/" else "home folder") in caplog.text


def test_bad_output_paths_are_one_line_each(two_corpora, tmp_path, monkeypatch):
    old, _ = two_corpora
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(of.OutputError, match="a file, not a folder"):
        of.check_output_dir(str(a_file), overwrite=True)
    with pytest.raises(of.OutputError, match="is a file, not a folder"):
        of.check_output_dir(str(a_file / "below"), overwrite=True)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(of.OutputError, match="not writable") as info:
        of.check_output_dir(str(tmp_path / "new"), overwrite=False)
    assert "\n" not in str(info.value)


def test_a_second_run_into_a_locked_folder_is_refused(two_corpora, tmp_path, caplog):
    old, _ = two_corpora
    out = tmp_path / "ds"
    with of.locked(str(out)):
        of.mark_output_dir(str(out))
        busy = of.make_scratch(str(out))  # the first run's work in progress
        with caplog.at_level("ERROR"):
            assert run_pipeline(f"--input={old}", f"--output_dir={out}", *SMALL) == 2
        assert os.path.isdir(busy)  # not taken for a stale one
    assert f"pid {os.getpid()}" in caplog.text and "another wavegen run" in caplog.text
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", *SMALL) == 0  # free again


def test_a_dataset_written_while_this_run_planned_is_not_replaced_without_overwrite(
        two_corpora, tmp_path, monkeypatch, caplog):
    """The folder is checked again under the lock: another run may have finished a dataset
    there between the early check and the lock (planning can take minutes)."""
    from beam_pipelines import preprocess

    old, new = two_corpora
    theirs = tmp_path / "theirs"
    assert run_pipeline(f"--input={old}", f"--output_dir={theirs}", *SMALL) == 0
    out = tmp_path / "ds"
    make_plan = preprocess.make_plan

    def plan_while_another_run_writes(args):
        plan = make_plan(args)
        shutil.copytree(theirs, out)  # the other run, done meanwhile
        return plan

    monkeypatch.setattr(preprocess, "make_plan", plan_while_another_run_writes)
    with caplog.at_level("ERROR"):
        assert run_pipeline(f"--input={new}", f"--output_dir={out}", *SMALL) == 2
    assert "already holds a dataset" in caplog.text
    assert dataset_ids(out) == {"a.wav", "b.wav", "c.wav"}


# --------------------------------------------------------------------------------------
# Crashes while the dataset is put in place


class Crash(BaseException):
    """Stands for a kill: nothing catches it (the replacement has no clean-up handlers)."""


def _crash_at(k: int):
    """An `after_step` hook that stops a replacement at its k-th step."""
    def hook(done: int) -> None:
        if done == k:
            raise Crash()
    return hook


@pytest.fixture(scope="module")
def half_replaced(two_corpora, tmp_path_factory):
    """An old dataset, and a run with a new one stopped right after writing its journal:
    the state every later step starts from."""
    old, new = two_corpora
    out = tmp_path_factory.mktemp("crash") / "ds"
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", "--split=train:1",
                        *SMALL) == 0
    old_files = snapshot(out)
    mp = pytest.MonkeyPatch()
    mp.setattr(of, "after_step", _crash_at(1))
    try:
        with pytest.raises(Crash):
            run_pipeline(f"--input={new}", f"--output_dir={out}", "--split=train:1",
                         "--num_shards=2", "--overwrite", *SMALL)
    finally:
        mp.undo()
    journal = json.loads((out / of.JOURNAL).read_text())
    staging = out / journal["staging"]
    new_files = {n: (staging / n).read_bytes() for n in journal["new"]}
    return out, journal, old_files, new_files


def _steps(journal) -> int:
    return len(journal["old"]) + len(journal["new"]) + 3  # + phase, journal, backup


def test_a_crash_at_any_step_keeps_both_datasets_and_recovery_finishes(half_replaced,
                                                                      tmp_path, monkeypatch):
    src, journal, old_files, new_files = half_replaced
    assert set(journal["old"]) == {n for n in old_files if "/" not in n and n not in (of.LOCK_FILE, of.MARKER)}
    for k in range(1, _steps(journal) + 1):
        out = tmp_path / f"k{k}"
        shutil.copytree(src, out, symlinks=True)
        monkeypatch.setattr(of, "after_step", _crash_at(k))
        with pytest.raises(Crash):
            of._roll_forward(str(out), journal, of._Steps())
        # Nothing lost: every old file is in place or in the backup, every new one in
        # place or in the staging folder (or the replacement is done).
        now = snapshot(out)
        done = of.JOURNAL not in now
        for name, data in old_files.items():
            if name in journal["old"] and not done:
                assert data in (now.get(name), now.get(f"{journal['backup']}/{name}")), (k, name)
        for name, data in new_files.items():
            assert data in (now.get(name), now.get(f"{journal['staging']}/{name}")), (k, name)
        if of.INFO_FILE in now and not done and journal["phase"] == "backup":
            assert dataset_ids(out) in ({"a.wav", "b.wav", "c.wav"}, {"x.wav", "y.wav"})
        message = of.recover(str(out))
        assert bool(message) == (not done)
        assert dataset_ids(out) == {"x.wav", "y.wav"}, k
        assert {n: now_data for n, now_data in snapshot(out).items()
                if n in new_files} == new_files


def test_recovery_puts_the_old_dataset_back_when_the_new_one_is_gone(half_replaced, tmp_path,
                                                                     monkeypatch):
    src, journal, old_files, _ = half_replaced
    out = tmp_path / "ds"
    shutil.copytree(src, out, symlinks=True)
    monkeypatch.setattr(of, "after_step", _crash_at(len(journal["old"]) + 3))  # 2 new in
    with pytest.raises(Crash):
        of._roll_forward(str(out), journal, of._Steps())
    shutil.rmtree(out / journal["staging"])  # e.g. removed by hand
    assert "put back" in of.recover(str(out))
    assert dataset_ids(out) == {"a.wav", "b.wav", "c.wav"}
    now = snapshot(out)
    assert {n: now[n] for n in journal["old"]} == {n: old_files[n] for n in journal["old"]}


@pytest.mark.slow
def test_a_killed_process_leaves_a_folder_the_next_run_completes(two_corpora, tmp_path):
    """A real kill (os._exit) after the old dataset moved out, before the new one is in."""
    old, new = two_corpora
    out = tmp_path / "ds"
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", "--split=train:1",
                        *SMALL) == 0
    n_old = len(of.old_dataset_files(str(out)))
    args = [f"--input={new}", f"--output_dir={out}", "--split=train:1", "--overwrite", *SMALL,
            "--direct_num_workers=1", "--direct_running_mode=in_memory"]
    crash_at = str(n_old + 2)  # journal, old files, phase
    res = run_command([sys.executable, CRASH_AT_STEP, crash_at, *args], timeout=300)
    assert res.returncode == 70, res.stderr[-2000:]
    assert not (out / of.INFO_FILE).exists() and (out / of.JOURNAL).exists()
    # The same command again: it finishes the interrupted replacement, then refuses to
    # replace the dataset now in place without --overwrite.
    again = preprocess_cli(*(args[:-5] + args[-4:]), timeout=300)
    assert again.returncode == 2, again.stderr[-2000:]
    assert "finished putting in place" in again.stderr and "already holds" in again.stderr
    assert dataset_ids(out) == {"x.wav", "y.wav"}


# --------------------------------------------------------------------------------------
# Errors while the dataset is put in place: one line, exit 1, nothing lost


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_song_the_pipeline_lost_is_one_line_and_exit_1(two_corpora, tmp_path, monkeypatch,
                                                         caplog):
    from beam_pipelines import preprocess

    old, _ = two_corpora
    read = preprocess._read_jsonl
    monkeypatch.setattr(preprocess, "_read_jsonl",
                        lambda p: read(p)[1:] if p.endswith("songs.jsonl") else read(p))
    with caplog.at_level("ERROR"):
        assert run_pipeline(f"--input={old}", f"--output_dir={tmp_path / 'ds'}", *SMALL) == 1
    [line] = _errors(caplog)
    assert "lost track of 1 song" in line and "\n" not in line and "next run" not in line


def test_disk_full_mid_replacement_is_one_line_and_the_next_run_finishes(two_corpora, tmp_path,
                                                                         monkeypatch, caplog):
    old, new = two_corpora
    out = tmp_path / "ds"
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", *SMALL) == 0

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(of, "_rename", full)
    with caplog.at_level("ERROR"):
        assert run_pipeline(f"--input={new}", f"--output_dir={out}", "--overwrite",
                            *SMALL) == 1
    [line] = _errors(caplog)
    assert "No space left on device" in line and "next run" in line and "\n" not in line
    monkeypatch.undo()
    assert "finished putting in place" in of.recover(str(out))
    assert dataset_ids(out) == {"x.wav", "y.wav"}


def test_an_unwritable_report_is_one_line_and_the_old_dataset_stays(two_corpora, tmp_path,
                                                                    monkeypatch, caplog):
    from beam_pipelines import preprocess

    old, new = two_corpora
    out = tmp_path / "ds"
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", *SMALL) == 0

    def denied(path, text):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(preprocess, "_write_text", denied)
    with caplog.at_level("ERROR"):
        assert run_pipeline(f"--input={new}", f"--output_dir={out}", "--overwrite",
                            *SMALL) == 1
    [line] = _errors(caplog)
    assert "Permission denied" in line and "next run" not in line
    assert dataset_ids(out) == {"a.wav", "b.wav", "c.wav"}


def test_no_environment_variable_can_stop_a_real_replacement(tmp_path):
    """The crash hook of the tests is a function they replace, not something a stray
    environment variable (the old WAVEGEN_CRASH_AT_STEP) switches on in real runs."""
    out = tmp_path / "ds"
    staging = out / ".wavegen-staging-0123456789ab"
    staging.mkdir(parents=True)
    (out / "metadata.json").write_text('{"wavegen_metadata_version": 1}')
    (staging / of.INFO_FILE).write_text("{}")
    code = ("import sys; from beam_pipelines import output_folder as of; "
            "of.replace_dataset(sys.argv[1], sys.argv[2], [of.INFO_FILE])")
    res = run_command([sys.executable, "-c", code, out, staging],
                      env={"WAVEGEN_CRASH_AT_STEP": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / of.INFO_FILE).read_text() == "{}" and not (out / of.JOURNAL).exists()


def test_a_run_killed_in_a_new_folder_does_not_lock_the_next_one_out(two_corpora, tmp_path):
    """A killed run leaves only its lock and marked staging folder: the next run removes
    the staging folder and writes its dataset."""
    old, _ = two_corpora
    out = tmp_path / "ds"
    with of.locked(str(out)):
        stale = of.make_scratch(str(out))
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", *SMALL) == 0
    assert not os.path.exists(stale) and dataset_ids(out) == {"a.wav", "b.wav", "c.wav"}


# --------------------------------------------------------------------------------------
# Files read from the output folder name nothing outside it


@pytest.fixture(scope="module")
def a_dataset(two_corpora, tmp_path_factory):
    old, _ = two_corpora
    out = tmp_path_factory.mktemp("journal") / "ds"
    assert run_pipeline(f"--input={old}", f"--output_dir={out}", "--split=train:1",
                        *SMALL) == 0
    return out


GOOD = {"staging": ".wavegen-staging-000000000000", "backup": ".wavegen-old-000000000000",
        "old": [], "new": [], "phase": "install"}
FORGED = {
    "backup outside (a case that once deleted it)": dict(GOOD, backup="../../victim"),
    "staging outside": dict(GOOD, staging="../victim"),
    "backup absolute": dict(GOOD, backup="VICTIM"),
    "backup with the prefix, then a path": dict(GOOD, backup=".wavegen-old-000000000000/../../victim"),
    "old names a path": dict(GOOD, old=["../victim/precious.txt"]),
    "new names a user file": dict(GOOD, new=["thesis.tex"]),
    "old names a sub-path": dict(GOOD, old=["sub/dataset_info.json"]),
    "a key missing": {k: v for k, v in GOOD.items() if k != "phase"},
    "an unknown phase": dict(GOOD, phase="delete"),
    "a list": [GOOD],
    "not JSON": "{staging: nope",
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_journal_is_refused_in_one_line_and_nothing_moves(two_corpora, a_dataset,
                                                                   tmp_path, caplog, case):
    """Such a journal once made `--overwrite` rmtree a folder outside the output."""
    _, new = two_corpora
    root = tmp_path / "a" / "b"
    out = root / "ds"
    shutil.copytree(a_dataset, out)
    victim = tmp_path / "a" / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("years of work")
    (victim / of.SCRATCH_MARKER).write_text("even with a marker")
    journal = FORGED[case]
    if isinstance(journal, dict):
        journal = {k: (str(victim) if v == "VICTIM" else v) for k, v in journal.items()}
    text = journal if isinstance(journal, str) else json.dumps(journal)
    (out / of.JOURNAL).write_text(text)
    before, victim_before = snapshot(out), snapshot(victim)
    with caplog.at_level("ERROR"):
        code = run_pipeline(f"--input={new}", f"--output_dir={out}",
                            "--overwrite", *SMALL)
    assert code == 2
    assert snapshot(victim) == victim_before and snapshot(out) == before
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert of.JOURNAL in errors[0] and "nothing was moved" in errors[0]


def test_a_journal_whose_backup_is_a_link_to_a_marked_folder_elsewhere_is_refused(
        a_dataset, tmp_path):
    out = tmp_path / "ds"
    shutil.copytree(a_dataset, out)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("years of work")
    (victim / of.SCRATCH_MARKER).write_text("")
    os.symlink(victim, out / GOOD["backup"])
    (out / of.JOURNAL).write_text(json.dumps(GOOD))
    with pytest.raises(of.OutputError, match="backup folder"):
        of.recover(str(out))
    assert (victim / "precious.txt").read_text() == "years of work"
    # Nor is such a link taken for a killed run's scratch folder.
    (out / of.JOURNAL).unlink()
    assert of.stale_scratch(str(out)) == []


def test_a_dangling_link_as_output_dir_is_one_line(two_corpora, tmp_path, caplog):
    old, _ = two_corpora
    link = tmp_path / "out"
    os.symlink(tmp_path / "gone" / "ds", link)
    with caplog.at_level("ERROR"):
        assert run_pipeline(f"--input={old}", f"--output_dir={link}", *SMALL) == 2
    assert "does not exist" in caplog.text and str(tmp_path / "gone") in caplog.text
    assert not (tmp_path / "gone").exists()
