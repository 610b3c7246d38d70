"""One pod of an exposed service's Deployment: its container's life, as the kubelet runs it.

``exposed.py`` manages Deployments (replica counts, rollouts, the HPA, status); this module
is what happens inside a single replica, so the kubelet's loop reads on its own. Here a
replica is a process group on this host: its own fresh working directory under the
platform's folder, its output in ``replica.log`` there, restarted when it exits or fails
its liveness probe (``restartPolicy: Always`` with the kubelet's crash-loop back-off),
probed by HTTP GET on ``127.0.0.1:<first api_port>`` as OSCAR configures the probes of
each release. Every replica of a service binds the same port (they run on one host), so a
worker must bind with ``SO_REUSEPORT``, and a probe reaches whichever replica the kernel
picks: a replica counts as ready when its process is alive and a probe succeeded.
``time_scale`` multiplies every probe period and delay, the back-off and the termination
grace (1.0: Kubernetes' and OSCAR's values).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets as _secrets
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .versions import OscarVersion

if TYPE_CHECKING:
    from .exposed import Deployment

log = logging.getLogger(__name__)

BACKOFF_BASE = 10.0  # kubelet's crash-loop back-off: 10 s, doubling ...
BACKOFF_MAX = 300.0  # ... up to 5 minutes,
BACKOFF_RESET = 600.0  # forgotten once a container ran 10 minutes
GRACE = 30.0  # terminationGracePeriodSeconds' default
LOG_TAIL = 200  # lines of each replica's output kept in memory (/deployment/logs' default tailLines)
BASE_PATH = "/system/services/{name}/exposed"  # OSCAR_SERVICE_BASE_PATH (4.0)


@dataclass(frozen=True)
class Probe:
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3


# The probes of each release's exposed pods (expose.go getPodTemplateSpec); Kubernetes' defaults
# (period 10 s, timeout 1 s, failureThreshold 3) where OSCAR sets nothing.
PROBES: dict[str, dict[str, Probe]] = {
    "none": {},
    "early": {"liveness": Probe(initial_delay=5), "readiness": Probe(period=5)},
    "health": {
        "liveness": Probe(initial_delay=30, period=10, timeout=2),
        "readiness": Probe(initial_delay=10, period=5, timeout=2),
    },
    "startup": {
        "startup": Probe(period=10, timeout=10, failure_threshold=18),
        "liveness": Probe(initial_delay=60, period=10, timeout=10, failure_threshold=12),
        "readiness": Probe(initial_delay=10, period=5, timeout=10),
    },
}


def api_ports(service: dict[str, Any]) -> list[int]:
    ports = (service.get("expose") or {}).get("api_port")
    if isinstance(ports, list):
        return list(ports)
    return [ports] if ports else []


def probe_path(service: dict[str, Any], version: OscarVersion) -> str:
    expose = service.get("expose") or {}
    profile = version.exposed_probe_profile
    if profile == "early":
        return "/"
    health = expose.get("health_path") or ""
    base = BASE_PATH.format(name=service["name"])
    if profile == "health":  # Kubernetes defaults an empty path to "/"
        path = base + health if expose.get("rewrite_target") else health
        return path or "/"
    health = health if health.startswith("/") else "/" + health
    if str(expose.get("probe_mode") or "").strip().lower() == "direct":
        return health
    return base + health if expose.get("rewrite_target") else health


def _kill_container_group(pgid: int, proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the container's process group, SIGKILL what is left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace if grace > 0 else 5.0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)


class Replica:
    """One pod of the Deployment: its container restarted as ``restartPolicy: Always`` does."""

    def __init__(self, deployment: Deployment, generation: str, spec: dict[str, Any]) -> None:
        self.deployment = deployment
        self.generation = generation
        self.spec = spec  # the service definition of its pod template
        self.name = f"{spec['name']}-dpl-{generation}-{_secrets.token_hex(3)}"
        self.dir = os.path.join(deployment.root, self.name)
        self.log_path = os.path.join(self.dir, "replica.log")
        self.created = time.monotonic()
        self.pid: int | None = None
        self.ready = False
        self.restarts = 0
        self.state = "Waiting"
        self.reason = "ContainerCreating"
        self.last_exit: int | None = None
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self._proc: subprocess.Popen[bytes] | None = None
        self._terminate = threading.Event()
        self._grace = GRACE
        self._lock = threading.Lock()
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"replica-{self.name}", daemon=True)
        self._thread.start()

    # -- control ---------------------------------------------------------------------

    def terminate(self, grace: float) -> None:
        self._grace = grace
        self.state = "Terminating"
        self._terminate.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid if self.alive else None,
            "ready": self.ready and self.alive,
            "state": self.state,
            "reason": self.reason,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit,
            "generation": self.generation,
            "dir": self.dir,
            "log": self.log_path,
        }

    # -- the kubelet's loop -------------------------------------------------------------

    def _run(self) -> None:
        dep = self.deployment
        scale = dep.time_scale
        backoff = 0.0
        last_start = 0.0
        try:
            if dep.version.release < (3, 6, 0) and self.spec["environment"]["secrets"]:
                # 3.5's pod refers to a secret name create.go never makes: the container never starts.
                self.reason = "CreateContainerConfigError"
                self._terminate.wait()
                return
            while not self._terminate.is_set():
                wait = last_start + backoff - time.monotonic()
                if wait > 0:
                    self.reason = "CrashLoopBackOff"
                    if self._terminate.wait(wait):
                        break
                last_start = time.monotonic()
                if self.restarts:
                    backoff = min(backoff * 2, BACKOFF_MAX * scale) if backoff else BACKOFF_BASE * scale
                self._start_container()
                self._supervise()
                self._set_ready(False)
                if self._terminate.is_set():
                    break
                if time.monotonic() - last_start >= BACKOFF_RESET * scale:
                    backoff = 0.0
                self.restarts += 1
        except Exception:  # a replica's failure must not take the platform down
            log.exception("replica %s failed", self.name)
        finally:
            self._set_ready(False)
            self.state = "Terminated"
            shutil.rmtree(self.dir, ignore_errors=True)
            dep.replica_gone(self)

    def _start_container(self) -> None:
        dep = self.deployment
        work = os.path.join(self.dir, "work")
        shutil.rmtree(work, ignore_errors=True)  # a container starts from a fresh file system
        os.makedirs(work, mode=0o700)
        env = dep.environment(self.spec, work)
        if (self.spec.get("expose") or {}).get("default_command"):
            # The image's own command: here there is no image, so the container idles.
            argv = ["/bin/sh", "-c", "exec sleep infinity"]
        else:
            argv = ["/bin/sh", "-c", dep.script_path(self.spec["name"])]
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                argv,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._proc.pid
        self.state, self.reason = "Running", ""
        log.info("exposed %s: replica %s started (pid %d)", self.spec["name"], self.name, self.pid)

    def _probe(self, spec: Probe) -> bool:
        port = api_ports(self.spec)[0]
        timeout = max(1.0, spec.timeout * self.deployment.time_scale)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(
                "GET",
                probe_path(self.spec, self.deployment.version),
                headers={"User-Agent": "kube-probe/1.30"},
            )
            status = conn.getresponse().status
            return 200 <= status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _supervise(self) -> None:
        """Probe the running container until it exits, fails its probes, or is terminated."""
        proc = self._proc
        assert proc is not None
        scale = self.deployment.time_scale
        probes = PROBES[self.deployment.version.exposed_probe_profile]
        start = time.monotonic()
        startup, liveness, readiness = probes.get("startup"), probes.get("liveness"), probes.get("readiness")
        started = startup is None
        next_at = {
            "startup": start,
            "liveness": start + (liveness.initial_delay * scale if liveness else 0),
            "readiness": start + (readiness.initial_delay * scale if readiness else 0),
        }
        failures = {"startup": 0, "liveness": 0, "readiness": 0}
        if started and readiness is None:
            self._set_ready(True)
        while True:
            if proc.poll() is not None:
                self.last_exit = proc.returncode
                self.state, self.reason = "Waiting", "Error" if proc.returncode else "Completed"
                self._capture()
                log.info("exposed %s: replica %s exited (%s)", self.spec["name"], self.name, proc.returncode)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # what the script left behind
                return
            if self._terminate.is_set():
                _kill_container_group(proc.pid, proc, self._grace * scale)
                self.last_exit = proc.returncode
                self._capture()
                return
            now = time.monotonic()
            unhealthy = ""
            if not started and startup is not None and now >= next_at["startup"]:
                if self._probe(startup):
                    started = True
                    failures["startup"] = 0
                    next_at["liveness"] = max(now, next_at["liveness"])
                    next_at["readiness"] = max(now, next_at["readiness"])
                else:
                    failures["startup"] += 1
                    if failures["startup"] >= startup.failure_threshold:
                        unhealthy = "Startup probe failed"
                next_at["startup"] = now + startup.period * scale
            if started and readiness is not None and now >= next_at["readiness"]:
                if self._probe(readiness):
                    failures["readiness"] = 0
                    self._set_ready(True)
                else:
                    failures["readiness"] += 1
                    if failures["readiness"] >= readiness.failure_threshold:
                        self._set_ready(False)
                next_at["readiness"] = time.monotonic() + readiness.period * scale
            if started and liveness is not None and now >= next_at["liveness"]:
                if self._probe(liveness):
                    failures["liveness"] = 0
                else:
                    failures["liveness"] += 1
                    if failures["liveness"] >= liveness.failure_threshold:
                        unhealthy = "Liveness probe failed"
                next_at["liveness"] = time.monotonic() + liveness.period * scale
            if unhealthy:
                log.info("exposed %s: replica %s: %s, restarting it", self.spec["name"], self.name, unhealthy)
                self._set_ready(False)
                self.reason = unhealthy
                _kill_container_group(proc.pid, proc, self._grace * scale)
                self.last_exit = proc.returncode
                self.state = "Waiting"
                self._capture()
                return
            pending = [t for key, t in next_at.items() if probes.get(key) is not None]
            sleep = min([0.1] + [max(0.0, t - time.monotonic()) for t in pending])
            self._terminate.wait(max(0.01, sleep))

    def _capture(self) -> None:
        """Keep the last lines of the container's output (its log file stays while the pod exists)."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                lines = handle.read().decode("utf-8", errors="replace").splitlines()
        except OSError:  # the pod is gone: keep what was captured
            return
        self.tail.clear()
        self.tail.extend(lines[-LOG_TAIL:])

    def tail_lines(self, count: int) -> list[str]:
        self._capture()
        return list(self.tail)[-count:] if count > 0 else []

    def _set_ready(self, ready: bool) -> None:
        with self._lock:
            changed = self.ready != ready
            self.ready = ready
        if changed:
            self.deployment.replica_changed()
