"""Where a job's time goes: each function call's phases and resource use, carried in the partials.

A call (a mapper call, a merge) marks its phases as it goes and writes the record into the
partial it produces (``PartialMeta.functions``); a merge carries its inputs' records on, so the
job's result holds every call that contributed to it (and the coordinator's, which its last
batch's merge carries: functions/coordinator.py). The client saves them, with its own
observations, as the job record (``JobRecord``): a JSON file per job in :func:`records_dir`,
which ``distrdf-oscar report`` reads.

Phases, in order (epoch seconds; a call marks those that apply to it):

- ``invoked``: the storage event that started the call (MinIO's event time), the claim of a
  pool's call, or (an inline merge) the moment its writer found the group complete;
- ``started``: the call's process started (a pool's or warm worker's: the call began);
- ``imported``: a mapper's imports done, ROOT's interpreter started;
- ``ready``: trigger and payload read (a mapper: the user's files and libraries too; the
  coordinator: its plan, as it begins watching the partials);
- ``inputs``: a merge's inputs downloaded;
- ``loop_started``: DistRDF built the first range's graph and ROOT's event loop began;
- ``jitted``: that loop's just-in-time compilation ended (ROOT's log says when:
  ``functions/event_loops.py``);
- ``loop_ended``: the last range's event loop ended;
- ``computed``: the mapper's results were converted and its partial written to local disk, the
  n-way merge ended, or the coordinator launched its last batch;
- ``uploaded``: the partial's object was written: its last-modified time, which the client
  reads in the listings it already makes (the object store's clock; milliseconds with MinIO).
  A call's record travels inside the object it uploads, so it cannot carry this itself.

What the calls reserved is the job record's, not theirs (their records' format is the partials'):
the CPU and memory each service requests (``JobRecord.requests``) and which workers were the warm
pool's (``JobRecord.pool_workers``); with the phases, ``report`` prices each pod over its life.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .quantities import parse_quantity

PHASES = (
    "invoked",
    "started",
    "imported",
    "ready",
    "inputs",
    "loop_started",
    "jitted",
    "loop_ended",
    "computed",
    "uploaded",
)
RECORDS_VARIABLE = "DISTRDF_OSCAR_RECORDS"  # where job records go (default: records_dir())


def process_start() -> float | None:
    """When this process started (epoch seconds), from Linux's /proc; None elsewhere. Measured
    back from the uptime (10 ms ticks): the boot time /proc/stat gives is whole seconds."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            since_boot = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))


def _cpu_seconds(thread: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD if thread else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """The phases of one call, and the CPU time it used (from its start, so a long-lived worker's
    earlier calls do not count; with ``thread_cpu``, the calling thread's alone, as a pool's calls
    share their process with a coordinator's thread)."""

    def __init__(
        self,
        role: str,
        worker: str,
        invoked: float | None = None,
        started: float | None = None,
        counters: Callable[[], tuple[int, int]] = lambda: (0, 0),
        thread_cpu: bool = False,
    ) -> None:
        self.role = role
        self.worker = worker
        self.phases: dict[str, float] = {}
        self._thread_cpu = thread_cpu
        self._cpu = _cpu_seconds(thread_cpu)
        self._counters = counters  # (bytes read, bytes written) of the call's storage client so far
        self._moved = counters()
        if invoked is not None:
            self.phases["invoked"] = invoked
        self.phases["started"] = started if started is not None else time.time()

    def mark(self, phase: str) -> None:
        self.set(phase, time.time())

    def set(self, phase: str, when: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        self.phases[phase] = when

    def record(self, task: str) -> CallRecord:
        """The call's record for the partial it writes (``task``: that partial's key); what the call
        uploads after this (the partial itself) is not counted in ``bytes_written``: the client
        adds its size, from the listing that gives its upload's end."""
        read, written = self._counters()
        return CallRecord(
            role=self.role,
            worker=self.worker,
            task=task,
            phases=dict(self.phases),
            cpu_seconds=round(_cpu_seconds(self._thread_cpu) - self._cpu, 4),
            peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            bytes_read=read - self._moved[0],
            bytes_written=written - self._moved[1],
        )


@dataclass
class CallRecord:
    role: (
        str  # mapper, reducer (a tree merge), batch (a coordinated merge), coordinator (watching, launching)
    )
    worker: str  # the OSCAR job (JOB_UUID), or the pool worker, that ran it
    task: str  # the key of the partial it produced
    phases: dict[str, float]
    cpu_seconds: float
    peak_rss: int  # bytes: the process's high-water mark (a long-lived worker's, since it started)
    bytes_read: int  # from object storage, by the call
    bytes_written: int  # to object storage: its partial, row files and Snapshot files

    @property
    def start(self) -> float:
        return self.phases.get("invoked", self.phases["started"])

    @property
    def end(self) -> float:
        return max(self.phases.values())


@dataclass
class Request:
    """What each pod of a service requests, which the platform reserves for the pod's whole life."""

    cpu: float  # cores
    memory: float  # bytes

    @classmethod
    def of(cls, service: Mapping[str, Any]) -> Request:
        """The requests of an OSCAR service definition (Kubernetes quantities: "1", "250m", "2Gi")."""
        return cls(parse_quantity(str(service["cpu"])), parse_quantity(str(service["memory"])))


@dataclass
class JobRecord:
    """A finished job: what the client saw, and every call that contributed to its result."""

    job: str
    mode: str  # tree or coordinated
    npartitions: int
    calls: int  # mapper calls
    pool: bool
    client: dict[str, float]  # the client's observations: submitted, last_mapper, result_seen (epoch s)
    functions: list[CallRecord] = field(default_factory=list)
    # Tasks computed again and thrown away (a retry, a duplicate trigger, a copy that lost its
    # claim), as known when the result came.
    duplicates: int = 0
    # What each service's pods request, by role (mapper, reducer, batch, coordinator, and pool: a
    # warm pool's workers), as the client's deployment defines them; empty in older records.
    requests: dict[str, Request] = field(default_factory=dict)
    # A pool job: the pool's workers while it ran (a call whose worker is not one ran in a pod of
    # the file-triggered services: an overflow).
    pool_workers: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        raw = json.loads(text)
        raw["functions"] = [CallRecord(**f) for f in raw.get("functions", [])]
        raw["requests"] = {role: Request(**r) for role, r in raw.get("requests", {}).items()}
        return cls(**raw)


def records_dir() -> str:
    """Where job records are kept: $DISTRDF_OSCAR_RECORDS, else the user's state folder."""
    default = os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "distrdf-oscar", "jobs"
    )
    return os.environ.get(RECORDS_VARIABLE) or default


KEPT_RECORDS = 500  # the newest records kept in records_dir(); older ones are removed


def save(record: JobRecord) -> str:
    folder = records_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{record.job}.json")
    with open(path + ".part", "w") as f:
        f.write(record.to_json())
    os.replace(path + ".part", path)
    # Job ids sort by creation time: drop the oldest beyond what is kept.
    for old in sorted(name for name in os.listdir(folder) if name.endswith(".json"))[:-KEPT_RECORDS]:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, old))
    return path
