"""Writing a benchmark's results: the JSON file `make bench` (run_all.py) collects."""

from __future__ import annotations

import json
import os


def write_json(path: str | None, result: dict) -> None:
    """Writes `result` to `path` (its folder made if needed); nothing when path is None."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {path}")
