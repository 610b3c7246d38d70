"""The platform's costs from what jobs recorded: :func:`calibrate` fits the model's costs to job
records (``timeline.JobRecord``); :func:`job_costs` gives ``reduction="auto"`` the costs of the
platform a job runs on (declared, measured from the newest records, or a preset)."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ...protocol import layout
from ...protocol.timeline import CallRecord, JobRecord
from .costs import EMBEDDED_COLD, EMBEDDED_POOL, OSCAR_POOL, PROTOTYPE, PlatformCosts, Workload

# -- calibration from job records -------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    costs: PlatformCosts
    workload: Workload  # the records' job (meaningful if they all ran one analysis on one dataset)
    jobs: int  # records used


def _median(values: Sequence[float], default: float) -> float:
    return statistics.median(values) if values else default


def _load(record: JobRecord | str) -> JobRecord:
    if isinstance(record, JobRecord):
        return record
    with open(record) as f:
        return JobRecord.from_json(f.read())


def _overlap(calls: list[CallRecord]) -> int:
    """The most calls of one job running at once (started -> computed)."""
    edges = sorted(
        [(c.phases["started"], 1) for c in calls]
        + [(c.phases["computed"], -1) for c in calls if "computed" in c.phases]
    )
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def _merge_inputs(record: JobRecord, call: CallRecord, partial_bytes: float | None) -> int | None:
    """How many partials a merge read: its tree node's children in the record, or its bytes read
    over a partial's size."""
    interval = layout.parse_interval(call.task) if call.role == "reducer" else None
    if call.task.endswith("result.root") and call.role == "reducer":
        interval = (0, record.npartitions)
    if interval is not None:
        inside = [
            iv
            for f in record.functions
            if f is not call
            and (iv := layout.parse_interval(f.task)) is not None
            and interval[0] <= iv[0]
            and iv[1] <= interval[1]
            and iv != interval
        ]
        # Children: the nodes inside that no other node inside covers.
        children = [
            iv for iv in inside if not any(o != iv and o[0] <= iv[0] and iv[1] <= o[1] for o in inside)
        ]
        if len(children) >= 2:
            return len(children)
    if partial_bytes:
        return max(1, round(call.bytes_read / partial_bytes))
    return None


def _fit_compute(
    jobs: list[list[tuple[float, float, float]]], default_jit: float, measured_jit: float | None = None
) -> tuple[float, list[float]]:
    """The JIT and each job's serial work from its mapper calls' rows (first graph in the process
    0/1, share of the dataset, compute seconds): least squares of compute = jit * first + work_j *
    share, each job its own work. A ``measured_jit`` (the calls' own JIT phases) is taken as it
    is. If no job's rows can tell the JIT from the work (every call cold and of the same share),
    the JIT is the smaller of ``default_jit`` and the fastest call; if the first calls are not
    slower beyond the noise (a pool whose workers ran the graph before), none."""
    if measured_jit is not None:
        return measured_jit, _works(jobs, measured_jit)
    num = den = 0.0
    partialled = []
    for rows in jobs:
        svv = sum(v * v for _, v, _ in rows)
        if svv <= 0:
            continue
        suv, svy = sum(u * v for u, v, _ in rows), sum(v * y for _, v, y in rows)
        for u, v, y in rows:  # the JIT indicator and compute with the job's own work partialled out
            uu, yy = u - v * suv / svv, y - v * svy / svv
            partialled.append((uu, yy))
            num += uu * yy
            den += uu * uu
    if den > 1e-9:
        jit = num / den
        dof = max(1, len(partialled) - len(jobs) - 1)
        error = math.sqrt(sum((yy - jit * uu) ** 2 for uu, yy in partialled) / dof / den)
        jit = jit if jit > 2 * error else 0.0
    else:
        jit = min([default_jit] + [y for rows in jobs for _, _, y in rows])
    return jit, _works(jobs, jit)


def _works(jobs: list[list[tuple[float, float, float]]], jit: float) -> list[float]:
    return [
        max(1e-6, sum(v * (y - u * jit) for u, v, y in rows) / max(1e-12, sum(v * v for _, v, _ in rows)))
        for rows in jobs
    ]


def calibrate(
    records: Iterable[JobRecord | str], base: PlatformCosts | None = None, one_workload: bool = False
) -> Calibration:
    """A platform's costs (and the records' workload) from job records of one mode (all on a warm
    pool or all file-triggered): JobRecord objects or paths of their JSON files.

    Measured: slots (the most calls at once; a pool's workers), the latency from an object to its
    function's process and its spread, each role's start-up, the JIT and the serial work (a least-
    squares fit of each mapper call's compute against the share of the dataset it ran and whether
    its process had run the graph yet), the download and merge cost per input, the trigger cadence
    (put), the client's submission time and the partials' size. Everything else (the polling
    periods, the launch stagger when the records cannot show it, get, exit) comes from ``base``
    (default: this machine's embedded preset of the records' mode). With ``one_workload`` (every
    record ran the same analysis on the same data, tree and coordinated jobs among them), the
    coordinator's load on the mapper calls is measured too: the work of coordinated jobs over that
    of tree jobs."""
    # The model's calls; the coordinator's own record (its watching) is not one of them.
    loaded = [
        dataclasses.replace(r, functions=[c for c in r.functions if c.role != "coordinator"])
        for r in map(_load, records)
    ]
    if not loaded:
        raise ValueError("calibrating needs at least one job record")
    pools = {r.pool for r in loaded}
    if len(pools) > 1:
        raise ValueError("calibrate the records of pool jobs and of file-triggered jobs separately")
    pool = pools.pop()
    base = base or (EMBEDDED_POOL if pool else EMBEDDED_COLD)
    costs: dict[str, Any] = {"name": f"calibrated ({len(loaded)} jobs)", "pool": pool, "compute_scale": 1.0}
    mappers = [(r, c) for r in loaded for c in r.functions if c.role == "mapper" and "computed" in c.phases]
    merges = [
        (r, c) for r in loaded for c in r.functions if c.role in ("reducer", "batch") and "inputs" in c.phases
    ]
    if pool:
        slots = max((len({c.worker for c in r.functions}) for r in loaded), default=base.slots)
    else:
        slots = max((_overlap(r.functions) for r in loaded), default=base.slots)
    costs["slots"] = max(1, slots)

    # Start-up of each role; the wait from the event to the process, for calls that found a slot.
    costs["mapper_start"] = _median(
        [c.phases["ready"] - c.phases["started"] for _, c in mappers if "ready" in c.phases],
        base.mapper_start,
    )
    costs["reducer_start"] = (
        0.0
        if pool
        else _median(
            [
                c.phases["ready"] - c.phases["started"]
                for _, c in merges
                if "ready" in c.phases and c.phases.get("invoked", c.phases["started"]) < c.phases["started"]
            ],
            base.reducer_start,
        )
    )
    if not pool:
        waits = []
        for r in loaded:
            for c in r.functions:
                # Inline merges (in their writer's process: started as invoked) start no function.
                if c.phases.get("invoked", c.phases["started"]) >= c.phases["started"]:
                    continue
                busy = sum(
                    1
                    for o in r.functions
                    if o is not c
                    and o.phases["started"]
                    <= c.phases["invoked"]
                    < o.phases.get("computed", o.phases["started"])
                )
                if busy < slots:
                    waits.append(c.phases["started"] - c.phases["invoked"])
        if waits:
            costs["pod_start"] = max(0.0, min(waits))
            costs["invoke_latency"] = max(0.0, statistics.median(waits) - costs["pod_start"])
            costs["invoke_spread"] = statistics.pstdev(waits)
        cadence = []
        for r in loaded:
            times = sorted(
                c.phases["invoked"] for c in r.functions if c.role == "mapper" and "invoked" in c.phases
            )
            cadence += [b - a for a, b in itertools.pairwise(times)]
        costs["put"] = _median(cadence, base.put)
    put = costs.get("put", base.put)
    submits = []
    for r in loaded:
        first = min(
            (c.phases.get("invoked", c.phases["started"]) for c in r.functions if c.role == "mapper"),
            default=None,
        )
        if first is not None and "submitted" in r.client:
            # Before the first trigger: the coordinator's start (coordinated jobs); pool calls wait
            # half a queue poll on average before a worker sees them.
            ahead = put * (2 if r.mode == "coordinated" else 1) + (base.queue_poll / 2 if pool else 0.0)
            submits.append(max(0.0, first - r.client["submitted"] - ahead))
    costs["submit"] = _median(submits, base.submit)

    # Compute: jit * (first graph in the process) + the job's work * (its share of the dataset).
    jobs, modes = [], []
    graph_jit: dict[float, list[float]] = {
        1.0: [],
        0.0: [],
    }  # measured ready -> jitted, by first graph or not
    for r in loaded:
        rows = []
        seen_workers: set[str] = set()
        for c in sorted(
            (c for c in r.functions if c.role == "mapper" and "computed" in c.phases),
            key=lambda c: c.phases["started"],
        ):
            interval = layout.parse_interval(c.task) or (0, 1)
            if c.task.endswith("result.root"):
                interval = (0, r.npartitions)
            first = 1.0 if not pool or c.worker not in seen_workers else 0.0
            seen_workers.add(c.worker)
            share = (interval[1] - interval[0]) / r.npartitions
            rows.append((first, share, c.phases["computed"] - c.phases.get("ready", c.phases["started"])))
            if "jitted" in c.phases and "ready" in c.phases:
                graph_jit[first].append(c.phases["jitted"] - c.phases["ready"])
        if rows:
            jobs.append(rows)
            modes.append(r.mode)
    # The calls' own JIT phases (graph built and jitted), less what a process that ran the graph
    # before still spends there, when the records have them.
    measured_jit = (
        max(0.0, statistics.median(graph_jit[1.0]) - _median(graph_jit[0.0], 0.0)) if graph_jit[1.0] else None
    )
    jit, works = _fit_compute(jobs, base.jit, measured_jit)
    costs["jit"] = jit
    # How uneven a job's mapper calls are: the spread of their compute around the fit's (calls of
    # a tenth of a second or less are all overhead, and left out).
    spreads = []
    for rows, w in zip(jobs, works, strict=True):
        ratios = [y / (u * jit + v * w) for u, v, y in rows if u * jit + v * w > 0.1]
        if len(ratios) > 1:
            spreads.append(statistics.pstdev(ratios))
    imbalance = _median(spreads, 0.0)
    coordinated = [w for mode, w in zip(modes, works, strict=True) if mode == "coordinated"]
    trees = [w for mode, w in zip(modes, works, strict=True) if mode == "tree"]
    if one_workload and coordinated and trees:
        costs["coordinator_load"] = max(0.0, statistics.median(coordinated) / statistics.median(trees) - 1)
        work = statistics.median(trees)
    else:
        work = _median(works, Workload().work)

    # Merges: per input, its download and its share of the n-way merge.
    sizes = [c.bytes_read / n for r, c in merges if (n := _merge_inputs(r, c, None))]
    partial_bytes = max(1.0, _median(sizes, 100_000.0))
    downloads, merging = [], []
    for r, c in merges:
        n = _merge_inputs(r, c, partial_bytes) or 2
        downloads.append((c.phases["inputs"] - c.phases.get("ready", c.phases["started"])) / n)
        merging.append((c.phases["computed"] - c.phases["inputs"]) / n)
    per_input = _median(downloads, base.get + partial_bytes * base.transfer_per_byte)
    costs["transfer_per_byte"] = max(0.0, per_input - base.get) / partial_bytes
    costs["merge_per_partial"] = _median(merging, base.merge_per_partial)
    measured = dataclasses.replace(base, **costs)
    return Calibration(
        measured,
        Workload(work=work, partial_bytes=int(partial_bytes), imbalance=round(imbalance, 3)),
        len(loaded),
    )


# -- the costs of the platform a job runs on ------------------------------------------------------

RECENT_RECORDS = 20  # auto calibrates from the newest job records of the job's mode ...
MIN_RECORDS = 5  # ... when there are at least this many (of jobs with two mapper calls or more)
_SCANNED_RECORDS = 100  # newest record files looked at to find them


@functools.lru_cache(maxsize=1024)
def _read_record(path: str, mtime_ns: int, size: int) -> JobRecord | None:
    try:
        return _load(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a record being written, or of an older format: not evidence


_Version = tuple[str, int, int]  # a file's path, modification time (ns) and size


@functools.lru_cache(maxsize=64)
def _calibrated(versions: tuple[_Version, ...], pool: bool) -> Calibration | None:
    records = [r for v in versions if (r := _read_record(*v)) is not None]
    try:
        return calibrate(records, base=OSCAR_POOL if pool else PROTOTYPE)
    except (ArithmeticError, LookupError, ValueError):
        return None  # records this calibration cannot read (a hand-made or partial one): the preset


def _version(path: str) -> _Version:
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def recent_records(folder: str, pool: bool) -> list[_Version]:
    """The newest job records in ``folder`` of jobs of this mode (pool or file-triggered) with two
    mapper calls or more, at most :data:`RECENT_RECORDS`; job ids sort by creation time."""
    try:
        names = sorted((n for n in os.listdir(folder) if n.endswith(".json")), reverse=True)[
            :_SCANNED_RECORDS
        ]
    except OSError:
        return []
    chosen = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            version = _version(path)
        except OSError:
            continue  # removed meanwhile (the client keeps the newest 500)
        record = _read_record(*version)
        if record is not None and record.pool == pool and record.calls >= 2:
            chosen.append(version)
            if len(chosen) == RECENT_RECORDS:
                break
    return chosen


def job_costs(
    pool: bool,
    slots: int,
    declared: PlatformCosts | None = None,
    workload: Workload | None = None,
    measured: bool = True,
    folder: str | None = None,
) -> tuple[PlatformCosts, Workload | None, str]:
    """The costs ``reduction="auto"`` plans a job with: ``declared`` if given; else measured from
    the newest job records of the job's mode in ``folder`` (default ``timeline.records_dir()``)
    when there are :data:`MIN_RECORDS`; else the preset of the mode (:data:`OSCAR_POOL` or
    :data:`PROTOTYPE`). ``slots`` (the executor's concurrency) and ``pool`` are the job's."""
    from ...protocol.timeline import records_dir

    found_workload = workload
    if declared is not None:
        costs, basis = declared, f"declared costs {declared.name!r}"
    else:
        versions = recent_records(folder or records_dir(), pool) if measured else []
        calibration = _calibrated(tuple(versions), pool) if len(versions) >= MIN_RECORDS else None
        if calibration is not None:
            costs, basis = calibration.costs, f"measured from {len(versions)} job records"
            found_workload = workload or calibration.workload
        else:
            costs = OSCAR_POOL if pool else PROTOTYPE
            basis = f"preset {costs.name!r}" + (f" ({len(versions)} usable job records)" if measured else "")
    return dataclasses.replace(costs, slots=slots, pool=pool), found_workload, basis
