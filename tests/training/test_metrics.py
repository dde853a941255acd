"""metrics.jsonl: a damaged line (a kill mid-write, a hand edit) is skipped, never fatal."""

import json
import logging

import numpy as np

from wavegen.training import metrics


def _write_run(path, steps, rng):
    rows = [{"step": int(s), "train_bits": float(b)}
            for s, b in zip(steps, rng.uniform(2.0, 8.0, len(steps)))]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


DAMAGED = ['{"step": 99, "train_bits": 7.',  # cut off mid-write (no newline)
           "not json", "[1, 2]", '{"train_bits": 1.0}', '{"step": "7"}', '{"step": true}',
           '{"step": NaN}']


def test_read_metrics_skips_every_malformed_line_with_one_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    path = tmp_path / "metrics.jsonl"
    rows = _write_run(path, sorted(rng.choice(1000, 6, replace=False)), rng)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(DAMAGED[1:]) + "\n\n" + DAMAGED[0])
    with caplog.at_level(logging.WARNING):
        assert metrics.read_metrics(str(path)) == rows
    assert f"{path}: skipped {len(DAMAGED)} malformed line(s)" in caplog.text


def test_read_metrics_of_a_run_without_metrics_is_empty(tmp_path):
    assert metrics.read_metrics(metrics.metrics_path(str(tmp_path))) == []


def test_truncate_after_a_kill_mid_write_keeps_the_rows_up_to_the_step(tmp_path, caplog):
    rng = np.random.default_rng(1)
    path = tmp_path / "metrics.jsonl"
    steps = np.arange(1, 11) * int(rng.integers(3, 9))
    rows = _write_run(path, steps, rng)
    with open(path, "a", encoding="utf-8") as f:
        f.write(DAMAGED[0])  # the process was killed while writing the next row
    resume_at = int(steps[6])
    with caplog.at_level(logging.WARNING):
        metrics.truncate_after(str(path), resume_at)
    assert "skipped 1 malformed line(s)" in caplog.text
    assert metrics.read_metrics(str(path)) == rows[:7]
    # The resumed run appends after a clean last line; nothing malformed is left.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": resume_at + 1, "train_bits": 3.5}) + "\n")
    caplog.clear()
    assert [r["step"] for r in metrics.read_metrics(str(path))] == \
        [r["step"] for r in rows[:7]] + [resume_at + 1]
    assert "malformed" not in caplog.text
