"""Pictures and the listening page: labels are data, never markup or mathtext."""

from __future__ import annotations

import html.parser

import numpy as np

from wavegen.generation import listening_page as page

# mathtext would fail on the first two ("$^$", "\frac") and typeset the third.
LABELS = ["x$^$y", "$\\frac$ & co", "R$_B$",
          '<i>it</i> "quoted" & \'single\' <script>x</script>',
          "two\nlines", "ünï©ødé 音楽 🎵", "long " * 80]


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text, self.tags, self.srcs = "", [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k == "src"]

    def handle_data(self, data):
        self.text += data


def test_plots_take_any_label(tmp_path):
    x = np.random.default_rng(0).normal(0, 0.1, 4000)
    for i, label in enumerate(LABELS):
        path = page.spectrogram_png(str(tmp_path / f"s{i}.png"), x, 16000, label)
        assert (tmp_path / f"s{i}.png").stat().st_size > 5000, path
    rows = [{"step": 1, "train_bits": 8.0}, {"step": 2, "val_bits": 7.5,
                                             "unigram_bits": 7.9}]
    page.training_curve_png(str(tmp_path / "c.png"), rows, LABELS[0] + LABELS[1])
    assert (tmp_path / "c.png").stat().st_size > 5000


def test_curve_leaves_out_rows_without_numbers(tmp_path):
    rows = [{"step": 1, "train_bits": 8.0}, {"step": "2", "train_bits": 7.0},
            {"step": 3, "train_bits": None}, {"step": 4, "val_bits": float("nan")},
            {"step": 5, "train_bits": 6.5, "val_bits": 7.0}]
    assert page._points(rows, "train_bits") == [(1, 8.0), (5, 6.5)]
    assert page._points(rows, "val_bits") == [(5, 7.0)]
    page.training_curve_png(str(tmp_path / "c.png"), rows)


def test_page_escapes_every_label(tmp_path):
    samples = [{"wav": f"sample_{i:03d}.wav", "png": f"sample_{i:03d}.png", "genre": g,
                "temperature": 1.0, "prime": g, "seconds": 1.0}
               for i, g in enumerate(LABELS)]
    refs = [{"wav": "reference_000.wav", "png": "reference_000.png", "genre": LABELS[3],
             "split": "validation", "seconds": 2.0}]
    facts = {LABELS[3]: LABELS[4], "run": LABELS[0]}
    path = page.listening_page(str(tmp_path / "index.html"), LABELS[3], facts, samples,
                               None, refs)
    parsed = _Page()
    parsed.feed(open(path, encoding="utf-8").read())
    assert "i" not in parsed.tags and "script" not in parsed.tags  # names are text
    for g in LABELS:
        assert f"genre: {g}" in parsed.text and f"prime: {g}" in parsed.text
    assert LABELS[4] in parsed.text
    # The reference sits right before the first sample of its genre.
    assert parsed.srcs.index("reference_000.wav") + 2 == parsed.srcs.index("sample_003.wav")
