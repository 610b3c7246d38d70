"""A warm pool worker: the script of an OSCAR *exposed* service, run once for the pod's life.

OSCAR runs an exposed service as a Kubernetes Deployment (``pkg/backends/resources/expose.go``):
each replica runs the service script once and must answer HTTP probes on the service's first
``api_port``. A worker imports ROOT once and then takes work from the deployment's ``queue/``
folder, which no webhook watches, so no OSCAR job is started for it: mapper calls, coordinated
jobs' coordinators (run in a thread beside the calls, since they only watch storage) and their
batch merges. It claims each item with a conditional write first (the file-triggered mapper that
the client may overflow a call to claims the same key, so a call is computed once), keeps
DistRDF's graph cache, the payloads and the staged datasets between calls, and rewrites a
heartbeat object so that clients know a pool is up (``pools.py``). A worker that dies
leaves its claimed call to the client's retries, which go to the file-triggered services.

An exposed pod gets the service's secrets as environment variables but not the MinIO keys
OSCAR mounts into its jobs (``job.go`` only), so the pool's storage keys are secrets of its
service (``DRO_STORAGE_ACCESS_KEY``/``DRO_STORAGE_SECRET_KEY``, see ``contract.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from .. import layout
from ..messages import Batch, Heartbeat, MapperTrigger, MessageError
from ..plan import CoordinatedPlan, expect_plan
from ..signing import SignatureError, from_environment
from ..storage import Storage, StorageError
from . import context, contract

PORT_VARIABLE = "DRO_POOL_PORT"  # the service's api_port, which the worker serves the probes on
BUCKET_VARIABLE = "DRO_BUCKET"  # the deployment's base bucket
SERVICE_VARIABLE = "DRO_POOL_SERVICE"  # the pool service's name, for error reports
HEARTBEAT_PERIOD = 5.0  # seconds between heartbeats
HEARTBEAT_TTL = 20.0  # a heartbeat older than this (server clock) is a dead worker's
IDLE_POLL = 0.1  # seconds between looks at an empty queue


class _Probes(http.server.ThreadingHTTPServer):
    """Answers Kubernetes' startup, readiness and liveness probes: 200 while the worker lives."""

    daemon_threads = True

    def server_bind(self) -> None:
        # Replicas of one host (the embedded platform) share the port; in a pod it changes nothing.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # probes come every few seconds: no log
        pass


class PoolWorker:
    def __init__(self, storage: Storage, service: str) -> None:
        self.storage = storage
        self.service = service
        self.worker = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.served = 0
        self.stopping = threading.Event()
        self._passed: set[str] = set()  # queue keys claimed (by us or others) or refused
        self._beat_lock = threading.Lock()

    def heartbeat(self) -> None:
        with self._beat_lock:
            self.storage.put_bytes(layout.pool_heartbeat(self.worker),
                                   Heartbeat(self.worker, HEARTBEAT_TTL, self.served).to_json())

    def _beat_forever(self) -> None:
        while not self.stopping.wait(HEARTBEAT_PERIOD):
            with contextlib.suppress(StorageError):  # a storage hiccup: the next beat will do
                self.heartbeat()

    def serve(self) -> None:
        """Take queued calls until asked to stop (SIGTERM, as Kubernetes stops a pod)."""
        self.heartbeat()
        threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True).start()
        try:
            while not self.stopping.is_set():
                try:
                    queued = self.storage.list(layout.QUEUE + "/")
                except StorageError as exc:
                    print(f"pool worker: cannot list the queue: {exc}", file=sys.stderr, flush=True)
                    queued = []
                took = False
                # Coordinators first (they only watch storage, in a thread); then the oldest job's
                # items first: job ids sort by creation time.
                queued.sort(key=lambda key: not key.endswith("/" + layout.COORDINATOR_ITEM))
                jobs = sorted({job for key in queued if (job := layout.job_of_key(key)) is not None})
                for key in queued:
                    if self.stopping.is_set():
                        break
                    if self.take(key):
                        took = True
                        self._take_batches(jobs)
                if not took:
                    self.stopping.wait(IDLE_POLL)
        finally:
            with contextlib.suppress(StorageError):
                self.storage.delete([layout.pool_heartbeat(self.worker)])

    def _take_batches(self, jobs: list[str]) -> None:
        """Between two calls, merge the batches the listed jobs' coordinators launched since the
        listing: a batch is on its job's critical path, and waiting for the end of the pass would
        leave every merge to the end of the mapping. One listing per job, of its batches only."""
        for job in jobs:
            try:
                batches = self.storage.list(layout.JobKeys(job).queued_batch_prefix)
            except StorageError:
                continue  # the next pass lists them again
            for key in batches:
                if self.stopping.is_set():
                    return
                self.take(key)

    def take(self, key: str) -> bool:
        """Claim and compute the queued item ``key`` (a mapper call, a coordinated job's batch, or
        its coordinator, started in a thread); True if a call or batch was computed here."""
        job_id = layout.job_of_key(key)
        if job_id is None or key in self._passed:
            return False
        claim = layout.JobKeys(job_id).claim_of(key)
        name = key.rsplit("/", 1)[-1]
        batch = name.startswith("batch_")
        try:
            body = self.storage.get_bytes(key)
            item: MapperTrigger | Batch | CoordinatedPlan = (
                expect_plan(body, CoordinatedPlan, f"pool worker taking {key}") if name == layout.COORDINATOR_ITEM
                else Batch.from_json(body) if batch else MapperTrigger.from_json(body))
        except StorageError:
            return False  # taken (and removed) by another worker since the listing
        except (SignatureError, MessageError) as exc:
            # Not the client's or the coordinator's: never run it. Their retries cover their own items.
            print(f"pool worker: refusing {key}: {exc}", file=sys.stderr, flush=True)
            self._pass(key)
            return False
        if not self.storage.put_if_absent(claim, self.worker.encode()):
            self._pass(key)
            if not batch:  # computed elsewhere (its overflow): nothing left to offer
                with contextlib.suppress(StorageError):
                    self.storage.delete([key])
            return False
        self._pass(key)
        if not batch:
            self.storage.delete([key])  # a batch file stays: the job's record of what it merges
        if isinstance(item, CoordinatedPlan):
            threading.Thread(target=self._compute, args=(key, job_id, item), name=f"coordinator-{job_id}",
                             daemon=True).start()
            return False  # the worker goes on taking calls meanwhile
        self._compute(key, job_id, item)
        self.served += 1
        return True

    def _pass(self, key: str) -> None:
        """Remember an item never to look at again (batch files stay in the queue)."""
        if len(self._passed) > 100_000:
            self._passed.clear()
        self._passed.add(key)

    def _compute(self, key: str, job_id: str, item: MapperTrigger | Batch | CoordinatedPlan) -> None:
        from . import coordinator, mapper
        from .merging import merge_keys

        scratch = tempfile.mkdtemp(prefix="dro-pool-")
        now = time.time()  # the claim was just won: the call is invoked and starts now
        ctx = context.FunctionContext(service=self.service, input_path="", key=key, output_dir=scratch,
                                      storage=self.storage, worker=self.worker, invoked=now, started=now,
                                      thread_cpu=True)
        role = "batch" if isinstance(item, Batch) else "coordinator" if isinstance(item, CoordinatedPlan) else "mapper"
        try:
            if isinstance(item, CoordinatedPlan):
                coordinator.run(ctx, item)
            elif isinstance(item, Batch):
                merge_keys(ctx, item.job, list(item.inputs), item.output, role="batch")
            else:
                # The claim is ours: a copy that finds it taken skips the call, so computing it must not.
                mapper.run(ctx, dataclasses.replace(item, claim=""))
        except Exception as exc:  # noqa: BLE001 - reported to the job's client like any function's
            with contextlib.suppress(StorageError):
                ctx.report_error(job_id, layout.JobKeys.reporter(role, key), exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    port = int(os.environ.get(PORT_VARIABLE, "8080"))
    probes = _Probes(("", port), _Healthy)
    threading.Thread(target=probes.serve_forever, name="probes", daemon=True).start()
    config = contract.storage_config(os.environ[BUCKET_VARIABLE])
    worker = PoolWorker(Storage(config, signer=from_environment()), os.environ.get(SERVICE_VARIABLE, "pool"))
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    import ROOT  # noqa: F401 - imported once, before the first call, not during it
    from ROOT._distrdf.Backends import Base  # noqa: F401

    print(f"pool worker {worker.worker} ready on port {port}", flush=True)
    try:
        worker.serve()
    finally:
        probes.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
