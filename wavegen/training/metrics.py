"""A run's metrics.jsonl: one JSON object per log line, each with the `step` it was logged at.

Training appends a row per log; a resumed run first drops the rows logged after the step it
resumes from (they are redone). A line cut off by a kill mid-write, or edited by hand, is
malformed: readers skip it with a warning, so one damaged line never blocks a resume or
the listening page's training curve.
"""

from __future__ import annotations

import json
import logging
import math
import os

log = logging.getLogger("wavegen.metrics")

FILE_NAME = "metrics.jsonl"


def metrics_path(run_dir: str) -> str:
    """Where a run directory keeps its metrics."""
    return os.path.join(run_dir, FILE_NAME)


def parse_row(line: str) -> dict | None:
    """The row on one line: a JSON object with a finite numeric `step`; None for anything
    else (a cut-off line, a hand edit)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step):
        return row
    return None


def read_metrics(path: str) -> list[dict]:
    """The well-formed rows of a metrics.jsonl, in file order ([] when there is no file);
    malformed lines are skipped with one warning naming the file and their count."""
    if not os.path.exists(path):
        return []
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            row = parse_row(line)
            if row is None:
                bad += 1
            else:
                rows.append(row)
    if bad:
        log.warning("%s: skipped %d malformed line(s)", path, bad)
    return rows


def truncate_after(path: str, step: int) -> None:
    """On resume: keeps only the well-formed rows logged at or before `step` (the later
    ones are redone); malformed lines are dropped with read_metrics's warning."""
    if not os.path.exists(path):
        return
    keep = [row for row in read_metrics(path) if row["step"] <= step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in keep)
    os.replace(tmp, path)
