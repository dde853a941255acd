"""Makes the demo's embedded corpus: short songs in three styles, as genre folders.

    .venv/bin/python -m experiments.demo_corpus --out demo/songs [--songs_per_style 8]

Songs come from wavegen.data.synth (piano waltz, synth techno, ambient pad: different
instruments, scales, tempos and rhythms), written alternately as mp3 and wav at 44.1 kHz
stereo into `OUT/<style>/`, plus one corrupt file so the pipeline's dead-letter path shows.
Nothing is downloaded; the same arguments always give the same songs.
"""

from __future__ import annotations

import argparse
import os

import soundfile as sf

from wavegen.data import synth


def make_corpus(out: str, songs_per_style: int = 8, seconds: float = 8.0,
                sample_rate: int = 44100) -> dict:
    written = 0
    for i, style in enumerate(sorted(synth.STYLES)):
        folder = os.path.join(out, style)
        os.makedirs(folder, exist_ok=True)
        for j in range(songs_per_style):
            x = synth.render_song(style, seconds, sample_rate, seed=1000 * i + j)
            if j % 2:
                sf.write(os.path.join(folder, f"{style}_{j:02d}.wav"), x, sample_rate,
                         subtype="PCM_16")
            else:
                sf.write(os.path.join(folder, f"{style}_{j:02d}.mp3"), x, sample_rate,
                         format="MP3")
            written += 1
    # Not a song: bytes that only look like one. The pipeline must dead-letter it.
    with open(os.path.join(out, sorted(synth.STYLES)[0], "corrupt.mp3"), "wb") as f:
        f.write(b"ID3\x03\x00\x00\x00\x00\x00\x0f" + bytes(range(256)) * 16)
    return {"songs": written, "corrupt": 1, "styles": sorted(synth.STYLES),
            "seconds": written * seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--songs_per_style", type=int, default=8)
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args(argv)
    info = make_corpus(args.out, args.songs_per_style, args.seconds)
    print(f"demo corpus: {info['songs']} songs ({info['seconds'] / 60:.1f} min) in "
          f"{len(info['styles'])} styles ({', '.join(info['styles'])}) + 1 corrupt file "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
