"""Fuzzing the whole pipeline: random bytes, truncated and bit-flipped real
files of every format, random zip members and random URL-list lines, in one run. Whatever
they are, every input is accounted for (written, or dead-lettered with a known reason), no
traceback escapes, and nothing outside the output folder changes.

The seed is random per run and printed in every failure message; set WAVEGEN_FUZZ_SEED to
replay one."""

import io
import json
import os
import random
import socket
import zipfile

import pytest
import soundfile as sf

from beam_pipelines.ingest import song_chunks as sc

from helpers import FORMATS, preprocess_cli, tone
from songserver import serve

SEED = int(os.environ.get("WAVEGEN_FUZZ_SEED", random.SystemRandom().randrange(2**31)))


def _real_files(rng) -> dict[str, bytes]:
    """One real file of every supported format (and a float WAV, whose flipped exponent
    bits give NaN and infinity)."""
    out = {}
    for ext, (fmt, subtype) in sorted(FORMATS.items()):
        buf = io.BytesIO()
        sf.write(buf, tone(1.0, 16000, freq=rng.uniform(100, 2000), channels=2,
                           seed=rng.randrange(1000)), 16000, format=fmt, subtype=subtype)
        out[ext] = buf.getvalue()
    buf = io.BytesIO()
    sf.write(buf, tone(1.0, 16000), 16000, format="WAV", subtype="FLOAT")
    out[".float.wav"] = buf.getvalue()
    return out


def _mutate(rng, data: bytes) -> bytes:
    """Truncated, bit-flipped (anywhere, headers included) or both."""
    kind = rng.choice(["truncate", "flip", "both", "flip_header"])
    data = bytearray(data)
    if kind in ("flip", "both", "flip_header"):
        span = min(len(data), 64) if kind == "flip_header" else len(data)
        for _ in range(rng.randint(1, 40)):
            i = rng.randrange(span)
            data[i] ^= 1 << rng.randrange(8)
    if kind in ("truncate", "both"):
        data = data[:rng.randrange(len(data))]
    return bytes(data)


def _url_lines(rng, base: str, closed: str) -> list[bytes]:
    """Random URL-list lines: good, missing, refused, malformed, junk, not UTF-8."""
    junk = "abcdefXYZ0123456789:/.?=&%$<>!'\"~é中\x01"
    kinds = {
        "ok": lambda i: f"{base}/ok.wav?{i}",
        "missing": lambda i: f"{base}/missing{i}.mp3",
        "refused": lambda i: f"{closed}/r{i}.mp3",
        "scheme": lambda i: f"{rng.choice(['ftp', 'file', 'gopher', 'data'])}://x/{i}.mp3",
        "fields": lambda i: f"{base}/a{i}.mp3 {'f' * 64} extra",
        "badsha": lambda i: f"{base}/b{i}.mp3 "
                            + "".join(rng.choice("0123456789xyz") for _ in range(64)),
        "junk": lambda i: f"{i}" + "".join(rng.choice(junk)
                                           for _ in range(rng.randint(1, 30))),
    }
    lines = []
    for i in range(rng.randint(6, 10)):
        kind = rng.choice(sorted(kinds) + ["bytes"])
        if kind == "bytes":  # not UTF-8
            lines.append(f"http://h/{i}".encode() + bytes(rng.randrange(128, 256)
                                                          for _ in range(5)))
        else:
            lines.append(kinds[kind](i).encode("utf-8"))
    return lines


def _corpus(root, rng, base: str, closed: str):
    """Writes the fuzz inputs; returns (inputs, song ids of files and members, URL count)."""
    real = _real_files(rng)
    files = root / "files"
    files.mkdir()
    ids = set()
    for i in range(rng.randint(10, 16)):
        ext = rng.choice(sorted(real))
        kind = rng.choice(["random", "mutated", "mutated", "real"])
        name = f"f{i}{ext if ext != '.float.wav' else '.wav'}"
        data = (rng.randbytes(rng.randrange(0, 5000)) if kind == "random"
                else _mutate(rng, real[ext]) if kind == "mutated" else real[ext])
        (files / name).write_bytes(data)
        ids.add(name)
    members = {}
    for i in range(rng.randint(4, 8)):
        ext = rng.choice(sorted(real) + [".zip"])
        name = f"z/m{i}{'.wav' if ext == '.float.wav' else ext}"
        members[name] = (rng.randbytes(rng.randrange(0, 3000)) if ext == ".zip"
                         or rng.random() < 0.3 else _mutate(rng, real[ext]))
    archive = root / "fuzz.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data, compress_type=rng.choice([zipfile.ZIP_STORED,
                                                              zipfile.ZIP_DEFLATED]))
        zf.writestr("z/notes.txt", b"not a song")
    ids |= set(members)
    urls = root / "fuzz.urls"
    lines = _url_lines(rng, base, closed)
    urls.write_bytes(b"# fuzz\n" + b"\n".join(lines) + b"\n")
    return [str(files), str(archive), str(urls)], ids, len(lines)


def _tree(folder) -> dict:
    out = {}
    for root, dirs, files in os.walk(folder):
        for f in dirs + files:
            p = os.path.join(root, f)
            out[p] = open(p, "rb").read() if os.path.isfile(p) else None
    return out


@pytest.mark.slow
@pytest.mark.parametrize("round_", [0, 1])
def test_fuzzed_inputs_are_all_accounted_for(tmp_path, round_):
    seed = SEED + round_
    rng = random.Random(seed)
    where = f"(WAVEGEN_FUZZ_SEED={seed})"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    good = io.BytesIO()
    sf.write(good, tone(1.0, 16000), 16000, format="WAV", subtype="PCM_16")
    with serve({"/ok.wav": good.getvalue()}) as base:
        inputs, ids, n_urls = _corpus(tmp_path, rng, base, closed)
        before = _tree(tmp_path)
        out = tmp_path / "out" / "ds"
        res = preprocess_cli(
            *[f"--input={i}" for i in inputs], f"--output_dir={out}", "--split=train:1",
            "--chunk_seconds=0.1", "--context_samples=100", "--fetch_attempts=1",
            "--fetch_timeout=2", "--fetch_deadline=10", "--direct_num_workers=1",
            "--direct_running_mode=in_memory", timeout=300)
    assert res.returncode in (0, 1), f"{where}\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, f"{where}\n{res.stderr[-3000:]}"
    after = _tree(tmp_path)
    outside = {p for p in set(before) | set(after)
               if not p.startswith(str(tmp_path / "out")) and before.get(p) != after.get(p)}
    assert not outside, f"{where} changed outside the output folder: {sorted(outside)[:5]}"
    summary = json.loads((out / "summary.json").read_text())
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert summary["songs_in"] == len(ids) + n_urls, where
    assert summary["songs_in"] == summary["songs_written"] + summary["songs_failed"], where
    assert len(failed) == summary["songs_failed"], where
    seen = {r["song_id"] for r in failed}
    for r in failed:
        assert r["reason"] in sc.REASONS and r["reason"] != sc.INTERNAL_ERROR, (where, r)
        assert r["detail"] and "\n" not in r["detail"], (where, r)
    if summary["songs_written"]:
        import tensorflow_datasets as tfds

        builder = tfds.builder_from_directory(str(out))
        seen |= {e["song_id"].decode() for e in tfds.as_numpy(builder.as_dataset("train"))}
    assert ids <= seen, f"{where} unaccounted: {sorted(ids - seen)[:5]}"
    assert len(seen) == summary["songs_in"], where


# --------------------------------------------------------------------------------------
# Journals and markers with random contents


def _random_json(rng, victim: str, depth: int = 0):
    """A random JSON value, biased towards what could steer a replacement: paths out of
    the folder, names wavegen writes, scratch names, and junk."""
    strings = ["../victim", "../../victim", victim, victim + "/precious.txt", "",
               ".wavegen-staging-000000000000", ".wavegen-old-000000000000",
               ".wavegen-old-000000000000/../../victim", "dataset_info.json",
               "metadata.json", "summary.json", "notes.txt", "wavegen-train.tfrecord-00000-of-00001",
               "/", ".", "..", "backup", "install", "é中\x00", "a/b"]
    kind = rng.choice(["str", "str", "list", "dict", "num", "none", "bool"]
                      if depth < 2 else ["str", "num"])
    if kind == "str":
        return rng.choice(strings)
    if kind == "list":
        return [_random_json(rng, victim, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "dict":
        return {rng.choice(["staging", "backup", "old", "new", "phase", "x"]):
                _random_json(rng, victim, depth + 1) for _ in range(rng.randint(0, 5))}
    return {"num": rng.uniform(-1e9, 1e9), "none": None, "bool": rng.random() < 0.5}[kind]


def _random_journal(rng, victim: str):
    journal = {"staging": ".wavegen-staging-000000000000", "backup": ".wavegen-old-000000000000",
               "old": ["dataset_info.json", "metadata.json"], "new": ["metadata.json"],
               "phase": rng.choice(["backup", "install"])}
    for key in rng.sample(sorted(journal), rng.randint(0, 5)):
        if rng.random() < 0.2:
            del journal[key]
        else:
            journal[key] = _random_json(rng, victim)
    if rng.random() < 0.2:
        return _random_json(rng, victim)
    return journal


def test_random_journals_and_markers_never_reach_outside_the_folder(tmp_path):
    from beam_pipelines import output_folder as of

    rng = random.Random(SEED)
    where = f"(WAVEGEN_FUZZ_SEED={SEED})"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("years of work")
    (victim / of.SCRATCH_MARKER).write_text("")
    (victim / "metadata.json").write_text('{"wavegen_metadata_version": 1}')
    victim_before = _tree(victim)
    for i in range(150):
        out = tmp_path / f"o{i}" / "ds"
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("not wavegen's")
        (out / "metadata.json").write_text('{"wavegen_metadata_version": 1}')
        (out / "dataset_info.json").write_text('{"splits": []}')
        for name in (of.JOURNAL, of.MARKER):
            if rng.random() < 0.8:
                value = (_random_journal(rng, str(victim)) if name == of.JOURNAL
                         else _random_json(rng, str(victim)))
                text = json.dumps(value) if rng.random() < 0.9 else rng.choice(
                    ["{", "\xff", "", "null"])
                (out / name).write_text(text, encoding="utf-8", errors="surrogateescape")
        for folder in (".wavegen-staging-000000000000", ".wavegen-old-000000000000",
                       ".wavegen-old-0123456789ab"):
            kind = rng.choice(["none", "marked", "unmarked", "link"])
            if kind == "link":
                os.symlink(victim, out / folder)
            elif kind != "none":
                (out / folder).mkdir()
                (out / folder / "metadata.json").write_text("{}")
                if kind == "marked":
                    (out / folder / of.SCRATCH_MARKER).write_text("")
        journal_text = (out / of.JOURNAL).read_bytes() if (out / of.JOURNAL).exists() else None
        try:  # what a run does under its lock before any work
            of.recover(str(out))
            of.check_output_dir(str(out), overwrite=True)
            for stale in of.stale_scratch(str(out)):
                of.remove_scratch(stale)
        except of.OutputError as e:
            assert "\n" not in str(e), (where, i, str(e))
            if (out / of.JOURNAL).exists():  # refused: the journal is left as it was
                assert (out / of.JOURNAL).read_bytes() == journal_text, (where, i)
        assert _tree(victim) == victim_before, f"{where} round {i} touched a folder outside"
        assert (out / "notes.txt").read_text() == "not wavegen's", (where, i)
