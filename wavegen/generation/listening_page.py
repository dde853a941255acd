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


# Labels are data: a genre or path with `$` is text, never mathtext.
_PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def spectrogram_png(path: str, x: np.ndarray, sample_rate: int, title: str = "") -> str:
    """A log-magnitude spectrogram with time (s) and frequency (Hz) axes."""
    plt = _pyplot()
    with plt.rc_context(_PLAIN_TEXT):
        return _spectrogram(plt, path, x, sample_rate, title)


def _spectrogram(plt, path: str, x: np.ndarray, sample_rate: int, title: str) -> str:
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
    """Train and validation bits/sample against the step, with the unigram baseline.
    Rows without a number for a curve are left out of that curve."""
    plt = _pyplot()
    with plt.rc_context(_PLAIN_TEXT):
        return _curve(plt, path, rows, title)


def _points(rows: Sequence[dict], key: str) -> list[tuple[float, float]]:
    return [(r["step"], r[key]) for r in rows
            if _number(r.get("step")) and _number(r.get(key))]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def _curve(plt, path: str, rows: Sequence[dict], title: str) -> str:
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    train, val = _points(rows, "train_bits"), _points(rows, "val_bits")
    uni = _points(rows, "unigram_bits")
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
.reference { border-top: 2px solid #8a8; padding: 0.8em 0; background: #f6fbf6; }
.meta { color: #555; font-size: 0.9em; } img { max-width: 100%; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #eee; }
"""


def listening_page(path: str, title: str, facts: dict, samples: Sequence[dict],
                   curve_png: str | None = None,
                   references: Sequence[dict] = ()) -> str:
    """index.html: for each sample an audio player, its spectrogram and its settings;
    before each genre's samples, that genre's real song from `references` if any.

    `samples` and `references`: dicts with `wav` and `png` (file names relative to the
    page) and any of `genre`, `temperature`, `prime`, `seconds` (references: `split`).
    `facts`: name -> value rows shown on top (checkpoint step, run, speed...). Every
    text is escaped: labels are data, never markup.
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
    real = {r.get("genre"): r for r in references}
    shown = set()
    for s in samples:
        g = s.get("genre")
        if g in real and g not in shown:
            shown.add(g)
            parts.append(_item(real[g], f"real {real[g].get('split', '')} song",
                               "reference"))
        parts.append(_item(s, "", "sample"))
    parts.append("</body></html>\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path


def _item(s: dict, kind: str, css: str) -> str:
    """One audio player with its name, settings and spectrogram."""
    e = html.escape
    meta = ", ".join(f"{k}: {e(str(s[k]))}" for k in ("genre", "temperature", "prime",
                                                     "seconds") if s.get(k) is not None)
    name = f"{e(kind)}: {e(s['wav'])}" if kind else e(s["wav"])
    return (f"<div class=\"{css}\"><div><b>{name}</b> <span class=\"meta\">{meta}</span>"
            f"</div><audio controls preload=\"none\" src=\"{e(s['wav'])}\"></audio><br>"
            f"<img src=\"{e(s['png'])}\" alt=\"spectrogram of {e(s['wav'])}\"></div>")
