"""What a running function knows: its trigger, its output folder, its storage."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..protocol import layout
from ..protocol.contract import REPORTED_EXIT, SIGNING_KEY_VARIABLE
from ..protocol.messages import ErrorMarker
from ..protocol.signing import from_environment
from ..protocol.storage import Storage, StorageConfig, StorageError
from ..protocol.timeline import Recorder, process_start
from . import failpoints
from .invocation import event_time, storage_config, triggering_object

# What publish() did with an object.
WRITTEN = "written"  # ours is the object now stored under the key
TAKEN = "taken"  # a claim found the key already written by another copy of this task
ENDED = "ended"  # the job ended meanwhile: nothing of ours stays


TASK_NOTE = ".dro-task"  # in the invocation's output folder: the key being produced, for a crash report


@dataclass
class FunctionContext:
    service: str
    input_path: str
    key: str  # object key of the trigger, relative to the bucket
    output_dir: str
    storage: Storage
    _task_output: str | None = None
    worker: str = ""  # who runs this invocation: its OSCAR job (JOB_UUID), or a pool worker
    invoked: float | None = None  # the storage event's time, or a pool's claim (epoch seconds)
    started: float | None = None  # when the invocation's process started, if it is a fresh one
    # CPU time of the calling thread only: a pool runs a coordinator in a thread beside its calls
    thread_cpu: bool = False
    _recorded: bool = False

    @property
    def task_output(self) -> str | None:
        """The key this invocation is to produce, once known: error markers name it, and so does
        the report of a crash, read by another process (functions/crash.py) from a note."""
        return self._task_output

    @task_output.setter
    def task_output(self, key: str | None) -> None:
        self._task_output = key
        with open(os.path.join(self.output_dir, TASK_NOTE), "w") as note:
            note.write(key or "")

    def scratch(self, name: str) -> str:
        """A local path for a file this invocation produces."""
        return os.path.join(self.output_dir, name)

    def publish(
        self,
        job_id: str,
        key: str,
        path: str | None = None,
        data: bytes | None = None,
        claim: bool = False,
        failpoint: bool = True,
        keep: bool = False,
    ) -> str:
        """Upload an object of a job ourselves rather than through the supervisor's outputs
        (its outcome is known here, and no bare-bucket output, which OSCAR >= 4.1 rewrites
        to a per-service bucket, is needed).

        With ``claim``, the object is created only if the key is free (conditional write):
        when a task runs twice (duplicate trigger, retry of a straggler) the first copy to
        finish wins and later copies change nothing; the result is TAKEN.

        The client deletes a finished job's manifest before its other objects, so checking
        the manifest *after* the upload and withdrawing the object if it is gone means no
        object outlives its job (ENDED). The file at ``path`` is removed unless ``keep``.
        """
        if failpoint:
            failpoints.reach("before-write")
        if claim:
            if path is not None:
                with open(path, "rb") as f:
                    data = f.read()
                if not keep:
                    os.remove(path)
            if not self.storage.put_if_absent(key, data or b""):
                # Taken by another copy, or by our own first attempt whose answer a cut connection
                # lost; either way it must not outlive the job.
                if self.job_alive(job_id):
                    marker = layout.JobKeys(job_id).duplicate(key, secrets.token_hex(4))
                    self.publish(job_id, marker, data=self.worker.encode(), failpoint=False)
                    return TAKEN
                self.storage.delete([key])
                return ENDED
        elif path is not None:
            self.storage.put_file(key, path)
            if not keep:
                os.remove(path)
        else:
            self.storage.put_bytes(key, data or b"")
        if failpoint:
            failpoints.reach("after-write")
        if self.job_alive(job_id):
            return WRITTEN
        self.storage.delete([key])
        return ENDED

    def recorder(self, role: str) -> Recorder:
        """The phase recorder of the next task this invocation does: the first one counts from
        the event and the process start, later ones (inline merges) from now, when they are
        both invoked and started."""
        first, self._recorded = not self._recorded, True
        counters = lambda: (self.storage.bytes_read, self.storage.bytes_written)
        if first:
            return Recorder(
                role,
                self.worker,
                invoked=self.invoked,
                started=self.started,
                counters=counters,
                thread_cpu=self.thread_cpu,
            )
        now = time.time()
        return Recorder(
            role, self.worker, invoked=now, started=now, counters=counters, thread_cpu=self.thread_cpu
        )

    def job_alive(self, job_id: str) -> bool:
        """Whether the client still waits for the job (its manifest exists)."""
        return self.storage.exists(layout.JobKeys(job_id).manifest)

    def read_input(self) -> bytes:
        """The trigger the supervisor downloaded, once its signature is verified."""
        self.storage.verify_local(self.key, self.input_path)
        with open(self.input_path, "rb") as f:
            return f.read()

    def report_error(self, job_id: str, who: str, exc: BaseException) -> None:
        """Error marker, written directly so the client sees it even if the upload step never runs."""
        # A storage hiccup may pass; an error in the user's code or data would only repeat.
        marker = ErrorMarker.from_exception(
            job_id,
            who,
            self.service,
            self.key,
            self.task_output,
            exc,
            retryable=_retryable(exc),
            worker=self.worker,
        )
        print(marker.traceback, file=sys.stderr, flush=True)
        # Injected kills aim at a task's outputs, not at its error report.
        self.publish(job_id, layout.JobKeys(job_id).error(who), data=marker.to_json(), failpoint=False)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StorageError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))


def noted_task(ctx: FunctionContext) -> str | None:
    """The task output a crashed invocation had noted (see ``task_output``), if any."""
    try:
        with open(os.path.join(ctx.output_dir, TASK_NOTE)) as note:
            return note.read() or None
    except FileNotFoundError:
        return None


def serve(role: str, work: Callable[[FunctionContext], None]) -> int:
    """Run a function's work; any failure becomes an error marker of the job its trigger belongs to.

    The marker is named after the role and the trigger (e.g. ``mapper-000003_000004``), which
    needs nothing from the trigger's content, so an unreadable or refused trigger is reported too.
    """
    bucket, key = triggering_object()
    try:
        ctx = current(bucket, key)
    except Exception as exc:  # noqa: BLE001 - a function that cannot start must still report
        return _report_unconfigured(role, bucket, key, exc)
    job_id = layout.job_of_key(ctx.key)
    try:
        work(ctx)
    except BaseException as exc:
        if job_id is None:
            raise
        ctx.report_error(job_id, layout.JobKeys.reporter(role, ctx.key), exc)
        return REPORTED_EXIT
    finally:
        oscar_job = os.environ.get("JOB_UUID")
        if job_id is not None and oscar_job:
            with contextlib.suppress(StorageError):  # only OSCAR's bookkeeping depends on it
                ctx.publish(
                    job_id, layout.JobKeys(job_id).function_record(role, oscar_job), data=b"", failpoint=False
                )
    return 0


def _report_unconfigured(role: str, bucket: str, key: str, exc: Exception) -> int:
    """The function's settings are incomplete (typically the signing key, a secret that a
    deployment tool dropped): write an unsigned marker, which the client accepts only as a report
    of this kind, so the job fails at once naming the problem rather than timing out."""
    print(f"distrdf-oscar {role}: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    job_id = layout.job_of_key(key)
    if not bucket or job_id is None:
        raise exc
    who = layout.JobKeys.reporter(role, key)
    marker = ErrorMarker.from_exception(
        job_id,
        who,
        os.environ.get("OSCAR_SERVICE_NAME", "?"),
        key,
        None,
        exc,
        retryable=False,
        unconfigured=True,
        worker=os.environ.get("JOB_UUID", ""),
    )
    storage = Storage(storage_config(layout.base_bucket(bucket, key)))
    storage.put_bytes(layout.JobKeys(job_id).error(who), marker.to_json())
    return REPORTED_EXIT


@functools.lru_cache(maxsize=4)
def _storage(config: StorageConfig, key_fingerprint: str) -> Storage:
    # Warm workers reuse the client (and its connection pool) across invocations.
    return Storage(config, signer=from_environment())


def _fingerprint() -> str:
    # Part of the cache key, so a warm worker serving another deployment gets its own signer.
    import hashlib

    return hashlib.sha256(os.environ.get(SIGNING_KEY_VARIABLE, "").encode()).hexdigest()


def current(bucket: str, key: str) -> FunctionContext:
    """The context of an invocation triggered by ``key`` in ``bucket``; the deployment's base bucket
    follows from them (layout.py), so no setting can name a wrong one."""
    if not bucket or not key:
        raise RuntimeError("no triggering object: neither EVENT nor STORAGE_OBJECT_KEY names one")
    invoked = event_time()
    begun = process_start()
    return FunctionContext(
        service=os.environ.get("OSCAR_SERVICE_NAME", "?"),
        input_path=os.environ["INPUT_FILE_PATH"],
        key=key,
        output_dir=os.environ["TMP_OUTPUT_DIR"],
        # The storage keys are part of the cache key: OSCAR mounts those of whoever uploaded the trigger.
        storage=_storage(storage_config(layout.base_bucket(bucket, key)), _fingerprint()),
        worker=os.environ.get("JOB_UUID") or f"pid-{os.getpid()}",
        invoked=invoked,
        # A process older than the event is a warm one: the call starts now, not with it.
        started=begun if begun is not None and (invoked is None or begun >= invoked) else time.time(),
    )
