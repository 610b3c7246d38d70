"""The function runner: schedules invocations on CPU slots and executes them cold or in pre-started workers.

Scheduling follows Kubernetes' rule of requests: the cluster has ``capacity``
CPUs (the platform's ``workers``) and a job starts only when the free capacity
covers its service's ``cpu`` request. Jobs start in submission order (FIFO: a
job that does not fit yet holds back the ones behind it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from minio import Minio

from ...protocol.contract import CRASH_HOOK, ENTRYPOINT_VARIABLE, ENTRYPOINTS, FAILPOINT_VARIABLE
from ...protocol.quantities import parse_quantity
from .accounts import Kueue
from .faults import FaultPlan
from .job_records import FAILED, PENDING, SUCCEEDED, SUSPENDED, Job, JobStore
from .memory import MemoryWatch, group_rss
from .prestarted import (
    PrestartedPool,
    PrestartedWorker,
    WorkerDied,
    report_crash,
)
from .supervisor import Invocation, parse_event
from .validation import DEFAULT_MEMORY, parse_cpu
from .versions import OscarVersion

log = logging.getLogger(__name__)

COLD = "cold"
PRESTARTED = "prestarted"
PRESTARTED_WAIT = (
    30.0  # seconds an invocation waits for a pre-started worker being (re)started before running cold
)


def _kill_group(pid: int, proc: subprocess.Popen[bytes] | None = None, grace: float = 1.0) -> None:
    """SIGTERM a process group, then SIGKILL what is left (as Kubernetes stops a pod)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _memory_limit(job: Job) -> float:
    return parse_quantity(job.service.get("memory") or DEFAULT_MEMORY)


def _oom(job: Job) -> str:
    """What Kubernetes reports for a container killed over its memory limit."""
    return (
        f"OOMKilled: the function exceeded its memory limit of {job.service.get('memory') or DEFAULT_MEMORY}"
    )


class Runner:
    def __init__(
        self,
        *,
        capacity: float,
        mode: str,
        store: JobStore,
        client: Minio,
        jobs_dir: str,
        base_env: dict[str, str],
        config_path: Callable[[str], str],
        prestarted: PrestartedPool | None = None,
        version: OscarVersion,
        credentials: Callable[[Job], tuple[str, str] | None],
        kueue: Kueue | None = None,
        startup_delay: float = 0.0,
        faults: FaultPlan | None = None,
    ) -> None:
        self.capacity = float(capacity)
        self.version = version
        self._credentials = credentials  # the MinIO keys a job's pod mounts; None: its secret is missing
        self._kueue = kueue
        self.mode = mode
        self._store = store
        self._client = client
        self._jobs_dir = jobs_dir
        self._base_env = base_env
        self._config_path = config_path
        self._pool = prestarted
        self._startup_delay = startup_delay
        self._faults = faults or FaultPlan()
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._free = self.capacity
        self._killers: dict[str, Callable[[], None]] = {}
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._dispatcher = threading.Thread(target=self._dispatch, name="runner-dispatch", daemon=True)
        self._dispatcher.start()

    # -- submission and cancellation --------------------------------------------

    def submit(self, service: dict[str, Any], body: bytes, owner: str | None = None) -> Job:
        """A new job; ``owner`` is the OIDC caller of ``/job`` (a storage event names its uploader)."""
        cpu = parse_cpu(service["cpu"])
        if cpu > self.capacity:
            # Kubernetes would leave such a pod pending forever; run it alone instead.
            log.warning(
                "service %s requests %s CPUs, more than the %s available", service["name"], cpu, self.capacity
            )
            cpu = self.capacity
        principal = parse_event(body).principal
        # OSCAR's job-owner label (3.6.5 and later): the uploader of a storage event, else the caller.
        job = self._store.new(service, body, cpu, owner=principal or owner)
        job.cancel = lambda: self._cancel(job)
        if self.version.kueue and self._kueue is not None and Kueue.queued(service):
            # Created suspended for the queue of the service's owner; Kueue starts it when its
            # owner's quota allows (never, for an owner without a queue).
            if not self._kueue.admit(job):
                job.status = SUSPENDED
                job.log(f"Job created suspended for Kueue (service owner {service.get('owner')!r})")
            return job
        self.enqueue(job)
        return job

    def enqueue(self, job: Job) -> None:
        """Schedule a job (Kueue's admission of a suspended one, too)."""
        job.status = PENDING
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()
        log.debug("job %s queued", job.name)

    def _cancel(self, job: Job) -> None:
        job.cancelled = True
        with self._cond:
            killer = self._killers.get(job.name)
            self._cond.notify_all()
        if killer is not None:
            killer()

    # -- scheduling --------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._cond:
            while True:
                while not self._stopping.is_set() and not self._head_ready():
                    self._cond.wait()
                if self._stopping.is_set():
                    return
                job = self._queue.popleft()
                if job.cancelled:
                    job.mark_finished(FAILED)
                    continue
                self._free -= job.cpu
                thread = threading.Thread(target=self._run, args=(job,), name=f"job-{job.name}", daemon=True)
                self._threads.add(thread)
                thread.start()

    def _head_ready(self) -> bool:
        if not self._queue:
            return False
        head = self._queue[0]
        return head.cancelled or head.cpu <= self._free + 1e-9

    def _run(self, job: Job) -> None:
        try:
            self._execute(job)
        finally:
            with self._cond:
                self._free += job.cpu
                self._killers.pop(job.name, None)
                self._threads.discard(threading.current_thread())
                self._cond.notify_all()
            if self._kueue is not None:
                self._kueue.release(job)

    # -- execution ---------------------------------------------------------------

    def _execute(self, job: Job) -> None:
        invocation = Invocation(
            job,
            self._client,
            self._jobs_dir,
            self._base_env,
            self._config_path(job.service_name),
            self.version,
        )
        key = parse_event(job.body).key
        try:
            delay = self._startup_delay
            straggler = self._faults.take("delay", job.service_name, key)
            if straggler is not None:
                job.log(f"Injected fault: starting {straggler.seconds} s late")
                delay += straggler.seconds
            if delay > 0:
                # Like a container being created: the slot is taken, the job still Pending.
                job.log(f"Emulated start-up delay of {delay} s")
                if self._stopping.wait(delay):
                    raise RuntimeError("platform stopping")
            if job.cancelled:
                raise RuntimeError("job deleted before it started")
            keys = self._credentials(job)
            if keys is None:
                # The pod mounts the MinIO secret named after the uploader, which does not exist:
                # Kubernetes keeps it in ContainerCreating until the job is deleted.
                job.log("MountVolume.SetUp failed: the MinIO secret for this uploader does not exist")
                while not job.cancelled and not self._stopping.wait(0.5):
                    pass
                raise RuntimeError("job deleted while its pod waited for a missing secret")
            job.mark_running()
            env = invocation.prepare(keys)
            failpoint = self._faults.arm_kill(job.service_name, key)
            if failpoint is not None:
                job.log(f"Injected fault: the function dies if it reaches {failpoint.split(':')[0]}")
                env[FAILPOINT_VARIABLE] = failpoint
            entrypoint = job.service["environment"]["variables"].get(ENTRYPOINT_VARIABLE, "")
            worker = (
                self._pool.acquire(wait=PRESTARTED_WAIT)
                if (self.mode == PRESTARTED and entrypoint and self._pool)
                else None
            )
            if worker is not None:
                self._run_prestarted(job, worker, entrypoint, env, invocation)
            else:
                if self.mode == PRESTARTED and entrypoint:
                    job.log("No idle pre-started worker: running the script cold")
                self._run_cold(job, env, invocation)
            invocation.flush_output()
            if job.cancelled:
                raise RuntimeError("job deleted while running")
            invocation.upload_outputs()
            status = SUCCEEDED
        except Exception as err:  # noqa: BLE001 - any failure fails this job only
            job.log(f"ERROR: {err}")
            status = FAILED
            log.info("job %s failed: %s", job.name, err)
        finally:
            # The pod's volumes go with it: a finished job has no invocation directory left.
            invocation.cleanup()
        job.mark_finished(status)

    def _run_cold(self, job: Job, env: dict[str, str], invocation: Invocation) -> None:
        script = os.path.join(invocation.dir, "script.sh")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(job.service["script"])
        # As OSCAR's supervisor does: /bin/sh, whatever the script's first line says.
        job.log(f"Running the script with /bin/sh (cold start, job {job.name})")
        with open(job.log_path if invocation.live_output else invocation.output_log, "ab") as out:
            # Own session: the whole group can be killed, like a pod's processes.
            proc = subprocess.Popen(
                ["/bin/sh", script],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=invocation.work_dir,
                env=env,
                start_new_session=True,
            )
        self._set_killer(job, lambda: _kill_group(proc.pid, proc))
        with MemoryWatch(proc.pid, _memory_limit(job)) as memory:
            code = proc.wait()
        # The container ends with its main process: background children go too.
        _kill_group(proc.pid)
        if memory.exceeded:
            raise RuntimeError(_oom(job))
        job.log(f"Script exited with code {code} (ignored, as OSCAR's supervisor does)")

    def _run_prestarted(
        self, job: Job, worker: PrestartedWorker, entrypoint: str, env: dict[str, str], invocation: Invocation
    ) -> None:
        assert self._pool is not None
        job.log(f"Calling {entrypoint} in pre-started worker {worker.pid} (job {job.name})")
        self._set_killer(job, worker.kill)
        log = job.log_path if invocation.live_output else invocation.output_log
        # A pre-started worker's dataset cache outlives its calls (the invocation's TMPDIR does not).
        cache = os.path.join(os.path.dirname(self._jobs_dir), "worker-caches", str(worker.pid))
        task = {
            "entrypoint": entrypoint,
            "env": {**env, "DRO_CACHE_DIR": cache},
            "cwd": invocation.work_dir,
            "log": log,
        }
        # The worker's own memory (ROOT imported) is not the function's: only what the call adds counts.
        try:
            with MemoryWatch(worker.pid, _memory_limit(job), baseline=group_rss(worker.pid)) as memory:
                result = worker.call(task)
        except WorkerDied as died:
            self._pool.replace(worker)
            if memory.exceeded:
                raise RuntimeError(_oom(job)) from None
            # The service script reports a crash of our functions; without it, the contract's hook does.
            entrypoint = job.service["environment"]["variables"].get(ENTRYPOINT_VARIABLE, "")
            hook = CRASH_HOOK if entrypoint in ENTRYPOINTS.values() else None
            # SIGKILL comes from outside (the platform, a lost node): nothing the function did.
            if hook and died.status is not None and died.status != -signal.SIGKILL and not job.cancelled:
                report_crash(hook, env, invocation.work_dir, log, died.status, self._pool.package_root)
                invocation.flush_output()
            raise
        # Forget the killer before the worker can serve another job.
        self._set_killer(job, None)
        self._pool.release(worker)
        job.log(f"Entry point {result['outcome']} (ignored, as OSCAR's supervisor ignores exit codes)")

    def _set_killer(self, job: Job, killer: Callable[[], None] | None) -> None:
        with self._cond:
            if killer is None:
                self._killers.pop(job.name, None)
                return
            self._killers[job.name] = killer
        if job.cancelled or self._stopping.is_set():
            killer()

    # -- shutdown ----------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Kill every running function and wait for the job threads to end."""
        with self._cond:
            self._stopping.set()
            for job in self._queue:
                job.cancelled = True
            self._queue.clear()
            killers = list(self._killers.values())
            threads = list(self._threads)
            self._cond.notify_all()
        for killer in killers:
            killer()
        self._dispatcher.join(timeout)
        for thread in threads:
            thread.join(timeout)
