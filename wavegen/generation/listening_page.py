"""Pictures and a listening page for generated audio (matplotlib, plain HTML).

`spectrogram_png` and `training_curve_png` draw with matplotlib's Agg backend (no display
needed); `listening_page` writes a self-contained `index.html`: no scripts, no network,
every audio and image a file beside it, so it opens straight from disk.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrogram_png(path: str, x: np.ndarray, sample_rate: int, title: str = "") -> str:
    """A log-magnitude spectrogram with time (s) and frequency (Hz) axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    nfft = 512 if sample_rate <= 24000 else 1024
    x = np.asarray(x, np.float64)
    if len(x) < nfft:
        x = np.pad(x, (0, nfft - len(x)))
    _, _, _, im = ax.specgram(x + 1e-9, NFFT=nfft, Fs=sample_rate, noverlap=nfft * 3 // 4,
                              cmap="magma", scale="dB", vmin=-120)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def training_curve_png(path: str, rows: Sequence[dict], title: str = "") -> str:
    """Train and validation bits/sample against the step, with the unigram baseline."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    train = [(r["step"], r["train_bits"]) for r in rows if "train_bits" in r]
    val = [(r["step"], r["val_bits"]) for r in rows if "val_bits" in r]
    uni = [(r["step"], r["unigram_bits"]) for r in rows if "unigram_bits" in r]
    if train:
        ax.plot(*zip(*train), label="train", color="tab:blue", linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", color="tab:orange", markersize=3)
    if uni:
        ax.axhline(uni[-1][1], linestyle="--", color="gray",
                   label=f"unigram baseline ({uni[-1][1]:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("bits per sample")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.sample { border-top: 1px solid #ddd; padding: 0.8em 0; }
.meta { color: #555; font-size: 0.9em; } img { max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #eee; }
"""


def listening_page(path: str, title: str, facts: dict, samples: Sequence[dict],
                   curve_png: str | None = None) -> str:
    """index.html: for each sample an audio player, its spectrogram and its settings.

    `samples`: dicts with `wav` and `png` (file names relative to the page) and any of
    `genre`, `temperature`, `prime`, `seconds`. `facts`: name -> value rows shown on top
    (checkpoint step, run, speed...).
    """
    e = html.escape
    rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>"
                   for k, v in facts.items())
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{e(title)}</h1>", f"<table>{rows}</table>"]
    if curve_png:
        parts.append(f"<h2>Training</h2><img src=\"{e(curve_png)}\" "
                     "alt=\"training curve: bits per sample against step\">")
    parts.append("<h2>Samples</h2>")
    for s in samples:
        meta = ", ".join(f"{k}: {e(str(s[k]))}" for k in ("genre", "temperature", "prime",
                                                         "seconds") if s.get(k) is not None)
        parts.append(
            f"<div class=\"sample\"><div><b>{e(s['wav'])}</b> "
            f"<span class=\"meta\">{meta}</span></div>"
            f"<audio controls preload=\"none\" src=\"{e(s['wav'])}\"></audio><br>"
            f"<img src=\"{e(s['png'])}\" alt=\"spectrogram of {e(s['wav'])}\"></div>")
    parts.append("</body></html>\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path
