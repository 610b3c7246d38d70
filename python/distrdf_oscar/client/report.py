"""``distrdf-oscar report``: where a job's time and money went, from its record (timeline.py).

The breakdown splits the wall time the client saw into mapping (until the last mapper's partial
appeared) and the tail (until the result appeared), and sums each role's calls: their start-up
(event to process, process to ready: pod, imports, payload), the graph's JIT, their compute,
upload and CPU seconds, and a cost from a price per core-second. The Gantt chart has one lane per function slot (calls that
never overlap share a lane), each call drawn phase by phase.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from ..protocol.timeline import CallRecord, JobRecord, records_dir

# An assumed price of one core for one second (about 0.04 per core-hour, a cloud vCPU's on-demand
# order of magnitude); set your own with --price.
DEFAULT_PRICE = 0.000011

# Each phase of a call, drawn as the segment from the previous mark to this one.
SEGMENTS = (
    ("started", "waiting (event to process)", "#bbbbbb"),
    ("imported", "imports (ROOT's start)", "#f0a030"),
    ("ready", "trigger, payload", "#f6cf8c"),
    ("inputs", "downloading inputs", "#7fb3e0"),
    ("loop_started", "building the graph", "#9fd3c7"),
    ("jitted", "JIT", "#e9724c"),
    ("loop_ended", "event loop", None),  # colour by role
    ("computed", "computing or merging", None),
    ("uploaded", "uploading", "#4d4d4d"),
)
ROLE_COLOURS = {"mapper": "#2a9d4a", "reducer": "#7b4fbf", "batch": "#c0399b", "coordinator": "#a6c8a0"}
ROLE_WORK = {
    "mapper": "event loop, computing",
    "reducer": "merging",
    "batch": "merging",
    "coordinator": "watching partials, launching batches",
}


def load(which: str | None = None) -> JobRecord:
    """A job record: a file, a job id in :func:`records_dir`, or (None) the newest there."""
    if which and os.path.isfile(which):
        path = which
    elif which:
        path = os.path.join(records_dir(), f"{which}.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no record of job {which} in {records_dir()} (nor a file of that name)")
    else:
        found = sorted(glob.glob(os.path.join(records_dir(), "*.json")), key=os.path.getmtime)
        if not found:
            raise FileNotFoundError(f"no job records in {records_dir()}: run a job first")
        path = found[-1]
    with open(path) as f:
        return JobRecord.from_json(f.read())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _span(call: CallRecord, end: str, *starts: str) -> float | None:
    """Seconds from the first of ``starts`` the call marked to ``end``; None without ``end``."""
    if end not in call.phases:
        return None
    begin = next((call.phases[p] for p in starts if p in call.phases), call.phases["started"])
    return call.phases[end] - begin


def _mean_of(calls: list[CallRecord], end: str, *starts: str) -> float:
    return _mean([d for c in calls if (d := _span(c, end, *starts)) is not None])


def role_costs(record: JobRecord) -> dict[str, dict[str, float]]:
    """Per role: calls, the mean seconds of each part of a call (waiting: event to process;
    start-up: process to ready, i.e. pod, imports, payload; jit: ready to the end of the first
    loop's JIT, building the graph included; compute: the rest until the partial is on local
    disk, or, for the coordinator, until it launched its last batch; upload: until its object
    was written) and the totals of CPU seconds, bytes read and written, and the peak RSS."""
    out = {}
    for role in ROLE_COLOURS:
        calls = [f for f in record.functions if f.role == role]
        if calls:
            out[role] = {
                "calls": len(calls),
                "waiting": _mean(
                    [f.phases["started"] - f.phases["invoked"] for f in calls if "invoked" in f.phases]
                ),
                "startup": _mean_of(calls, "ready", "started"),
                "jit": _mean_of(calls, "jitted", "ready"),
                "compute": _mean_of(calls, "computed", "jitted", "inputs", "ready"),
                "upload": _mean_of(calls, "uploaded", "computed"),
                "cpu_seconds": sum(f.cpu_seconds for f in calls),
                "bytes_read": sum(f.bytes_read for f in calls),
                "bytes_written": sum(f.bytes_written for f in calls),
                "peak_rss": max(f.peak_rss for f in calls),
            }
    return out


def summary(record: JobRecord, price: float = DEFAULT_PRICE) -> str:
    client = record.client
    wall = client.get("result_seen", 0.0) - client.get("submitted", 0.0)
    mapping = client.get("last_mapper", client.get("result_seen", 0.0)) - client.get("submitted", 0.0)
    lines = [
        (
            f"job {record.job}: {record.mode} reduction, {record.npartitions} partitions in {record.calls} mapper "
            f"call(s){', warm pool' if record.pool else ''}"
        ),
        f"  wall time {wall:.2f} s: mapping {mapping:.2f} s, tail (last mapper -> result) {wall - mapping:.2f} s"
        + (
            f"; {record.duplicates} task(s) computed twice, the copy thrown away" if record.duplicates else ""
        ),
        (
            f"  {'role':<11} {'calls':>5} {'waiting':>8} {'start-up':>9} {'JIT':>7} {'compute':>8} {'upload':>7} "
            f"{'CPU s':>7} {'read MB':>8} {'written MB':>10} {'peak RSS MB':>11}"
        ),
    ]
    costs = role_costs(record)
    for role, c in costs.items():
        lines.append(
            f"  {role:<11} {c['calls']:>5.0f} {c['waiting']:>7.2f}s {c['startup']:>8.2f}s {c['jit']:>6.2f}s "
            f"{c['compute']:>7.2f}s {c['upload']:>6.2f}s {c['cpu_seconds']:>7.1f} {c['bytes_read'] / 1e6:>8.1f} "
            f"{c['bytes_written'] / 1e6:>10.1f} {c['peak_rss'] / 1e6:>11.0f}"
        )
    total_cpu = sum(c["cpu_seconds"] for c in costs.values())
    lines.append(
        "  (waiting to upload are means per call, JIT counting the graph's building; CPU seconds are totals)"
    )
    lines.append(
        f"  CPU: {total_cpu:.1f} core-seconds; cost at {price:g} per core-second: {total_cpu * price:.6f}"
    )
    return "\n".join(lines)


def lanes(calls: Iterable[CallRecord]) -> list[list[CallRecord]]:
    """Calls packed into lanes, first come first placed: a lane is a function slot's history."""
    packed: list[list[CallRecord]] = []
    for call in sorted(calls, key=lambda c: c.start):
        lane = next((lane for lane in packed if lane[-1].end <= call.start), None)
        if lane is None:
            packed.append([call])
        else:
            lane.append(call)
    return packed


def gantt(record: JobRecord, path: str) -> str:
    """Draw the job's calls, one lane per slot, phase by phase; returns ``path`` (a PNG)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(
            "drawing the timeline needs matplotlib: pip install 'distrdf-oscar[bench]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    origin = record.client.get("submitted") or min((c.start for c in record.functions), default=0.0)
    packed = lanes(record.functions)
    height = 2.4 + 0.28 * max(len(packed), 4)  # inches: lanes, plus room for the axis and the legend
    fig, ax = plt.subplots(figsize=(11, height))
    for row, lane in enumerate(packed):
        for call in lane:
            previous = call.start
            for phase, _, colour in SEGMENTS:
                if phase not in call.phases:
                    continue
                end = call.phases[phase]
                ax.barh(
                    row,
                    end - previous,
                    left=previous - origin,
                    height=0.7,
                    color=colour or ROLE_COLOURS.get(call.role, "#444444"),
                    edgecolor="white",
                    linewidth=0.3,
                )
                previous = end
    for name, colour in (("last mapper seen", "#d62728"), ("result seen", "#000000")):
        key = "last_mapper" if name.startswith("last") else "result_seen"
        if key in record.client:
            ax.axvline(record.client[key] - origin, color=colour, linestyle="--", linewidth=1)
    legend = [Patch(color=c, label=label) for _, label, c in SEGMENTS if c]
    legend += [
        Patch(color=c, label=f"{role}: {ROLE_WORK[role]}")
        for role, c in ROLE_COLOURS.items()
        if any(f.role == role for f in record.functions)
    ]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, frameon=False)
    ax.set_yticks(
        range(len(packed)), [f"slot {i}" for i in range(len(packed))], fontsize=7 if len(packed) > 20 else 9
    )
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the job was submitted (dashed: the client saw the last mapper, the result)")
    ax.set_title(
        f"job {record.job}: {record.mode}, {record.calls} mapper call(s), {len(record.functions)} calls in all"
    )
    fig.tight_layout(rect=(0, 0.75 / height, 1, 1))  # the bottom 0.75 inch holds the legend
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
