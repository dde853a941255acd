"""The progress bar every long wavegen step shows on a terminal (tqdm, imported only when
shown)."""

from __future__ import annotations

from typing import Iterable


def progress_bar(desc: str, unit: str, total: int, show: bool = True,
                 iterable: Iterable | None = None, **options):
    """A tqdm bar (with rate and ETA) over `iterable`, or one updated by hand when no
    iterable is given. With show=False: `iterable` itself (None when there is none)."""
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, unit=unit, desc=desc, dynamic_ncols=True, **options)
