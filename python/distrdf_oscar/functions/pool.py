"""A warm pool worker: the script of an OSCAR *exposed* service, run once for the pod's life.

OSCAR runs an exposed service as a Kubernetes Deployment (``pkg/backends/resources/expose.go``):
each replica runs the service script once and must answer HTTP probes on the service's first
``api_port``. A worker takes work from the deployment's ``queue/`` folder, which no webhook
watches, so no OSCAR job is started for it: mapper calls, coordinated jobs' coordinators and their
batch merges. It claims each item with a conditional write (the file-triggered mapper that the
client may overflow a call to claims the same key, so a call is computed once).

The worker is a **warm parent** that never runs user code: it imports ROOT, jits a warm-up graph,
and forks one process per job (``job_process.py``) that serves the job's items and exits with it.
Every job therefore sees what a fresh ROOT process would, and a crash in user code takes down only
its job's process: the parent sees it at once, retries the item once in a fresh process, then
reports the crash (the signal and the output's last lines) to the client. The parent is
single-threaded, as forking requires: one loop answers the probes, rewrites the heartbeat
(``pools.py``), reads the wake-ups of the queue watcher (``queue_watch.py``), lists the queue,
claims and hands out items, and reaps its children. It computes one item at a time (a pod has one
core), taking jobs in turn so that one job's backlog never starves another, and drops the items
and process of a job whose client is gone (its manifest removed or its lease lapsed).

An exposed pod gets the service's secrets as environment variables but not the MinIO keys
OSCAR mounts into its jobs (``job.go`` only), so the pool's storage keys are secrets of its
service (``DRO_STORAGE_ACCESS_KEY``/``DRO_STORAGE_SECRET_KEY``, see ``protocol/contract.py``).
"""

from __future__ import annotations

import contextlib
import http.server
import math
import os
import secrets
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..protocol import layout
from ..protocol.contract import POOL_BUCKET_VARIABLE, POOL_PORT_VARIABLE, POOL_SERVICE_VARIABLE
from ..protocol.leases import server_now
from ..protocol.messages import Batch, ErrorMarker, Heartbeat, Lease, MapperTrigger, MessageError
from ..protocol.plan import CoordinatedPlan
from ..protocol.signing import SignatureError, from_environment
from ..protocol.storage import Storage, StorageError
from . import crash, invocation, job_process, queue_watch

HEARTBEAT_PERIOD = 2.0  # seconds between heartbeats
HEARTBEAT_TTL = (
    5.0  # a heartbeat older than this (server clock) is a dead worker's: clients offer its calls again
)
LIST_EVERY = 5.0  # seconds between listings of the queue while the watcher's notifications flow (lost events)
LIST_WITHOUT_EVENTS = 1.0  # ... and when the storage offers none
LIVENESS_EVERY = 2.0  # seconds between checks that the jobs being served still have a client
LOOK_AGAIN = 10.0  # seconds after which a batch file still queued is looked at again
CLOCK_EVERY = 60.0  # seconds between measures of the storage server's clock
MAX_PROCESSES = 3  # job processes, spare ones included
SPARE_MEMORY = 200.0  # MB of its own (not shared with the parent) beyond which a process is not kept
# (a trivial job's process holds about 105 MB of its own: the pages of the parent it wrote, its JIT)
STOP_GRACE = 20.0  # seconds to finish the calls under way after SIGTERM (Kubernetes grants 30)


def _is_batch(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith("batch_")


def _exit_status(status: int) -> int:
    """A wait status as a shell reports it (crash.describe reads that): -N for signal N."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


class _Probes(http.server.HTTPServer):
    """Answers Kubernetes' startup, readiness and liveness probes: 200 while the worker lives.
    Served from the worker's loop, one request at a time (no thread)."""

    timeout = 1.0

    def server_bind(self) -> None:
        # Replicas of one host (the embedded platform) share the port; in a pod it changes nothing.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    # A TCPServer's requests are sockets (typeshed: BaseServer's, TCP or UDP, are socket | (bytes, socket)).
    def finish_request(self, request: socket.socket, client_address: Any) -> None:  # type: ignore[override]
        request.settimeout(self.timeout)  # a silent prober must not stall the worker
        super().finish_request(request, client_address)


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes come every few seconds: no log
        pass


@dataclass
class _JobProcess:
    """The parent's view of one job's process."""

    job_id: str
    spawned: job_process.Spawned
    busy: str | None = None  # the queued item it computes
    coordinating: set[str] = field(default_factory=set)  # coordinator items running in it
    sent: dict[str, bytes] = field(default_factory=dict)  # items handed to it and not finished: key -> body
    ending: bool = False  # the parent ended it (its job is gone): no crash report
    last_used: float = 0.0
    environment: str = ""  # what its jobs declare (MapperTrigger.environment): "" hands it on to none


class PoolWorker:
    def __init__(self, storage: Storage, service: str, scratch: str, probe_fd: int | None = None) -> None:
        self.storage = storage
        self.probe_fd = probe_fd  # the probes' socket, which job processes close
        self.service = service
        self.scratch = scratch
        self.worker = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.served = 0
        self.stopping = False
        self.processes: dict[str, _JobProcess] = {}  # job id -> its process
        self._ended: list[_JobProcess] = []  # processes told to end, not yet reaped
        # environment -> the process of a job that ended, kept for the next job declaring the same (one)
        self.spare: dict[str, _JobProcess] = {}
        self.queued: list[str] = []  # the queue's items as last listed, not yet passed
        self._passed: dict[str, float] = {}  # queue keys claimed (by us or others) or refused -> when
        self._crashes: dict[str, int] = {}  # queued item -> crashes of its process
        self._turns: dict[str, float] = {}  # job id -> when this worker last took one of its items
        self._alive: dict[str, tuple[float, bool]] = {}  # job id -> (when checked, whether its client waits)
        self._clock: tuple[float, float] | None = None  # (when measured, storage server's clock - ours)
        self._beat_at = -math.inf
        self._listed_at = -math.inf
        self._wake = True
        self._events = True  # whether the watcher's notifications flow
        self._watcher: tuple[int, int] | None = None  # its pid and pipe

    # -- the loop ------------------------------------------------------------------------------
    def serve(self, probes: _Probes) -> None:
        """Serve until asked to stop (SIGTERM, as Kubernetes stops a pod)."""
        self._start_watcher()
        try:
            while not self.stopping:
                self._turn(probes)
            # Asked to stop: finish the calls under way within the pod's grace period (no new
            # ones are taken); what is left is offered again by the clients once the heartbeat goes.
            deadline = time.monotonic() + STOP_GRACE
            while not self._free() and time.monotonic() < deadline:
                self._turn(probes)
        finally:
            for process in self._live():
                self._end(process)
            if self._watcher is not None:
                with contextlib.suppress(OSError):
                    os.kill(self._watcher[0], signal.SIGKILL)
            with contextlib.suppress(StorageError):
                self.storage.delete([layout.pool_heartbeat(self.worker)])

    def _turn(self, probes: _Probes) -> None:
        now = time.monotonic()
        if now - self._beat_at >= HEARTBEAT_PERIOD:
            self.heartbeat()
        readable = [probes.socket.fileno(), *(p.spawned.conn.fileno() for p in self._live())]
        if self._watcher is not None:
            readable.append(self._watcher[1])
        # While a call computes, the queue is not listed (nothing could be taken): only the heartbeat,
        # the probes and the processes wake the parent, which must not take the core from the call.
        wake_at = self._beat_at + HEARTBEAT_PERIOD
        if self._free():
            wake_at = min(wake_at, time.monotonic() if self._wake else self._next_listing())
        wait = max(0.0, wake_at - time.monotonic())
        try:
            ready, _, _ = select.select(readable, [], [], wait)
        except InterruptedError:
            return
        if probes.socket.fileno() in ready:
            probes.handle_request()
        if self._watcher is not None and self._watcher[1] in ready:
            self._read_watcher()
        for process in self._live():
            if process.spawned.conn.fileno() in ready:
                self._read_process(process)
        self._reap()
        if self.stopping:
            return
        self._check_jobs()
        if self._free() and (self._wake or time.monotonic() >= self._next_listing()):
            self._list_queue()
        self._dispatch()

    def _live(self) -> list[_JobProcess]:
        return [*self.processes.values(), *self.spare.values()]

    def _next_listing(self) -> float:
        return self._listed_at + (LIST_EVERY if self._events else LIST_WITHOUT_EVENTS)

    def _free(self) -> bool:
        """No item computing here (coordinators only watch, and do not count)."""
        return all(process.busy is None for process in self.processes.values())

    def heartbeat(self) -> None:
        self._beat_at = time.monotonic()
        with contextlib.suppress(StorageError):  # a storage hiccup: the next beat will do
            self.storage.put_bytes(
                layout.pool_heartbeat(self.worker),
                Heartbeat(self.worker, HEARTBEAT_TTL, self.served, tuple(sorted(self.processes))).to_json(),
            )

    # -- the queue ------------------------------------------------------------------------------
    def _start_watcher(self) -> None:
        self._watcher = queue_watch.start(self._storage_factory())

    def _storage_factory(self) -> Callable[[], Storage]:
        config, signer = self.storage.config, self.storage.signer
        return lambda: Storage(config, signer=signer)

    def _read_watcher(self) -> None:
        assert self._watcher is not None
        data = queue_watch.drain(self._watcher[1])
        if queue_watch.EVENT in data:
            self._wake = True
        if queue_watch.NO_EVENTS in data or not data:  # no notifications here, or the watcher died
            self._events = False  # the queue is listed every LIST_WITHOUT_EVENTS from now on
            pid, pipe = self._watcher
            os.close(pipe)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._watcher = None

    def _list_queue(self) -> None:
        self._wake = False
        self._listed_at = time.monotonic()
        try:
            listed = self.storage.list(layout.QUEUE + "/")
        except StorageError as exc:
            print(f"pool worker: cannot list the queue: {exc}", file=sys.stderr, flush=True)
            return
        # A key gone from the queue is forgotten: a call offered again under it (its worker died) is
        # new. A batch file stays queued: it is looked at again after a while, in case the worker
        # that claimed it died and a client removed its claim.
        now = time.monotonic()
        self._passed = {
            key: when
            for key, when in self._passed.items()
            if key in listed and not (_is_batch(key) and now - when > LOOK_AGAIN)
        }
        self.queued = [
            key for key in listed if key not in self._passed and layout.job_of_key(key) is not None
        ]
        waiting = {layout.job_of_key(key) for key in self.queued}
        for job_id, process in list(self.processes.items()):
            # A job with nothing left queued needs its process no more, once it is idle.
            if job_id not in waiting and process.busy is None and not process.coordinating:
                self._keep_or_end(process)

    def _dispatch(self) -> None:
        """Start every queued coordinator, then take one item if none is computing here: from
        the job whose turn it is (the one this worker served least recently), batches first (they
        are on the job's critical path)."""
        for key in [k for k in self.queued if k.endswith("/" + layout.COORDINATOR_ITEM)]:
            self._take(key)
        if not self._free() or self.stopping:
            return
        while self.queued:
            key = min(self.queued, key=self._order)
            if self._take(key):
                return

    def _order(self, key: str) -> tuple[float, str, bool, str]:
        job_id = layout.job_of_key(key) or ""
        return self._turns.get(job_id, -math.inf), job_id, not _is_batch(key), key

    def _take(self, key: str) -> bool:
        """Claim the queued item ``key`` and hand it to its job's process; True if it was."""
        self._pass(key)
        job_id = layout.job_of_key(key)
        assert job_id is not None
        known = self._alive.get(job_id)
        if known is not None and not known[1]:  # its client is gone (a freshly queued item needs no look)
            return False
        claim = layout.JobKeys(job_id).claim_of(key)
        batch = _is_batch(key)
        try:
            body = self.storage.get_bytes(key)
            item = job_process.parse_item(key, body)
        except StorageError:
            return False  # taken (and removed) by another worker since the listing
        except (SignatureError, MessageError) as exc:
            # Not the client's or the coordinator's: never run it. Their retries cover their own items.
            print(f"pool worker: refusing {key}: {exc}", file=sys.stderr, flush=True)
            return False
        try:
            if not self.storage.put_if_absent(claim, self.worker.encode()) and not self._ours(claim):
                if not batch:  # computed elsewhere (its overflow): nothing left to offer
                    with contextlib.suppress(StorageError):
                        self.storage.delete([key])
                return False
            if not batch:
                self.storage.delete([key])  # a batch file stays: the job's record of what it merges
        except StorageError as exc:
            print(f"pool worker: cannot claim {key}: {exc}", file=sys.stderr, flush=True)
            return False
        self._send(job_id, key, body, item)
        return True

    def _ours(self, claim: str) -> bool:
        """Whether a claim found taken is our own: a retried PUT whose first attempt landed but
        whose answer a cut connection lost finds the key taken, by us."""
        try:
            return self.storage.get_bytes(claim, verify=False) == self.worker.encode()
        except StorageError:
            return False

    def _pass(self, key: str) -> None:
        """Look at ``key`` no more while it stays queued (batch files: for LOOK_AGAIN)."""
        self._passed[key] = time.monotonic()
        with contextlib.suppress(ValueError):
            self.queued.remove(key)

    # -- job processes --------------------------------------------------------------------------
    def _send(self, job_id: str, key: str, body: bytes, item: job_process.Item) -> None:
        environment = item.environment if isinstance(item, MapperTrigger) else ""
        process = self.processes.get(job_id) or self._hand_on(job_id, environment) or self._spawn(job_id)
        if environment and not process.environment:
            process.environment = environment
        process.sent[key] = body
        process.last_used = time.monotonic()
        if key.endswith("/" + layout.COORDINATOR_ITEM):
            process.coordinating.add(key)
        else:
            process.busy = key
            self._turns[job_id] = time.monotonic()
        with contextlib.suppress(OSError):  # it died meanwhile: reaping it retries the item
            process.spawned.conn.send(("item", key, body))

    def _hand_on(self, job_id: str, environment: str) -> _JobProcess | None:
        """The spare process of a job that declared exactly what this one declares, now this job's."""
        process = self.spare.pop(environment, None) if environment else None
        if process is None:
            return None
        process.job_id = job_id
        self.processes[job_id] = process
        with contextlib.suppress(OSError):
            process.spawned.conn.send(("job", job_id, b""))
        return process

    def _keep_or_end(self, process: _JobProcess) -> None:
        """A process whose job has nothing left here: kept for a later job that declares the same
        (its initialize functions, C++ code and distributed files), unless it holds much memory of
        its own; else ended."""
        own = job_process.private_mb(process.spawned.pid)
        if not process.environment or own > SPARE_MEMORY:
            print(f"pool worker: job {process.job_id}'s process ends ({own:.0f} MB of its own)", flush=True)
            self._end(process)
            return
        del self.processes[process.job_id]
        for older in list(self.spare.values()):  # one spare at most: the newest
            del self.spare[older.environment]
            self._ended.append(older)
            job_process.close_quietly(older.spawned.conn)
        process.last_used = time.monotonic()
        self.spare[process.environment] = process

    def _spawn(self, job_id: str) -> _JobProcess:
        while len(self._live()) >= MAX_PROCESSES and self.spare:
            oldest = min(self.spare.values(), key=lambda p: p.last_used)
            del self.spare[oldest.environment]
            self._ended.append(oldest)
            job_process.close_quietly(oldest.spawned.conn)
        idle = [p for p in self.processes.values() if p.busy is None and not p.coordinating]
        while len(self._live()) >= MAX_PROCESSES and idle:
            self._end(min(idle, key=lambda p: p.last_used))
            idle = [p for p in self.processes.values() if p.busy is None and not p.coordinating]
        inherited = [p.spawned.conn.fileno() for p in self._live()]
        if self.probe_fd is not None:
            inherited.append(self.probe_fd)
        if self._watcher is not None:
            inherited.append(self._watcher[1])
        spawned = job_process.spawn(
            job_id, self.service, self.worker, self._storage_factory(), self.scratch, inherited
        )
        process = self.processes[job_id] = _JobProcess(job_id, spawned, last_used=time.monotonic())
        return process

    def _read_process(self, process: _JobProcess) -> None:
        while True:
            try:
                if not process.spawned.conn.poll():
                    return
                kind, key = process.spawned.conn.recv()
            except (EOFError, OSError):
                return  # it ended: _reap sees it
            if kind == "done":
                process.busy = None
                process.sent.pop(key, None)
                self._crashes.pop(key, None)
                self.served += 1
            elif kind == "coordinator-done":
                process.coordinating.discard(key)
                process.sent.pop(key, None)
                self._crashes.pop(key, None)

    def _end(self, process: _JobProcess) -> None:
        """End a job's process: its connection closed (it exits when idle), killed if its job is gone."""
        if self.processes.get(process.job_id) is process:
            del self.processes[process.job_id]
        if self.spare.get(process.environment) is process:
            del self.spare[process.environment]
        if process.ending:
            with contextlib.suppress(OSError):
                os.kill(process.spawned.pid, signal.SIGKILL)
        job_process.close_quietly(process.spawned.conn)
        self._ended.append(process)

    def _reap(self) -> None:
        """Collect ended processes; a crash of one that was computing is retried once, then reported."""
        for process in [*self._live(), *self._ended]:
            try:
                pid, status = os.waitpid(process.spawned.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = process.spawned.pid, 0
            if pid == 0:
                continue
            if self.processes.get(process.job_id) is process:
                del self.processes[process.job_id]
            if self.spare.get(process.environment) is process:
                del self.spare[process.environment]
            with contextlib.suppress(ValueError):
                self._ended.remove(process)
            output = _tail(process.spawned.output)
            if output:
                print(f"--- output of job {process.job_id}'s process ---\n{output}", flush=True)
            shutil.rmtree(process.spawned.workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.remove(process.spawned.output)
            if process.ending or not process.sent:
                continue
            self._crashed(process, _exit_status(status), output)

    def _crashed(self, process: _JobProcess, status: int, output: str) -> None:
        how = crash.describe(status, output)
        print(
            f"pool worker: job {process.job_id}'s process ended abnormally ({how})",
            file=sys.stderr,
            flush=True,
        )
        for key, body in process.sent.items():
            crashes = self._crashes[key] = self._crashes.get(key, 0) + 1
            if crashes == 1:
                self._send(process.job_id, key, body, job_process.parse_item(key, body))  # once more, afresh
                continue
            self._crashes.pop(key, None)
            self._report_crash(process.job_id, key, body, how, output)

    def _report_crash(self, job_id: str, key: str, body: bytes, how: str, output: str) -> None:
        item = job_process.parse_item(key, body)
        role, task = (
            ("coordinator", item.batch_file(len(item.sizes) - 1))
            if isinstance(item, CoordinatedPlan)
            else ("batch", item.output)
            if isinstance(item, Batch)
            else ("mapper", item.output)
        )
        who = layout.JobKeys.reporter(role, key)
        marker = ErrorMarker(
            job=job_id,
            who=who,
            service=self.service,
            trigger=key,
            output=task,
            retryable=False,
            error=f"the {role} process crashed with {how} twice, each time in a "
            f"fresh process of the warm pool{_HINTS.get(how, '')}",
            traceback=crash.summary(output),
            crash=how,
            worker=self.worker,
        )
        with contextlib.suppress(StorageError):
            self.storage.put_bytes(layout.JobKeys(job_id).error(who), marker.to_json())

    # -- jobs whose client is gone ------------------------------------------------------------------
    def _job_alive(self, job_id: str) -> bool:
        """Whether a client still waits for the job: its manifest exists and its lease has not
        lapsed (read on the storage server's clock). Looked at once per LIVENESS_EVERY."""
        checked = self._alive.get(job_id)
        if checked is not None and time.monotonic() - checked[0] < LIVENESS_EVERY:
            return checked[1]
        keys = layout.JobKeys(job_id)
        try:
            alive = self.storage.exists(keys.manifest)
            if alive:
                lease = self.storage.modified(keys.lease).get(keys.lease)
                if lease is not None:
                    ttl = Lease.from_json(self.storage.get_bytes(keys.lease)).ttl
                    alive = self._server_time() - lease < ttl
        except (StorageError, MessageError, SignatureError):
            return checked[1] if checked is not None else True  # unknown: as last seen
        self._alive[job_id] = (time.monotonic(), alive)
        if len(self._alive) > 10_000:
            self._alive.clear()
        return alive

    def _server_time(self) -> float:
        """The storage server's clock (leases are read on it), measured at most every CLOCK_EVERY."""
        if self._clock is None or time.monotonic() - self._clock[0] > CLOCK_EVERY:
            self._clock = (time.monotonic(), server_now(self.storage) - time.time())
        return time.time() + self._clock[1]

    def _check_jobs(self) -> None:
        """Drop the jobs being served here whose client is gone: their process killed, their
        queued items removed."""
        for job_id, process in list(self.processes.items()):
            if not self._job_alive(job_id):
                print(f"pool worker: job {job_id} has no client any more: its process ends", flush=True)
                process.ending = True
                self._end(process)
                with contextlib.suppress(StorageError):
                    self.storage.delete_prefix(layout.JobKeys(job_id).prefix(layout.QUEUE))


_HINTS = {"SIGKILL": " (a process over the pod's memory limit is killed so: see the pool service's memory)"}


def _tail(path: str) -> str:
    with contextlib.suppress(OSError), open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - crash.TAIL_BYTES))
        return handle.read().decode("utf-8", errors="replace").strip()
    return ""


def main() -> int:
    port = int(os.environ.get(POOL_PORT_VARIABLE, "8080"))
    probes = _Probes(("", port), _Healthy)
    config = invocation.storage_config(os.environ[POOL_BUCKET_VARIABLE])
    scratch = tempfile.mkdtemp(prefix="dro-pool-")
    worker = PoolWorker(
        Storage(config, signer=from_environment()),
        os.environ.get(POOL_SERVICE_VARIABLE, "pool"),
        scratch,
        probes.socket.fileno(),
    )

    def stop(*_: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    # Imported once, with a warm-up graph jitted, before the first job's process is forked from here.
    from ROOT._distrdf.Backends import Base  # noqa: F401

    from ..protocol import datasets

    job_process.warm_up(scratch)
    datasets.process_cache("datasets")  # made here: every job's process shares the staged files
    print(f"pool worker {worker.worker} ready on port {port}", flush=True)
    try:
        worker.serve(probes)
    finally:
        probes.server_close()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
