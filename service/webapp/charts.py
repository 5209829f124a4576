"""The endpoint page's two charts, computed and laid out in pure code as SVG shapes.

- Tasks finished per minute over the last hour, stacked by outcome.
- How long tasks took from submission to result, as a histogram over
  fixed, roughly logarithmic bins (sub-second tasks and hour-long ones on one
  axis).

The template only draws the rectangles and labels computed here, so the
pages need no chart library and no script.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable

MINUTES = 60
OUTCOMES = ("success", "failed")
LATENCY_EDGES = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800)
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 600, 180, 36, 28, 10


@dataclasses.dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str


@dataclasses.dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclasses.dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    labels: list[Label]
    total: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def baseline(self) -> float:
        return HEIGHT - PAD_BOTTOM


def per_minute(finished: Iterable[tuple[float, str]], now: float) -> dict[str, list[int]]:
    """Counts per outcome for each of the last 60 minutes, oldest first."""
    counts = {kind: [0] * MINUTES for kind in OUTCOMES}
    for completed, status in finished:
        minutes_ago = math.floor((now - completed) / 60)
        if status in counts and 0 <= minutes_ago < MINUTES:
            counts[status][MINUTES - 1 - minutes_ago] += 1
    return counts


def latency_bins(latencies: Iterable[float]) -> list[int]:
    """How many latencies fall below each edge (and above the last), one bin each."""
    bins = [0] * (len(LATENCY_EDGES) + 1)
    for seconds in latencies:
        index = next((i for i, edge in enumerate(LATENCY_EDGES) if seconds < edge), None)
        bins[len(LATENCY_EDGES) if index is None else index] += 1
    return bins


def bin_names() -> list[str]:
    edges = [_short(e) for e in LATENCY_EDGES]
    return [f"<{edges[0]}"] + [f"{a}-{b}" for a, b in itertools.pairwise(edges)] + [f"≥{edges[-1]}"]


def axis_names() -> list[str]:
    """Each bin by its upper edge: short enough to sit under its bar."""
    edges = [_short(e) for e in LATENCY_EDGES]
    return [f"<{e}" for e in edges] + [f"≥{edges[-1]}"]


def _short(seconds: float) -> str:
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _scale(top: int) -> float:
    return (HEIGHT - PAD_BOTTOM - PAD_TOP) / max(top, 1)


def _axis(top: int) -> list[Label]:
    return [
        Label(PAD_LEFT - 6, PAD_TOP + 4, str(top), "end"),
        Label(PAD_LEFT - 6, HEIGHT - PAD_BOTTOM, "0", "end"),
    ]


def throughput_chart(counts: dict[str, list[int]]) -> Chart:
    """Stacked bars, one per minute; hover titles give the exact counts."""
    totals = [sum(counts[k][i] for k in OUTCOMES) for i in range(MINUTES)]
    top, scale = max(totals, default=0), _scale(max(totals, default=0))
    step = (WIDTH - PAD_LEFT) / MINUTES
    bars = []
    for i in range(MINUTES):
        y = HEIGHT - PAD_BOTTOM
        for kind in OUTCOMES:
            n = counts[kind][i]
            if n:
                h = n * scale
                y -= h
                title = f"{n} {kind}, {MINUTES - i} min ago"
                bars.append(Bar(PAD_LEFT + i * step + 1, y, step - 2, h, kind, title))
    labels = [*_axis(top)]
    for minutes_ago in (60, 45, 30, 15, 0):
        x = PAD_LEFT + (MINUTES - minutes_ago) * step
        text, anchor = (f"-{minutes_ago} min", "middle") if minutes_ago else ("now", "end")
        labels.append(Label(x, HEIGHT - 8, text, anchor))
    return Chart("Tasks finished per minute, last hour", bars, labels, sum(totals))


def latency_chart(bins: list[int]) -> Chart:
    """One bar per latency bin, labelled with its range."""
    names, axis, top = bin_names(), axis_names(), max(bins, default=0)
    scale, step = _scale(top), (WIDTH - PAD_LEFT) / len(bins)
    bars, labels = [], [*_axis(top)]
    for i, n in enumerate(bins):
        x = PAD_LEFT + i * step
        if n:
            h = n * scale
            title = f"{n} task(s) took {names[i]}"
            bars.append(Bar(x + 2, HEIGHT - PAD_BOTTOM - h, step - 4, h, "latency", title))
        labels.append(Label(x + step / 2, HEIGHT - 8, axis[i]))
    return Chart("Submitted → completed, last hour", bars, labels, sum(bins))
