"""What every benchmark script does with its report: JSON and a PNG, named by benchmark and time."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable


def save(report: dict, out: str, benchmark: str, plot: Callable[[dict, str], None]) -> None:
    """Write ``<benchmark>-<time>.json`` and the plot as ``.png`` under ``out``; print both paths."""
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2)
    plot(report, stem + ".png")
    print(f"saved {stem}.json and {stem}.png")


def labelled_bars(ax, names: list[str], values: list[float], label: Callable[[float], str], colors) -> None:
    """Horizontal bars, top to bottom in the given order, each labelled at its end."""
    bars = ax.barh(names, values, color=colors)
    for bar, value in zip(bars, values, strict=True):
        ax.text(value, bar.get_y() + bar.get_height() / 2, " " + label(value), va="center")
    ax.invert_yaxis()


def pyplot():
    """matplotlib's pyplot without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
