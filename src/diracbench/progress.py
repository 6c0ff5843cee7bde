"""Progress bars that stay readable in log files (one line every few seconds, no \\r spam)."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "it") -> tqdm:
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        mininterval=0.5 if interactive else 10.0,
        ascii=not interactive,
        dynamic_ncols=interactive,
        file=sys.stderr,
    )
