"""Hydra callbacks: the sweep summary table written at the end of a multirun."""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

COLUMNS = ("job", "overrides", "final_val_bits", "best_val_bits", "best_step",
           "unigram_bits", "steps", "wall_s", "status")


def collect(sweep_dir: str) -> list[dict]:
    """One row per job directory of a multirun (its overrides and run_summary.json)."""
    rows = []
    for name in sorted(os.listdir(sweep_dir), key=lambda n: (len(n), n)):
        job = os.path.join(sweep_dir, name)
        overrides = os.path.join(job, ".hydra", "overrides.yaml")
        if not os.path.isfile(overrides):
            continue
        with open(overrides) as f:
            row: dict[str, Any] = {"job": name, "overrides": yaml.safe_load(f) or []}
        summary = os.path.join(job, "run_summary.json")
        if os.path.isfile(summary):
            with open(summary) as f:
                s = json.load(f)
            row.update({k: s.get(k) for k in COLUMNS if k in s}, status="done")
        else:
            row["status"] = "failed or unfinished"
        rows.append(row)
    # Show what the sweep varied: the overrides common to every job are left out.
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    for r in rows:
        r["overrides"] = " ".join(o for o in r["overrides"] if o not in common)
    return rows


def write_tables(sweep_dir: str, rows: list[dict]) -> tuple[str, str]:
    csv_path = os.path.join(sweep_dir, "sweep_summary.csv")
    md_path = os.path.join(sweep_dir, "sweep_summary.md")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})

    def cell(v):
        if v is None or v == "":
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    with open(md_path, "w") as f:
        f.write("| " + " | ".join(COLUMNS) + " |\n")
        f.write("|" + "---|" * len(COLUMNS) + "\n")
        for r in rows:
            f.write("| " + " | ".join(cell(r.get(k)) for k in COLUMNS) + " |\n")
    return csv_path, md_path


class SweepSummary(Callback):
    """Writes sweep_summary.csv and sweep_summary.md into the multirun directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = config.hydra.sweep.dir
        if not os.path.isdir(sweep_dir):
            return
        rows = collect(sweep_dir)
        csv_path, md_path = write_tables(sweep_dir, rows)
        print(f"sweep summary: {csv_path} ({len(rows)} runs)")
        with open(md_path) as f:
            print(f.read())
