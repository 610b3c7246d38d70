"""What a failed job leaves for ``distrdf-oscar logs``: the failed tasks' reports and the OSCAR
jobs that served it, kept (not deleted with the job's other OSCAR jobs) until their logs are read.

The record lives beside the job records (timeline.records_dir, ``failed/<job>.json``) on the
machine whose client ran the job. Reading a function's logs copies them into the record and
then deletes its OSCAR job, so they can be read again and OSCAR's listing stays short.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from ..platform.oscar.cluster import OSCARCluster
from ..platform.oscar.errors import OSCARError
from ..protocol import layout, timeline
from ..protocol.messages import ErrorMarker


@dataclass
class FailedTask:
    who: str  # role and trigger, e.g. "mapper-000003_000004"
    service: str
    worker: str  # its OSCAR job, or the pool worker that ran it
    error: str
    report: str  # the function's own account: its traceback, or its output's last lines


@dataclass
class FailureRecord:
    job: str
    failed: list[FailedTask]
    # service -> OSCAR jobs of the job, kept when no task reported (a timeout: any may tell why)
    functions: dict[str, list[str]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)  # "service/OSCAR job" -> logs already read

    def kept_jobs(self) -> dict[str, set[str]]:
        """The OSCAR jobs not to delete with the job's others: the failed tasks', and ``functions``."""
        kept: dict[str, set[str]] = {service: set(names) for service, names in self.functions.items()}
        for task in self.failed:
            if task.worker:
                kept.setdefault(task.service, set()).add(task.worker)
        return kept


def path_of(job_id: str) -> str:
    return os.path.join(timeline.records_dir(), "failed", f"{layout.check_job_id(job_id)}.json")


def keep(job_id: str, markers: list[ErrorMarker], functions: dict[str, list[str]]) -> FailureRecord:
    """Record a failed job's reports and OSCAR jobs (``functions``: service -> names)."""
    record = FailureRecord(
        job=job_id,
        failed=[FailedTask(m.who, m.service, m.worker, m.error, m.traceback) for m in markers],
        functions={service: sorted(names) for service, names in functions.items()},
    )
    save(record)
    return record


def save(record: FailureRecord) -> None:
    path = path_of(record.job)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".part", "w") as f:
        json.dump(asdict(record), f, indent=1)
    os.replace(path + ".part", path)


def load(job_id: str) -> FailureRecord | None:
    try:
        with open(path_of(job_id)) as f:
            raw = json.load(f)
    except FileNotFoundError:
        return None
    raw["failed"] = [FailedTask(**task) for task in raw.get("failed", [])]
    return FailureRecord(**raw)


def read_logs(
    cluster: OSCARCluster, record: FailureRecord, task: str | None = None
) -> Iterator[tuple[str, str]]:
    """(heading, text) of each log asked for: with ``task``, the failed task of that name (a
    retry's name too: ``mapper-000000_000001`` covers ``mapper-000000_000001-1``) or every OSCAR
    job of the service whose role is ``task`` (``mapper``, ``coordinator``...); else every failed
    task's, or, when none reported (a timeout), every function's of the job. Logs read from OSCAR
    are kept in the record and their OSCAR jobs deleted."""
    chosen = [t for t in record.failed if task is None or t.who == task or t.who.startswith(task + "-")]
    for failed in chosen:
        text = _oscar_logs(cluster, record, failed.service, failed.worker) if failed.worker else None
        where = f"OSCAR job {failed.worker}" if text is not None else f"pool worker {failed.worker or '?'}"
        heading = f"{failed.who} ({failed.service}, {where}): {failed.error}"
        # A pool worker's output goes to its pod's log, which OSCAR does not serve: its report has the tail.
        yield heading, text if text is not None else failed.report
    if chosen or (task is not None and "-" in task):
        return
    for service, names in sorted(record.functions.items()):
        if task is not None and not service.endswith("-" + task):
            continue
        for name in names:
            text = _oscar_logs(cluster, record, service, name)
            yield f"{service}, OSCAR job {name}", text if text is not None else "(its logs are gone)"


def _oscar_logs(cluster: OSCARCluster, record: FailureRecord, service: str, name: str) -> str | None:
    """OSCAR's logs of one job, from the record if read before; None if OSCAR has no such job."""
    where = f"{service}/{name}"
    if where not in record.logs:
        try:
            record.logs[where] = cluster.job_logs(service, name)
        except OSCARError as exc:
            if exc.status != 404:
                raise
            return None
        save(record)
        with contextlib.suppress(OSCARError):  # only bookkeeping: its logs are kept here now
            cluster.remove_jobs(service, [name])
    return record.logs[where]
