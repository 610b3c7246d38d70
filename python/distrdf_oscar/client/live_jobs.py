"""The jobs in a deployment's storage as the ``jobs`` and ``cancel`` commands show and stop them:
who runs each, for how long, how far it got, read from its lease, plan and outputs."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

from ..protocol import layout
from ..protocol.leases import job_states
from ..protocol.messages import Lease, MessageError
from ..protocol.plan import plan_from_json
from ..protocol.storage import Storage, StorageError
from .job import find_jobs, remove_job


@dataclass(frozen=True)
class JobSummary:
    job: str
    owner: str  # user@host of the waiting client, "" when its lease does not say (or is gone)
    age: float  # seconds since the job was created
    state: str  # alive (its client waits), lapsed (client gone), or no lease
    mode: str  # tree or coordinated, "" without a readable plan
    mapped: int  # mapper calls whose output is in
    calls: int  # mapper calls in all (0 without a readable plan)
    finished: bool  # the result is in

    def describe(self) -> str:
        progress = f"{self.mapped}/{self.calls} mapper calls" if self.calls else "no plan"
        return (
            f"{self.job}  {self.owner or '-'}  {self.age / 60:.0f} min  {self.state}  "
            f"{self.mode or '-'}  {progress}{', result in' if self.finished else ''}"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def list_jobs(storage: Storage) -> list[JobSummary]:
    """Every job with objects in the deployment's buckets, oldest first."""
    now = time.time()
    summaries = []
    for job_id, state in sorted(job_states(storage, find_jobs(storage)).items()):
        keys = layout.JobKeys(job_id)
        owner, mode, mapped, calls = "", "", 0, 0
        with contextlib.suppress(StorageError, MessageError):
            owner = Lease.from_json(storage.get_bytes(keys.lease, verify=False)).owner
        with contextlib.suppress(StorageError, MessageError):
            job_plan = plan_from_json(storage.get_bytes(keys.plan, verify=False))
            mode, calls = job_plan.mode, len(job_plan.tasks)
            outputs = {job_plan.mapper_output(task) for task in job_plan.tasks}
            for folder in {key.rsplit("/", 1)[0] + "/" for key in outputs}:
                mapped += len(outputs.intersection(storage.list(folder)))
        status = "alive" if state.alive else "no lease" if state.lease_age is None else "lapsed"
        summaries.append(
            JobSummary(
                job=job_id,
                owner=owner,
                age=now - layout.job_created(job_id),
                state=status,
                mode=mode,
                mapped=mapped,
                calls=calls,
                finished=storage.exists(keys.result),
            )
        )
    return summaries


def cancel(storage: Storage, job_id: str) -> int:
    """Stop a job: its manifest goes first, so its functions and pool workers drop it within
    seconds and its waiting client raises ``JobRemoved``; then every object of it. Returns how
    many objects were removed (0: no such job)."""
    layout.check_job_id(job_id)
    return remove_job(storage, job_id)
