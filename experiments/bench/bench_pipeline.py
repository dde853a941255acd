"""Benchmark of the preprocessing pipeline: marginal cost per song and streaming memory.

    .venv/bin/python -m experiments.bench.bench_pipeline [--quick] [--json PATH]

1. Marginal cost per song on a single worker: the pipeline command (local runner, one
   worker process) on 250 and on 50 copies of 30 s 44.1 kHz stereo mp3s;
   (t250 - t50) / 200 leaves start-up out. Against it, the bare floor: decode + mixdown +
   resample + quantize of the same songs in one plain Python loop, in this process.
2. Memory: peak RSS of the whole process tree (launcher + workers) for one 1-hour
   44.1 kHz stereo WAV (635 MB of PCM) against one 30 s clip.
3. Sources: songs/s for the same 200 songs as files in a folder, as members of an
   FMA-shaped zip archive (1 and 2 workers), and as a URL list served over loopback HTTP
   (1 and 2 workers); the zip/folder ratio of marginal cost per song (40 vs 200 songs).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import numpy as np
import soundfile as sf

from experiments.bench.results import write_json
from wavegen.data import audio

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def music(seconds: float, sr: int, seed: int) -> np.ndarray:
    """Stereo music from wavegen's synthesizer (styles in turn), so mp3 encodes it as such."""
    from wavegen.data import synth

    styles = sorted(synth.STYLES)
    return synth.render_song(styles[seed % len(styles)], seconds, sr, seed)


def make_mp3s(folder: str, n: int, distinct: int = 10, seconds: float = 30.0) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    originals = []
    for i in range(min(n, distinct)):
        p = os.path.join(folder, f"orig_{i:03d}.mp3")
        sf.write(p, music(seconds, 44100, i), 44100, format="MP3")
        originals.append(p)
    paths = list(originals)
    for i in range(len(originals), n):
        p = os.path.join(folder, f"copy_{i:03d}.mp3")
        shutil.copy(originals[i % len(originals)], p)
        paths.append(p)
    return paths


def bare_floor(paths: list[str]) -> float:
    """Seconds per song for decode + mixdown + resample + quantize, one plain loop, at the
    pipeline's own default rate and bits."""
    from beam_pipelines.ingest.song_chunks import ChunkingConfig

    sample_rate, bits = ChunkingConfig.sample_rate, ChunkingConfig.bits
    t0 = time.perf_counter()
    for p in paths:
        with sf.SoundFile(p) as f:
            rs = audio.StreamResampler(f.samplerate, sample_rate)
            for block in f.blocks(blocksize=audio.DEFAULT_BLOCK_FRAMES, dtype="float32",
                                  always_2d=True):
                audio.mulaw_encode(rs.process(block.mean(axis=1)), bits)
            audio.mulaw_encode(rs.flush(), bits)
    return (time.perf_counter() - t0) / len(paths)


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, in kB."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_pipeline(inputs: list[str], out: str, workers: int = 1) -> tuple[float, float]:
    """Runs the pipeline command; returns (wall seconds, peak tree RSS in MB)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "beam_pipelines.preprocess", *[f"--input={i}" for i in inputs],
           f"--output_dir={out}", f"--direct_num_workers={workers}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_kb(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, peak / 1024


def bench_cost(work: str, n_small: int, n_large: int) -> dict:
    paths = make_mp3s(os.path.join(work, "mp3"), n_large)
    small = os.path.join(work, "small")
    os.makedirs(small, exist_ok=True)
    for p in paths[:n_small]:
        os.link(p, os.path.join(small, os.path.basename(p)))
    t_small, _ = run_pipeline([small], os.path.join(work, "out_small"))
    t_large, _ = run_pipeline([os.path.join(work, "mp3")], os.path.join(work, "out_large"))
    marginal = (t_large - t_small) / (n_large - n_small)
    floor = bare_floor(paths)
    return {"songs_small": n_small, "songs_large": n_large, "wall_small_s": round(t_small, 2),
            "wall_large_s": round(t_large, 2), "marginal_s_per_song": round(marginal, 4),
            "floor_s_per_song": round(floor, 4), "ratio_to_floor": round(marginal / floor, 2)}


def bench_memory(work: str, hours: float) -> dict:
    sr = 44100
    clip = os.path.join(work, "clip", "clip.wav")
    long = os.path.join(work, "long", "long.wav")
    os.makedirs(os.path.dirname(clip), exist_ok=True)
    os.makedirs(os.path.dirname(long), exist_ok=True)
    block = music(30.0, sr, 1)
    sf.write(clip, block, sr, subtype="PCM_16")
    with sf.SoundFile(long, "w", sr, 2, subtype="PCM_16") as f:
        for _ in range(int(hours * 120)):
            f.write(block)
    _, rss_clip = run_pipeline([clip], os.path.join(work, "out_clip"))
    wall, rss_long = run_pipeline([long], os.path.join(work, "out_long"))
    return {"long_pcm_mb": round(os.path.getsize(long) / 1e6), "long_hours": hours,
            "peak_rss_clip_mb": round(rss_clip), "peak_rss_long_mb": round(rss_long),
            "rss_growth_mb": round(rss_long - rss_clip), "long_wall_s": round(wall, 1)}


def make_fma_zip(path: str, mp3s: list[str]) -> str:
    """An FMA-shaped archive of the mp3s: fma_small/ddd/dddddd.mp3, deflated."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fma_small/README.txt", "benchmark archive\n")
        for i, p in enumerate(mp3s):
            tid = f"{i + 2:06d}"
            zf.write(p, f"fma_small/{tid[:3]}/{tid}.mp3")
    return path


@contextlib.contextmanager
def http_server(folder: str):
    handler = functools.partial(_QuietHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def bench_sources(work: str, n_small: int, n_large: int) -> dict:
    mp3s = make_mp3s(os.path.join(work, "mp3"), n_large)
    layouts = {}
    for n in (n_small, n_large):
        folder = os.path.join(work, f"folder{n}")
        os.makedirs(folder, exist_ok=True)
        for p in mp3s[:n]:
            os.link(p, os.path.join(folder, os.path.basename(p)))
        archive = make_fma_zip(os.path.join(work, f"fma_small_{n}.zip"), mp3s[:n])
        layouts[n] = (folder, archive)
    res = {}
    with http_server(os.path.join(work, "mp3")) as base:
        for n in (n_small, n_large):
            urls = os.path.join(work, f"songs{n}.urls")
            with open(urls, "w") as f:
                f.writelines(f"{base}/{os.path.basename(p)}\n" for p in mp3s[:n])
            folder, archive = layouts[n]
            for name, inp, workers in (("folder", folder, 1), ("zip", archive, 1),
                                       ("zip", archive, 2), ("http", urls, 1),
                                       ("http", urls, 2)):
                wall, _ = run_pipeline([inp], os.path.join(work, "out_src"), workers)
                res.setdefault(f"{name}_{workers}w", {})[n] = wall
    table = {}
    for key, walls in res.items():
        table[key] = {"songs_per_s": round(n_large / walls[n_large], 2),
                      "wall_s": round(walls[n_large], 2),
                      "marginal_ms_per_song": round(
                          1000 * (walls[n_large] - walls[n_small]) / (n_large - n_small), 1)}
    table["zip_over_folder"] = round(table["zip_1w"]["marginal_ms_per_song"]
                                     / table["folder_1w"]["marginal_ms_per_song"], 2)
    table["songs"] = n_large
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer songs, a shorter long file")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--work", help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="wavegen-bench-")
    try:
        n_small, n_large, hours = (10, 40, 0.1) if args.quick else (50, 250, 1.0)
        res = {"cost": bench_cost(work, n_small, n_large),
               "memory": bench_memory(work, hours),
               "sources": bench_sources(work, *((10, 40) if args.quick else (40, 200)))}
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    c, m = res["cost"], res["memory"]
    print(f"pipeline, 30 s 44.1 kHz stereo mp3, 1 worker: {c['marginal_s_per_song'] * 1000:.1f} "
          f"ms/song marginal ({c['songs_large']} vs {c['songs_small']} songs), bare floor "
          f"{c['floor_s_per_song'] * 1000:.1f} ms/song, ratio {c['ratio_to_floor']:.2f}x")
    print(f"memory: peak RSS {m['peak_rss_long_mb']} MB for {m['long_hours']} h "
          f"({m['long_pcm_mb']} MB PCM) vs {m['peak_rss_clip_mb']} MB for a 30 s clip: "
          f"+{m['rss_growth_mb']} MB")
    src = res["sources"]
    for key in ("folder_1w", "zip_1w", "zip_2w", "http_1w", "http_2w"):
        r = src[key]
        print(f"sources, {src['songs']} songs, {key}: {r['songs_per_s']:.1f} songs/s "
              f"({r['wall_s']:.1f} s wall, {r['marginal_ms_per_song']:.1f} ms/song marginal)")
    print(f"zip / folder marginal cost: {src['zip_over_folder']:.2f}x")
    write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
