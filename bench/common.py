"""What the benchmarks under ``bench/`` share: the figure lines that ``bench/run_all.py``
collects into one table, percentiles, and the CPU and memory of the processes a run started.

A benchmark prints each of its results as one line ``FIGURE <name>=<value> <unit>`` (besides its
own human-readable table); ``run_all.py`` reads those lines from every script's output. A name
is a short identifier without spaces, unique within its script.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FIGURE_LINE",
    "Figure",
    "cpu_seconds",
    "figure",
    "parse_figures",
    "percentile",
    "rss_bytes",
    "slug",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

#: ``FIGURE name=value unit``; the unit may be empty.
FIGURE_LINE = re.compile(r"^FIGURE (?P<name>[A-Za-z0-9_.:/-]+)=(?P<value>\S+)(?: (?P<unit>.*))?$")


@dataclass(frozen=True)
class Figure:
    """One result of one benchmark."""

    name: str
    value: float
    unit: str


def figure(name: str, value: float, unit: str = "") -> None:
    """Print ``value`` as a figure line for ``run_all.py`` (flushed at once, so that a run that
    fails later still shows what it measured)."""
    if not FIGURE_LINE.match(f"FIGURE {name}=0"):
        raise ValueError(f"a figure name is one word of letters, digits and _.:/-, got {name!r}")
    print(f"FIGURE {name}={value:.6g} {unit}".rstrip(), flush=True)


def slug(text: str) -> str:
    """``text`` as a figure name: runs of other characters than letters and digits become
    ``_`` ("generated at 1,000,000" -> "generated_at_1_000_000")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def parse_figures(output: str) -> list[Figure]:
    """Every figure line in a benchmark's output, in order."""
    found = []
    for line in output.splitlines():
        match = FIGURE_LINE.match(line.strip())
        if match:
            found.append(
                Figure(match["name"], float(match["value"]), (match["unit"] or "").strip())
            )
    return found


def percentile(values: list[float], p: int) -> float:
    """The p-th percentile (1..99) of ``values``."""
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (every thread), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc; 0 if unknown."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * _PAGE
