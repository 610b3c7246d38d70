"""Every object key of the file-driven protocol, and nothing else.

Each service watches one top-level folder (its OSCAR input path); jobs are
separated by a ``<job-id>/`` level below it, so long-lived services are shared
by jobs. ``docs/protocol.md`` lists the keys.

A key's first folder also decides its bucket (:func:`bucket_of`): OSCAR (since
3.6) refuses to create a service whose input bucket already exists, so no two
services may take their inputs in one bucket. The mapper's input bucket is the
deployment's base bucket and also holds the folders no service watches; each
other service input lives in a bucket of its own, ``<base>-<folder>``. Every
bucket is then one that OSCAR creates with a service (and gives the service's
users access to, and removes with it).

Partial results are named by the interval of range ids they cover,
``<lo>_<hi>`` with ``hi`` exclusive, zero-padded so that keys sort by range.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

# Service input folders: an object appearing under one of these invokes the service.
TRIGGERS = "triggers"  # mapper input: one trigger file per entry range
TREE_PARTIALS = "tree-partials"  # tree reducer input: mapper outputs and inner tree nodes
PLANS = "plans"  # coordinator input: one plan file per coordinated job
BATCHES = "batches"  # batch reducer input: one batch description per coordinated merge

# Folders no service watches.
JOBS = "jobs"  # payloads and manifest
PARTIALS = "partials"  # coordinated mode: mapper outputs and batch results
RESULTS = "results"  # the final result of a job
ERRORS = "errors"  # error markers written by failing functions
QUEUE = "queue"  # mapper calls offered to warm pools, which claim them (no webhook watches it)
POOL = "pool"  # pool workers' heartbeats: not job objects
COORDINATOR_ITEM = "coordinator.json"  # a pool job's coordinator, in its queue folder
# The user's datasets (uploads, Snapshots kept in storage), in the base bucket: not job objects,
# so cleanup never touches them.
DATASETS = "datasets"

SERVICE_INPUTS = (TRIGGERS, TREE_PARTIALS, PLANS, BATCHES)
JOB_FOLDERS = (JOBS, TRIGGERS, TREE_PARTIALS, PLANS, BATCHES, PARTIALS, RESULTS, ERRORS, QUEUE)
# Service inputs with a bucket of their own; every other folder lives in the base bucket.
OWN_BUCKET = (TREE_PARTIALS, PLANS, BATCHES)

_JOB_ID = re.compile(r"^j[0-9]{14}-[0-9a-f]{8}$")
_INTERVAL = re.compile(r"^(\d{6})_(\d{6})\.root$")
_RETRY = re.compile(r"^[^/]+/[^/]+/retries/([A-Za-z0-9_]+)-(\d+)\.json$")


def folder_bucket(base: str, folder: str) -> str:
    """The bucket that holds ``folder`` in a deployment whose base bucket is ``base``."""
    return f"{base}-{folder}" if folder in OWN_BUCKET else base


def bucket_of(base: str, key: str) -> str:
    """The bucket that holds object ``key`` (or prefix) of the protocol."""
    return folder_bucket(base, key.split("/", 1)[0])


def base_bucket(bucket: str, key: str) -> str:
    """The base bucket of the deployment that holds ``key`` in ``bucket`` (the inverse of
    :func:`bucket_of`): a function learns its deployment from the object that triggered it."""
    suffix = "-" + key.split("/", 1)[0]
    return (
        bucket[: -len(suffix)] if key.split("/", 1)[0] in OWN_BUCKET and bucket.endswith(suffix) else bucket
    )


def buckets(base: str) -> list[str]:
    """Every bucket of a deployment, the base bucket first."""
    return [base] + [folder_bucket(base, folder) for folder in OWN_BUCKET]


def input_path(base: str, folder: str) -> str:
    """The OSCAR input path (``bucket/folder``) of the service fed by ``folder``."""
    return f"{folder_bucket(base, folder)}/{folder}"


def probe_key(token: str) -> str:
    """A short-lived object a client writes twice to see that storage honours conditional writes."""
    return f"{JOBS}/probe-{token}"


def dataset_key(folder: str, name: str) -> str:
    """An uploaded dataset file ``name`` in ``datasets/<folder>/`` (``folder`` may be empty)."""
    return "/".join(part for part in (DATASETS, folder.strip("/"), name) if part)


def kept_snapshot_key(job_id: str, name: str) -> str:
    """A Snapshot file of a job, kept in storage after the job (``snapshots="storage"``)."""
    return dataset_key(f"snapshots/{job_id}", name)


def pool_heartbeat(worker: str) -> str:
    """Rewritten by a live pool worker every few seconds (functions/pool.py)."""
    return f"{POOL}/workers/{worker}.json"


POOL_HEARTBEATS = f"{POOL}/workers/"


def new_job_id() -> str:
    """A sortable, unguessable job id: creation time (UTC) plus 32 random bits."""
    return "j" + time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ValueError(f"malformed job id {job_id!r}")
    return job_id


def job_created(job_id: str) -> float:
    """Creation time (epoch seconds) encoded in a job id."""
    import calendar

    return calendar.timegm(time.strptime(check_job_id(job_id)[1:15], "%Y%m%d%H%M%S"))


def interval_stem(lo: int, hi: int) -> str:
    """``<lo>_<hi>``: names a range interval's trigger, retries and partial."""
    return f"{lo:06d}_{hi:06d}"


def interval_name(lo: int, hi: int) -> str:
    return interval_stem(lo, hi) + ".root"


def parse_interval(name: str) -> tuple[int, int] | None:
    m = _INTERVAL.match(name.rsplit("/", 1)[-1])
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_retry(key: str) -> tuple[str, int] | None:
    """(task name, attempt) of a retry trigger written by the client, else None."""
    m = _RETRY.match(key)
    return (m.group(1), int(m.group(2))) if m else None


@dataclass(frozen=True)
class JobKeys:
    """The keys of one job."""

    job_id: str

    def prefix(self, folder: str) -> str:
        return f"{folder}/{self.job_id}/"

    @property
    def manifest(self) -> str:
        return f"{JOBS}/{self.job_id}/manifest.json"

    @property
    def lease(self) -> str:
        """Renewed by the waiting client: cleanup removes only jobs whose lease lapsed (leases.py)."""
        return f"{JOBS}/{self.job_id}/lease.json"

    @property
    def mapper_payload(self) -> str:
        return f"{JOBS}/{self.job_id}/mapper.pkl"

    @property
    def plan(self) -> str:
        """The reduction plan that reducers read."""
        return f"{JOBS}/{self.job_id}/plan.json"

    @property
    def coordinator_trigger(self) -> str:
        """A copy of the plan whose appearance starts the coordinator (coordinated mode)."""
        return f"{PLANS}/{self.job_id}/plan.json"

    def function_record(self, role: str, oscar_job: str) -> str:
        """An empty object naming one OSCAR job (``JOB_UUID``) that served this job, so that the
        client can delete the finished ones (OSCAR keeps them 30 days and pages its listing)."""
        return f"{JOBS}/{self.job_id}/functions/{role}/{oscar_job}"

    @property
    def function_records(self) -> str:
        return f"{JOBS}/{self.job_id}/functions/"

    @staticmethod
    def parse_function_record(key: str) -> tuple[str, str]:
        """(role, OSCAR job) named by a :meth:`function_record` key."""
        role, oscar_job = key.rsplit("/", 2)[-2:]
        return role, oscar_job

    def job_file(self, name: str) -> str:
        """A file the user distributed (header, shared library, data file)."""
        return f"{JOBS}/{self.job_id}/files/{name}"

    def snapshot(self, range_id: int, name: str) -> str:
        """A Snapshot output file ``name`` written by the mapper of a range, fetched by the client."""
        return f"{self.snapshots}{range_id:06d}/{name}"

    @property
    def snapshots(self) -> str:
        return f"{JOBS}/{self.job_id}/snapshots/"

    def columns(self, range_id: int) -> str:
        """The AsNumpy rows of a range's mapper, read only by the client (no service watches it)."""
        return f"{JOBS}/{self.job_id}/columns/{range_id:06d}.root"

    @staticmethod
    def snapshot_name(key: str) -> str:
        """The file name of a :meth:`snapshot` key."""
        return key.rsplit("/", 1)[-1]

    def trigger(self, lo: int, hi: int | None = None) -> str:
        """The trigger of the mapper call for ranges ``[lo, hi)`` (one range by default)."""
        return f"{TRIGGERS}/{self.job_id}/{interval_stem(lo, lo + 1 if hi is None else hi)}.json"

    def queued(self, lo: int, hi: int) -> str:
        """The mapper call for ranges ``[lo, hi)`` offered to warm pools."""
        return f"{QUEUE}/{self.job_id}/{interval_stem(lo, hi)}.json"

    def claim(self, lo: int, hi: int) -> str:
        """Taken (a conditional write) by whoever computes the call ``[lo, hi)`` of a pool job: a
        pool worker, or the file-triggered mapper it overflowed to; only one computes it."""
        return self.claim_of(self.queued(lo, hi))

    @property
    def queued_coordinator(self) -> str:
        """A pool job's coordinator, run by a pool worker beside its calls (a copy of the plan)."""
        return f"{QUEUE}/{self.job_id}/{COORDINATOR_ITEM}"

    def group_claim(self, lo: int, hi: int) -> str:
        """Taken by the tree reducer (or pool worker) that merges the group covering ``[lo, hi)``."""
        return f"{self.claims}group_{interval_stem(lo, hi)}"

    def queued_batch(self, index: int) -> str:
        """A pool job's batch file: in the queue, for the pool's workers (no webhook watches it)."""
        return f"{self.queued_batch_prefix}{self.batch_name(index)}.json"

    @property
    def queued_batch_prefix(self) -> str:
        return f"{QUEUE}/{self.job_id}/batch_"

    def claim_of(self, queued: str) -> str:
        """The claim of a queued item (a mapper call or a batch), named after it."""
        return self.claims + queued.rsplit("/", 1)[-1].removesuffix(".json")

    @property
    def claims(self) -> str:
        return f"{JOBS}/{self.job_id}/claims/"

    def duplicate(self, task: str, token: str) -> str:
        """Left by a copy of a task that computed it and then found its output taken: the job
        record counts them."""
        return f"{self.duplicates}{task.rsplit('/', 1)[-1]}.{token}"

    @property
    def duplicates(self) -> str:
        return f"{JOBS}/{self.job_id}/duplicates/"

    def tree_partial(self, lo: int, hi: int) -> str:
        return f"{TREE_PARTIALS}/{self.job_id}/{interval_name(lo, hi)}"

    def partial(self, lo: int, hi: int) -> str:
        return f"{PARTIALS}/{self.job_id}/{interval_name(lo, hi)}"

    def batch(self, index: int) -> str:
        return f"{BATCHES}/{self.job_id}/{self.batch_name(index)}.json"

    def batch_result(self, index: int) -> str:
        return f"{PARTIALS}/{self.job_id}/batch_{self.batch_name(index)}.root"

    def batch_output(self, index: int, nbatches: int) -> str:
        """Where batch ``index`` of ``nbatches`` lands: the last one is the job's result."""
        return self.result if index == nbatches - 1 else self.batch_result(index)

    @property
    def result(self) -> str:
        return f"{RESULTS}/{self.job_id}/result.root"

    def retry(self, folder: str, task: str, attempt: int) -> str:
        """A retry trigger: a new object in a service's input folder, so the service runs
        again for ``task`` (a range, a tree group, a batch, the coordinator)."""
        return f"{folder}/{self.job_id}/retries/{task}-{attempt}.json"

    def error(self, who: str) -> str:
        return f"{ERRORS}/{self.job_id}/{who}.json"

    @staticmethod
    def reporter(role: str, trigger: str) -> str:
        """Who reports a failure (an :meth:`error` name): the role and the stem of its trigger's key,
        e.g. ``mapper-000003_000004``; it needs nothing from the trigger's content."""
        return f"{role}-{trigger.rsplit('/', 1)[-1].rsplit('.', 1)[0]}"

    def batch_name(self, index: int) -> str:
        """The stem of batch ``index``'s file, which also names its retries."""
        return f"{index:04d}"

    def all_prefixes(self) -> list[str]:
        return [self.prefix(folder) for folder in JOB_FOLDERS]


def manifest_job(key: str) -> str | None:
    """The job whose manifest ``key`` is, else None."""
    return _job_whose(key, "manifest")


def lease_job(key: str) -> str | None:
    """The job whose lease ``key`` is, else None."""
    return _job_whose(key, "lease")


def _job_whose(key: str, record: str) -> str | None:
    job_id = job_of_key(key)
    return job_id if job_id is not None and key == getattr(JobKeys(job_id), record) else None


def job_of_key(key: str) -> str | None:
    """The job id a protocol key belongs to, if any."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] in JOB_FOLDERS and _JOB_ID.match(parts[1]):
        return parts[1]
    return None
