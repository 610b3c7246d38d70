"""``distrdf-oscar report``: where a job's time and money went, from its record (timeline.py).

The breakdown splits the wall time the client saw into mapping (until the last mapper's partial
appeared) and the tail (until the result appeared), and sums each role's calls: their start-up
(event to process, process to ready: pod, imports, payload), the graph's JIT, their compute,
upload and CPU seconds, and a cost from a price per core-second. The Gantt chart has one lane per function slot (calls that
never overlap share a lane), each call drawn phase by phase.

A serverless bill counts what each pod reserves (its CPU and memory requests) for as long as it
lives, not the CPU it used: :func:`reservations` prices each pod over its life, and a warm pool's
workers over the job's wall time, idle or not (and per hour, which they cost between jobs too).
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable
from typing import Any

from ..platform.deployment import POOL
from ..protocol.timeline import CallRecord, JobRecord, Request, records_dir
from .simulate.costs import PROTOTYPE

# An assumed price of one core for one second (about 0.04 per core-hour, a cloud vCPU's on-demand
# order of magnitude); set your own with --price.
DEFAULT_PRICE = 0.000011
# An assumed price of one GiB of memory for one second: about a ninth of a core-second's, the
# ratio of CPU to memory prices typical of serverless container pricing (an assumption, not a
# quote: about 0.0043 per GiB-hour); set your own with --memory-price.
DEFAULT_MEMORY_PRICE = 0.0000012
GIB = float(1 << 30)
HOUR = 3600.0
# A pod holds its requests from when it is scheduled, before its process starts: charged as the
# simulator's pod start (a typical Kubernetes figure), never from before the event that invoked it
# (the rest of event -> process is the webhook and the platform's queue, where nothing is held).
POD_START = PROTOTYPE.pod_start

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


def _wall(record: JobRecord) -> float:
    return record.client.get("result_seen", 0.0) - record.client.get("submitted", 0.0)


def _busy(calls: Iterable[CallRecord]) -> float:
    """Seconds in which at least one of ``calls`` ran (overlaps counted once)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted((c.start, c.end) for c in calls):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def holders(record: JobRecord) -> list[tuple[str, float]]:
    """(service, seconds) for each pod or pool worker that ran the job's calls: a file-triggered
    pod (one OSCAR job: its call, and the merges it ran inline) from its pod's start (POD_START
    before its process started, never before its event) to its last call's end; a pool worker for
    its share of the job, the time its calls ran. A pod's service is its first call's role."""
    by_worker: dict[str, list[CallRecord]] = {}
    for call in record.functions:
        by_worker.setdefault(call.worker or call.task, []).append(call)
    held = []
    for worker, calls in by_worker.items():
        if worker in record.pool_workers:
            held.append((POOL, _busy(calls)))
            continue
        first = min(calls, key=lambda c: c.phases["started"])
        begin = max(first.phases.get("invoked", -math.inf), first.phases["started"] - POD_START)
        held.append((first.role, max(c.end for c in calls) - begin))
    return held


def cpu_used(record: JobRecord, price: float = DEFAULT_PRICE) -> dict[str, float]:
    """The CPU the job's calls used (core-seconds), and its cost at ``price`` per core-second."""
    cores = sum(f.cpu_seconds for f in record.functions)
    return {"core_seconds": cores, "price": price, "cost": cores * price}


def _priced(request: Request, seconds: float, price: float, memory_price: float) -> dict[str, float]:
    """A request (cores, GiB) held for ``seconds`` (summed over its pods): core- and GiB-seconds,
    and their cost."""
    cpu, gib = request.cpu, request.memory / GIB
    return {
        "cpu": cpu,
        "memory_gib": gib,
        "core_seconds": cpu * seconds,
        "gib_seconds": gib * seconds,
        "cost": (cpu * price + gib * memory_price) * seconds,
    }


def reservations(
    record: JobRecord, price: float = DEFAULT_PRICE, memory_price: float = DEFAULT_MEMORY_PRICE
) -> dict[str, Any] | None:
    """What the job reserved, priced per core-second and GiB-second; None for a record without
    requests (written before they were recorded). ``services``: per service, its pods (pool:
    the workers that ran calls), the seconds they held their requests (:func:`holders`) and what
    that comes to. ``pool`` (a pool job): the pool's workers over the job's wall time, idle or not,
    and per hour, which they cost between jobs too. The totals are the job's: its file-triggered
    pods, and the pool over the wall time (which holds its workers' busy share)."""
    if not record.requests:
        return None
    services: dict[str, dict[str, float]] = {}
    order = (*ROLE_COLOURS, POOL)  # the breakdown's order, the pool last
    for service, seconds in sorted(holders(record), key=lambda held: order.index(held[0])):
        row = services.setdefault(service, {"pods": 0, "seconds": 0.0})
        row["pods"] += 1
        row["seconds"] += seconds
    for service, row in services.items():
        row.update(_priced(record.requests[service], row["seconds"], price, memory_price))
    billed = [row for service, row in services.items() if service != POOL]
    out: dict[str, Any] = {"price": price, "memory_price": memory_price, "services": services}
    if record.pool:
        request, workers = record.requests[POOL], len(record.pool_workers)
        held = _priced(request, workers * _wall(record), price, memory_price)
        billed.append(held)
        hour = _priced(request, workers * HOUR, price, memory_price)
        out["pool"] = {"workers": workers, "wall_seconds": _wall(record), **held, "per_hour": hour}
    for total in ("core_seconds", "gib_seconds", "cost"):
        out[total] = sum(row[total] for row in billed)
    return out


def summary(
    record: JobRecord, price: float = DEFAULT_PRICE, memory_price: float = DEFAULT_MEMORY_PRICE
) -> str:
    client = record.client
    wall = _wall(record)
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
    used = cpu_used(record, price)
    lines.append(
        "  (waiting to upload are means per call, JIT counting the graph's building; CPU seconds are totals)"
    )
    lines.append(
        f"  CPU used: {used['core_seconds']:.1f} core-seconds; cost at {price:g} per core-second: {used['cost']:.6f}"
    )
    return "\n".join(lines + _reserved_lines(record, used["core_seconds"], price, memory_price))


def _reserved_lines(record: JobRecord, used: float, price: float, memory_price: float) -> list[str]:
    reserved = reservations(record, price, memory_price)
    if reserved is None:
        return [
            "  reserved: not in this record (written before requests were recorded): only the CPU used is priced"
        ]
    lines = [
        f"  reserved: CPU and memory requests x life (a pod's: from up to {POD_START:g} s of pod start before its",
        "  process to its last call's end; a pool worker's: while it ran the job's calls)",
        f"  {'service':<11} {'pods':>5} {'held s':>8} {'cores':>6} {'GiB':>5} {'core-s':>8} {'GiB-s':>8}",
    ]
    for service, row in reserved["services"].items():
        lines.append(
            f"  {service:<11} {row['pods']:>5.0f} {row['seconds']:>8.2f} {row['cpu']:>6g} {row['memory_gib']:>5g} "
            f"{row['core_seconds']:>8.1f} {row['gib_seconds']:>8.1f}"
        )
    pool = reserved.get("pool")
    if pool is not None:
        lines.append(
            f"  warm pool: {pool['workers']} worker(s) of {pool['cpu']:g} core(s) and {pool['memory_gib']:g} GiB over "
            f"the job's {pool['wall_seconds']:.2f} s wall time, idle or not (the busy share above included): "
            f"{pool['core_seconds']:.1f} core-seconds, {pool['gib_seconds']:.1f} GiB-seconds"
        )
    share = (
        f"; the CPU used is {used / reserved['core_seconds']:.0%} of it" if reserved["core_seconds"] else ""
    )
    lines.append(
        f"  reserved: {reserved['core_seconds']:.1f} core-seconds, {reserved['gib_seconds']:.1f} GiB-seconds; cost at "
        f"{price:g} per core-second and {memory_price:g} per GiB-second: {reserved['cost']:.6f}{share}"
    )
    if pool is not None:
        hour = pool["per_hour"]
        lines.append(
            f"  the pool costs between jobs too: {hour['core_seconds']:.0f} core-seconds and {hour['gib_seconds']:.0f} "
            f"GiB-seconds an hour, {hour['cost']:.6f} an hour"
        )
    return lines


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
