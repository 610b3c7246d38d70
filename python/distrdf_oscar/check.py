"""``distrdf-oscar check``: a cluster checked end to end, as far as this client can see it.

Each step depends on the ones before it, so the check stops at the first fault and says in one
line what is wrong and what to do; the exit code names the class of fault (:data:`FAULTS`).
Passing every step ends with a tiny job, run as an analyst's would be, and its timings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .client.settings import ConfigurationError
from .platform.oscar.errors import OSCARError
from .protocol.storage import PERMANENT_CODES, StorageError

if TYPE_CHECKING:
    from .client.executor import OSCARExecutor
    from .protocol.storage import Storage

# Exit code of each class of fault (docs/deploy.md). 0: every step passed.
FAULTS = {
    "settings": 10,  # missing or malformed settings
    "oscar": 11,  # OSCAR unreachable, or not answering like OSCAR
    "credentials": 12,  # OSCAR refused the credentials
    "release": 13,  # an OSCAR release this client does not support
    "storage": 14,  # the object storage unreachable from this client, or refusing its keys
    "conditional writes": 15,  # the probe of conditional writes failed: storage refuses this client's writes
    "services": 16,  # the deployment's services missing, of another key or of another version
    "quota": 17,  # the caller's Kueue quota can never admit the deployment's functions
    "start": 18,  # no function started within the bound: image pull, quota, capacity
    "job": 19,  # the test job failed or gave a wrong result
}
SUPPORTED = ((3, 5, 0), (4, 1, 99))  # the releases the embedded platform models (docs/deploy.md)
START_BOUND = 300.0  # seconds for the test job's first function to start (a cold image pull)
CANCEL_PATIENCE = 10.0  # seconds for the test job's client to see it cancelled and end


class CheckFailed(Exception):
    """A step's fault: its class (a key of :data:`FAULTS`) and the one line that says it."""

    def __init__(self, fault: str, message: str) -> None:
        super().__init__(message)
        self.fault = fault
        self.code = FAULTS[fault]


@dataclass
class Report:
    """What the check found, step by step (printed as it goes)."""

    say: Callable[[str], None] = print

    def passed(self, step: str, detail: str) -> None:
        self.say(f"ok   {step}: {detail}")


def run(
    executor_from_settings: Callable[[], OSCARExecutor], report: Report, start_bound: float = START_BOUND
) -> None:
    """Run every step against the executor the settings make; raises :class:`CheckFailed`."""
    try:
        executor = executor_from_settings()
    except (ConfigurationError, OSCARError) as exc:
        raise CheckFailed("settings", str(exc)) from None
    report.passed("settings", f"OSCAR {executor.cluster.endpoint}, deployment {executor.deployment.name!r}")
    _oscar(executor, report)
    storage = _storage(executor, report)
    _services(executor, report, storage)
    conditional = _conditional_writes(executor, storage)
    report.passed(
        "conditional writes",
        "honoured (If-None-Match): each task's output is written once"
        if conditional
        else "ignored by this MinIO (before RELEASE.2024-05-07): claims are written and read back, "
        "and a rare duplicate computation is harmless",
    )
    _quota(executor, report)
    workers = executor.pool_workers()
    report.passed(
        "warm pool",
        f"{len(workers)} live worker(s)"
        if workers
        else "none up: jobs use the file-triggered services (cold)",
    )
    _tiny_job(executor, report, start_bound)


def _oscar(executor: OSCARExecutor, report: Report) -> None:
    try:
        info = executor.cluster.info()
    except OSCARError as exc:
        raise CheckFailed("credentials" if exc.status in (401, 403) else "oscar", str(exc)) from None
    release = executor.cluster.release()
    version = str(info.get("version") or "?")
    if not SUPPORTED[0] <= release <= SUPPORTED[1]:
        raise CheckFailed(
            "release",
            f"OSCAR {version} at {executor.cluster.endpoint} is not a release this client supports "
            "(3.5 to 4.1): see docs/deploy.md, Supported OSCAR releases",
        )
    try:
        executor.cluster.services()  # needs the credentials (/system/info may not)
    except OSCARError as exc:
        raise CheckFailed("credentials", str(exc)) from None
    report.passed("OSCAR", f"release {version}, credentials accepted")


def _storage(executor: OSCARExecutor, report: Report) -> Storage:
    try:
        storage = executor.unchecked_storage()
    except OSCARError as exc:
        raise CheckFailed("oscar", str(exc)) from None
    try:
        storage.check_reachable()
    except StorageError as exc:
        raise CheckFailed(
            "storage",
            f"{exc}: the cluster advertises it, but this client cannot reach it; set MINIO_ENDPOINT "
            "to an address of that MinIO this machine can reach",
        ) from None
    report.passed("storage", f"{storage.config.endpoint} reachable from here")
    return storage


def _services(executor: OSCARExecutor, report: Report, storage: Storage) -> None:
    from . import __version__
    from .protocol.contract import VERSION_VARIABLE

    try:
        executor.cluster.check_deployed(executor.deployment)
    except OSCARError as exc:
        raise CheckFailed("services", str(exc)) from None
    services = executor.cluster.services()
    for definition in executor.deployment.services():
        variables = (services[definition["name"]].get("environment") or {}).get("variables") or {}
        deployed = variables.get(VERSION_VARIABLE)
        if deployed != __version__:
            raise CheckFailed(
                "services",
                f"service {definition['name']} was deployed by distrdf-oscar {deployed or 'of an unknown version'}, "
                f"this client is {__version__}: redeploy (`distrdf-oscar deploy`) or use the matching client",
            )
    try:
        storage.check_buckets()
    except StorageError as exc:
        if _refused(exc):  # the keys, not the deployment: bucket policies are checked before existence
            raise CheckFailed("storage", _refusal(executor, storage, exc, "the keys")) from None
        raise CheckFailed("services", str(exc)) from None
    report.passed("services", f"{len(services)} visible, the deployment's of version {__version__}")


def _conditional_writes(executor: OSCARExecutor, storage: Storage) -> bool:
    """Whether storage honours conditional writes. A plain write is tried first: the probe's answer
    is kept per process and endpoint (whatever the keys), and its clean-up would hide a refused
    write behind a refused delete."""
    import secrets

    from .protocol import layout

    key = layout.probe_key(secrets.token_hex(8))
    try:
        storage.put_bytes(key, b"")
        storage.delete([key])
        return storage.conditional_writes
    except StorageError as exc:
        if _refused(exc):
            raise CheckFailed(
                "conditional writes", _refusal(executor, storage, exc, "this client's writes with the keys")
            ) from None
        raise CheckFailed("conditional writes", f"the probe of conditional writes failed: {exc}") from None


# S3 error codes that refuse the keys or the request, as opposed to naming something missing.
_REFUSALS = PERMANENT_CODES - {"NoSuchBucket", "InvalidBucketName"}


def _refused(exc: StorageError) -> bool:
    """Whether storage refused this client's keys or request (access denied, unknown key, bad
    signature), not a missing bucket nor a transient failure."""
    return getattr(exc.__cause__, "code", None) in _REFUSALS


def _refusal(executor: OSCARExecutor, storage: Storage, exc: StorageError, refused: str) -> str:
    """The line for storage that refuses ``refused`` (``"the keys"``, ``"this client's writes with
    the keys"``): whose keys they are, and what the client needs instead."""
    from .protocol import layout

    if executor.settings.storage is not None:
        keys, fix = "MINIO_ACCESS_KEY and MINIO_SECRET_KEY set", "set keys that"
    else:
        keys, fix = "OSCAR gives you", "ask the cluster's operator for keys that"
    return (
        f"{exc}: the storage refuses {refused} {keys}; {fix} may list, read and write the "
        f"deployment's buckets ({', '.join(layout.buckets(storage.bucket))})"
    )


def _quota(executor: OSCARExecutor, report: Report) -> None:
    from .protocol.plan import TreeReduction

    try:
        executor.check_quota(TreeReduction())
    except ConfigurationError as exc:
        raise CheckFailed("quota", str(exc)) from None
    report.passed("quota", "the functions fit" if executor.cluster.oidc else "basic auth: no per-user quota")


def _tiny_job(executor: OSCARExecutor, report: Report, start_bound: float) -> None:
    """RDataFrame(1000) on two partitions, a Sum, as an analyst's job; it must start in time."""
    import ROOT

    from .client.recovery import JobRemoved, JobTimeout, RemoteError

    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            df = ROOT.RDataFrame(1000, executor=executor, npartitions=2)
            outcome["sum"] = df.Define("x", "double(rdfentry_)").Sum("x").GetValue()
        except Exception as exc:  # noqa: BLE001 (reported below, whatever it is)
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=job, name="check-job", daemon=True)
    thread.start()
    while thread.is_alive() and time.monotonic() - started < start_bound and not _any_started(executor):
        time.sleep(0.5)
    if thread.is_alive() and not _any_started(executor):
        cancelled = _cancel(executor, thread)
        raise CheckFailed(
            "start",
            f"no function of the test job started within {start_bound:g} s{cancelled}: the image may "
            f"still be pulling ({executor.deployment.image}), the cluster may have no free capacity, or "
            "your quota admits nothing; see `distrdf-oscar status` and the OSCAR jobs' events",
        )
    thread.join()
    seconds = time.monotonic() - started
    if "error" in outcome:
        error = outcome["error"]
        # Its functions failed, or never produced their outputs (killed, e.g. out of memory, each
        # time), or it was cancelled meanwhile; anything else kept it from being submitted.
        failed = isinstance(error, (RemoteError, JobTimeout, JobRemoved))
        kind = "the test job failed" if failed else "the test job could not run"
        raise CheckFailed("job", f"{kind}: {str(error).splitlines()[0]}")
    if outcome.get("sum") != 499500.0:
        raise CheckFailed("job", f"the test job gave {outcome.get('sum')!r}, not 499500")
    finished = executor.last_job
    where = "on the warm pool" if finished is not None and finished.pool else "on the file-triggered services"
    report.passed("test job", f"RDataFrame(1000).Sum exact, {seconds:.1f} s {where}")


def _cancel(executor: OSCARExecutor, thread: threading.Thread) -> str:
    """Cancel the test job that did not start, so that nothing of it is left to run once its
    functions can start (``distrdf-oscar cancel``); its client then ends. Says how it went."""
    from .client.live_jobs import cancel

    job = executor.last_job
    if job is None:
        return ""  # not submitted yet: this process's end stops it
    try:
        cancel(executor.storage, job.job_id)
    except StorageError:
        return f" (and could not be cancelled: run `distrdf-oscar cancel {job.job_id}`)"
    thread.join(CANCEL_PATIENCE)
    return f" (job {job.job_id}, now cancelled)"


def _any_started(executor: OSCARExecutor) -> bool:
    """Whether a function got to work on the running test job: a pool worker's claim, a partial
    or the result is there."""
    from .protocol import layout

    job = executor.last_job
    if job is None:
        return False
    keys = job.keys
    return any(
        executor.storage.list(prefix)
        for prefix in (keys.claims, keys.prefix(layout.PARTIALS), keys.prefix(layout.RESULTS))
    )
