"""`make demo`: the whole system on an embedded default, end to end, rerunnable.

    .venv/bin/python -m experiments.demo [--dir demo] [--songs PATH --metadata PATH]
        [--minutes 14] [--steps N]

1. the embedded corpus (`experiments.demo_corpus`: three synthesized styles as genre
   folders, mp3 and wav, plus one corrupt file), unless --songs names real ones;
2. the Beam pipeline on it (`python -m beam_pipelines.preprocess`);
3. training (`experiments/train.py +experiment=demo`, the small preset on CPU) on a time
   budget (`train.max_minutes`): what is left of `--minutes` for the whole demo after the
   corpus and the pipeline, less a reserve for the final evaluation and sampling, so the
   demo ends in time on a fast or a slow machine alike;
4. sampling from the checkpoint, two songs per genre at temperature 0.8
   (`experiments/sample.py`; see DEMO_TEMPERATURE), with the listening page `index.html`
   and a genre check of the samples;
5. a summary of where everything is and what was measured.

Each step is skipped when its output is already complete, so a rerun reuses what was built
(an interrupted training run resumes from its last checkpoint). With --songs (a folder,
glob, zip such as fma_small.zip, or URL list) and --metadata (FMA's tracks.csv or
fma_metadata.zip), the same steps run on real data, with FMA's genres and splits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from wavegen.data.dataset import INFO_FILE
from wavegen.training import run_dir as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def _run(cmd: list[str], what: str) -> None:
    print(f"\n==> {what}\n    {' '.join(cmd)}", flush=True)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"demo: {what} failed (exit status {res.returncode}); see the output above")
    print(f"    done in {time.time() - t0:.0f} s", flush=True)


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def corpus_step(d: str) -> str:
    songs = os.path.join(d, "songs")
    marker = os.path.join(songs, ".complete")
    if os.path.exists(marker):
        print(f"==> corpus: reusing {songs}")
        return songs
    _run([PY, "-m", "experiments.demo_corpus", f"--out={songs}"], "making the demo corpus")
    open(marker, "w").close()
    return songs


def pipeline_step(d: str, songs: str, metadata: str | None) -> str:
    data = os.path.join(d, "data")
    if os.path.exists(os.path.join(data, INFO_FILE)):
        print(f"==> pipeline: reusing the dataset in {data}")
        return data
    cmd = [PY, "-m", "beam_pipelines.preprocess", f"--input={songs}", f"--output_dir={data}",
           "--overwrite"]
    if metadata:
        cmd += [f"--metadata={metadata}", "--genre_from=fma", "--split_from=fma"]
    else:
        # Genre folders for a folder of songs; an archive's or a URL's folders (FMA's
        # 000..155 buckets) are not genres.
        by_folder = not songs.lower().endswith((".zip", ".urls"))
        cmd += [f"--genre_from={'folder' if by_folder else 'none'}",
                "--split=train:0.8,validation:0.2"]
    _run(cmd, "preprocessing songs into training shards (Beam)")
    return data


# Seconds of the demo's budget kept for what follows training: the final evaluation and
# checkpoint, and sampling one 4 s song per genre with the listening page.
RESERVE_S = 150
MIN_TRAIN_MINUTES = 2.0


def train_minutes(total_minutes: float, elapsed_s: float) -> float:
    """The training budget: what the demo's budget leaves after `elapsed_s`, less the
    reserve; at least MIN_TRAIN_MINUTES."""
    return round(max(MIN_TRAIN_MINUTES, (total_minutes * 60 - elapsed_s - RESERVE_S) / 60), 2)


def train_step(d: str, data: str, steps: int | None, real: bool,
               minutes: float | None) -> str:
    """The demo experiment on a time budget; with --steps, its own run directory and a
    schedule of that length."""
    run = os.path.join(d, f"run-{steps}steps" if steps else "run")
    summary = os.path.join(run, "run_summary.json")
    extra = [] if minutes is None else [f"train.max_minutes={minutes}"]
    if steps:
        extra += [f"train.steps={steps}", f"train.eval_every={max(50, steps // 20)}",
                  f"train.checkpoint_every={max(100, steps // 10)}"]
    if real:  # a real validation split can be big: score a sample of it at each evaluation
        extra += ["train.eval_batches=50"]
    if os.path.exists(summary):
        print(f"==> training: reusing the finished run in {run}")
        return run
    _run([PY, "experiments/train.py", "+experiment=demo", f"data.dir={data}",
          f"hydra.run.dir={run}", *extra], "training the WaveNet (resumes if interrupted)")
    return run


# Sampling in the demo. Temperature 0.8 rather than the model's own distribution (1.0):
# after a CPU budget's few hundred steps, a temperature-1 sample spends much of its
# probability on the noise floor every bin keeps, and all three genres come out as the
# same hiss; below 1 the tonal, rhythmic part the model has learnt stands out, and 0.8
# keeps some of the texture. Two 4 s streams per genre give the genre check 24 windows.
DEMO_TEMPERATURE = 0.8
DEMO_STREAMS_PER_GENRE = 2


def sample_step(d: str, run: str) -> str:
    out = os.path.join(d, "samples" + os.path.basename(run)[len("run"):])
    page = os.path.join(out, "index.html")
    ckpts = os.path.join(run, run_lib.CHECKPOINTS)
    newest = max((os.path.getmtime(os.path.join(ckpts, s)) for s in os.listdir(ckpts)),
                 default=0)
    if os.path.exists(page) and os.path.getmtime(page) > newest:
        print(f"==> sampling: reusing {out}")
        return out
    _run([PY, "experiments/sample.py", f"checkpoint={run}", "step=best", "each_genre=true",
          f"num_samples={DEMO_STREAMS_PER_GENRE}", "seconds=4",
          f"temperature={DEMO_TEMPERATURE}", f"output_dir={out}"],
         f"sampling {DEMO_STREAMS_PER_GENRE} songs per genre from the best checkpoint "
         f"(temperature {DEMO_TEMPERATURE})")
    return out


def report(d: str, data: str, run: str, out: str) -> None:
    pre = _load(os.path.join(data, "summary.json"))
    tr = _load(os.path.join(run, "run_summary.json"))
    sm = _load(os.path.join(out, "samples.json"))
    val, uni = tr["final_val_bits"], tr["unigram_bits"]
    stopped = (f" (stopped by its {tr['max_minutes']:g}-minute budget)"
               if tr.get("stopped_by") == "budget" else "")
    chunks = sum(s["chunks"] for s in pre["splits"].values())
    lines = [
        "",
        "=" * 78,
        "wavegen demo",
        f"  songs: {pre['songs_in']} in, {pre['songs_written']} written, "
        f"{pre['songs_failed']} failed ({', '.join(f'{k}: {v}' for k, v in pre['failures'].items()) or 'none'}); "
        f"{chunks} chunks -> {data}",
        f"  failed songs and why: {os.path.join(data, 'failed.jsonl')}",
        f"  training: {tr['steps']} steps{stopped}, {tr['samples_per_s']:.0f} samples/s; "
        "validation "
        f"{val:.3f} bits/sample vs unigram baseline {uni:.3f} "
        f"({abs(100 * (1 - val / uni)):.0f}% {'below' if val < uni else 'above'}) -> {run}",
        f"  generation: {sm['samples_per_s']:.0f} samples/s over {len(sm['samples'])} "
        f"streams (step {sm['checkpoint_step']}, temperature {DEMO_TEMPERATURE})",
        _genre_check_line(sm.get("genre_check")),
    ]
    for s in sm["samples"]:
        lines.append(f"    {s.get('genre') or '-':>14}: {os.path.join(out, s['wav'])}  "
                     f"{os.path.join(out, s['png'])}")
    lines += [f"  listen: {os.path.abspath(os.path.join(out, 'index.html'))}",
              "",
              "  Next, the Free Music Archive (https://github.com/mdeff/fma): download",
              "  fma_small.zip and fma_metadata.zip, then the same steps on it:",
              "    make demo SONGS=/path/to/fma_small.zip METADATA=/path/to/fma_metadata.zip",
              "  (or SONGS=/path/to/a/folder of genre folders). README: 'Using the Free Music",
              "  Archive' for the pipeline, training and sampling commands one by one.",
              "=" * 78]
    print("\n".join(lines))
    if val > 0.75 * uni:
        print("demo: warning: validation bits/sample is not 25% below the unigram baseline")


def _genre_check_line(check: dict | None) -> str:
    """Can you hear the genre? The sampler's classifier on the samples and on real
    validation audio (wavegen.generation.genre_check), next to chance."""
    if not check or check.get("samples_accuracy") is None:
        return "  genre check: not run (no whole 1 s window, or genre_check=false)"
    real = check.get("real_accuracy")
    return (f"  genre check: a band-statistics classifier names the genre of "
            f"{check['samples_accuracy']:.0%} of the samples' 1 s windows (real validation "
            f"audio: {'-' if real is None else f'{real:.0%}'}; chance {check['chance']:.0%})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="demo", help="where everything goes")
    p.add_argument("--songs", help="real songs instead of the embedded corpus")
    p.add_argument("--metadata", help="FMA tracks.csv or fma_metadata.zip for --songs")
    p.add_argument("--steps", type=int, help="training steps (default: the demo experiment's)")
    p.add_argument("--minutes", type=float, default=14.0,
                   help="the whole demo's time budget; training gets what the other steps "
                        "leave (0: no budget, train.steps decides)")
    args = p.parse_args(argv)
    t0 = time.time()
    os.makedirs(args.dir, exist_ok=True)
    songs = args.songs or corpus_step(args.dir)
    data = pipeline_step(args.dir, songs, args.metadata)
    minutes = train_minutes(args.minutes, time.time() - t0) if args.minutes > 0 else None
    run = train_step(args.dir, data, args.steps, real=bool(args.songs), minutes=minutes)
    out = sample_step(args.dir, run)
    report(args.dir, data, run, out)
    print(f"demo finished in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
