"""OSCAR's exposed services: a Kubernetes Deployment of long-lived replicas per service.

A service whose ``expose.api_port`` (4.1: its first element) is not 0 gets, besides its
storage-triggered jobs, a Deployment ``NAME-dpl`` with ``min_scale`` replicas and an HPA
between ``min_scale`` and ``max_scale`` (``pkg/backends/resources/expose.go``; 3.5:
``pkg/types/expose.go``). Each pod runs ``/bin/sh -c /oscar/config/script.sh`` once for
its life (``default_command: true``: the image's own command), with the service's
variables, its secrets (``EnvFrom``) and the config map mounted; no FaaS supervisor, so
none of the per-invocation variables and no mounted MinIO keys.

Here a replica is a process group on this host: its own fresh working directory under
the platform's folder, its output in ``replica.log`` there, restarted when it exits or
fails its liveness probe (``restartPolicy: Always`` with the kubelet's crash-loop
back-off), probed by HTTP GET on ``127.0.0.1:<first api_port>`` as OSCAR configures the
probes of each release. Every replica of a service binds the same port (they run on one
host), so a worker must bind with ``SO_REUSEPORT``, and a probe reaches whichever replica
the kernel picks: a replica counts as ready when its process is alive and a probe
succeeded. ``time_scale`` multiplies every probe period and delay, the back-off and the
termination grace (1.0: Kubernetes' and OSCAR's values).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import hashlib
import http.client
import json
import logging
import os
import secrets as _secrets
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .validation import ServiceError
from .versions import OscarVersion

log = logging.getLogger(__name__)

BACKOFF_BASE = 10.0  # kubelet's crash-loop back-off: 10 s, doubling ...
BACKOFF_MAX = 300.0  # ... up to 5 minutes,
BACKOFF_RESET = 600.0  # forgotten once a container ran 10 minutes
GRACE = 30.0  # terminationGracePeriodSeconds' default
LOG_TAIL = 200  # lines of each replica's output kept in memory (/deployment/logs' default tailLines)
NAMESPACE = "oscar-svc"
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


def is_exposed(service: dict[str, Any] | None) -> bool:
    """OSCAR's test: ``api_port`` (4.1: its first element) is not 0 (pkg/backends/k8s.go)."""
    ports = api_ports(service or {})
    return bool(ports) and ports[0] != 0


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


def deployment_problem(service: dict[str, Any], version: OscarVersion) -> tuple[str, bool]:
    """What Kubernetes (or OSCAR before it) refuses when OSCAR makes the Deployment and its HPA:
    (message, whether the Deployment was made before the failure); ("", True) when all is well."""
    name = service["name"]
    expose = service["expose"]
    nodes = expose.get("nodePort")
    if version.expose_port_lists and nodes and len(nodes) != len(expose["api_port"]):
        message = (
            f"The length of nodePort ({len(nodes)}) must be equal to that of api_port "
            f"({len(expose['api_port'])})"
        )
        return message, False
    if expose["min_scale"] < 0:
        message = (
            f'Deployment.apps "{name}-dpl" is invalid: spec.replicas: Invalid value: '
            f"{expose['min_scale']}: must be greater than or equal to 0"
        )
        return message, False
    prefix = f'HorizontalPodAutoscaler.autoscaling "{name}-hpa" is invalid: '
    if expose["min_scale"] < 1:  # the HPAScaleToZero feature gate is off by default
        return (
            prefix + f"spec.minReplicas: Invalid value: {expose['min_scale']}: must be greater than "
            "or equal to 1",
            True,
        )
    if expose["max_scale"] < 1:
        return (
            prefix + f"spec.maxReplicas: Invalid value: {expose['max_scale']}: must be greater than 0",
            True,
        )
    if expose["max_scale"] < expose["min_scale"]:
        return (
            prefix + f"spec.maxReplicas: Invalid value: {expose['max_scale']}: must be greater than "
            "or equal to `minReplicas`",
            True,
        )
    if expose["cpu_threshold"] < 1:
        return (
            prefix + "spec.metrics[0].resource.target.averageUtilization: Invalid value: "
            f"{expose['cpu_threshold']}: must be greater than 0",
            True,
        )
    if version.exposed_lifecycle:
        auth = str(expose.get("auth_type") or "").strip().lower() or "basic"
        if auth not in ("basic", "forward"):
            return f'unsupported expose auth_type "{expose.get("auth_type")}"', True
        if auth == "forward" and expose.get("set_auth"):
            return 'expose auth_type "forward" requires EXPOSED_SERVICES_ROUTE_KIND=httproute', True
    return "", True


def template_hash(service: dict[str, Any], version: OscarVersion) -> str:
    """What changes the Deployment's pod template (a rollout when it changes): image, resources,
    variables, OSCAR's metadata variables, ports, command and probe path. The script (config map)
    and the secret values (a Secret) are not in it: changing them alone restarts nothing."""
    parts = {
        "image": service.get("image"),
        "cpu": service.get("cpu"),
        "memory": service.get("memory"),
        "variables": service["environment"]["variables"],
        "secret": bool(service["environment"]["secrets"]),
        "ports": api_ports(service),
        "default_command": (service.get("expose") or {}).get("default_command"),
        "probe": probe_path(service, version),
        "token": service.get("token") if version.sets_service_name else None,
        "restarted_at": service.get("_restarted_at"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def _now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kill_group(pgid: int, proc: subprocess.Popen[bytes], grace: float) -> None:
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
                _kill_group(proc.pid, proc, self._grace * scale)
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
                _kill_group(proc.pid, proc, self._grace * scale)
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


class Deployment:
    """``NAME-dpl``: the desired replicas, the pod template's generation and the HPA's presence."""

    def __init__(self, manager: ExposedServices, service: dict[str, Any]) -> None:
        self.manager = manager
        self.name = service["name"]
        self.version = manager.version
        self.time_scale = manager.time_scale
        self.root = os.path.join(manager.root, self.name)
        self.service = service
        self.generation = template_hash(service, self.version)
        self.replicas_wanted = 0
        self.hpa = False
        self.previous_replicas: int | None = None  # lifecycle.go's previous-replicas annotation
        self.pods: list[Replica] = []
        self.conditions: dict[str, tuple[str, str, str]] = {}  # type -> (reason, message, time)
        self._lock = threading.RLock()
        self.deleted = False

    # -- what the manager calls ----------------------------------------------------------

    def apply(self, service: dict[str, Any], replicas: int) -> None:
        """Create or update: the template, ``spec.replicas`` (annotations reset, as OSCAR rebuilds the
        Deployment's object), then reconcile (a rollout when the template changed)."""
        with self._lock:
            self.service = service
            self.generation = template_hash(service, self.version)
            self.replicas_wanted = replicas
            self.previous_replicas = None
        self.reconcile()

    def scale(self, replicas: int) -> None:
        with self._lock:
            self.replicas_wanted = replicas
        self.reconcile()

    def delete(self) -> None:
        """Deleted with its pods at once (DeleteCollection with a grace period of 0)."""
        with self._lock:
            self.deleted = True
            pods = list(self.pods)
        for pod in pods:
            pod.terminate(0.0)
        for pod in pods:
            pod.join(15.0)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the ReplicaSet controller ---------------------------------------------------------

    def reconcile(self) -> None:
        with self._lock:
            if self.deleted:
                return
            live = [p for p in self.pods if p.state != "Terminating" and p.state != "Terminated"]
            new = [p for p in live if p.generation == self.generation]
            old = [p for p in live if p.generation != self.generation]
            wanted = self.replicas_wanted
            for _ in range(wanted - len(new)):
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                self.pods.append(Replica(self, self.generation, copy.deepcopy(self.service)))
            if len(new) > wanted:  # scale down: not-ready and newest first
                extra = sorted(new, key=lambda p: (p.ready, -p.created))[: len(new) - wanted]
                for pod in extra:
                    pod.terminate(GRACE)
            # Rolling update (maxUnavailable 25% rounded down, so 0 for fewer than 4 replicas):
            # an old pod goes when enough new ones are ready; unready old ones go at once.
            ready_new = sum(1 for p in new if p.ready)
            allowed_down = wanted // 4
            available = ready_new + sum(1 for p in old if p.ready)
            for pod in sorted(old, key=lambda p: (p.ready, -p.created)):
                if wanted == 0 or not pod.ready or available - 1 >= wanted - allowed_down:
                    if pod.ready:
                        available -= 1
                    pod.terminate(GRACE)
            self._update_conditions()

    def replica_changed(self) -> None:
        self.reconcile()

    def replica_gone(self, pod: Replica) -> None:
        with self._lock:
            if pod in self.pods:
                self.pods.remove(pod)
        self.reconcile()

    def _update_conditions(self) -> None:
        available, _observed = self.counts()
        minimum = self.replicas_wanted - self.replicas_wanted // 4
        if available >= minimum:
            avail = ("MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            avail = ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
        rs = f'ReplicaSet "{self.name}-dpl-{self.generation}"'
        new_ready = sum(1 for p in self.pods if p.generation == self.generation and p.ready and p.alive)
        if new_ready >= self.replicas_wanted:
            progress = ("NewReplicaSetAvailable", f"{rs} has successfully progressed.")
        else:
            progress = ("ReplicaSetUpdated", f"{rs} is progressing.")
        for kind, (reason, message) in (("Available", avail), ("Progressing", progress)):
            if self.conditions.get(kind, ("", "", ""))[:2] != (reason, message):
                self.conditions[kind] = (reason, message, _now_rfc3339())

    def counts(self) -> tuple[int, int]:
        """(available, observed): ready pods, and pods not terminating (Deployment.status)."""
        with self._lock:
            live = [p for p in self.pods if p.state not in ("Terminating", "Terminated")]
            return sum(1 for p in live if p.ready and p.alive), len(live)

    # -- the pod's environment ---------------------------------------------------------------

    def environment(self, spec: dict[str, Any], work: str) -> dict[str, str]:
        return self.manager.environment(spec, work)

    def script_path(self, name: str) -> str:
        return self.manager.script_path(name)


class ExposedServices:
    """Every exposed service's Deployment, and the orphans OSCAR leaves behind."""

    def __init__(
        self,
        root: str,
        base_env: dict[str, str],
        version: OscarVersion,
        config_path: Callable[[str], str],
        script_path: Callable[[str], str],
        secrets_of: Callable[[str], dict[str, str]],
        time_scale: float = 1.0,
    ) -> None:
        self.root = root
        self.version = version
        self.time_scale = float(time_scale)
        self._base_env = base_env
        self._config_path = config_path
        self.script_path = script_path
        self._secrets_of = secrets_of  # the Secret's current values: read at each container start
        self._deployments: dict[str, Deployment] = {}
        self._lock = threading.RLock()

    # -- environment -------------------------------------------------------------------------

    def environment(self, spec: dict[str, Any], work: str) -> dict[str, str]:
        """What an exposed pod's container gets: the service's variables (explicit variables win
        over the secret's, as in Kubernetes), its secrets (``EnvFrom``, 3.6 and later), OSCAR's
        metadata variables (4.0) and the mounted function config; none of the supervisor's."""
        name = spec["name"]
        env = dict(self._base_env)
        for key in (
            "INPUT_FILE_PATH",
            "TMP_INPUT_DIR",
            "TMP_OUTPUT_DIR",
            "STORAGE_OBJECT_KEY",
            "EVENT",
            "EVENT_TIME",
            "JOB_UUID",
            "DRO_PROVIDER_SECRETS",
            "OSCAR_SERVICE_NAME",
            "OSCAR_SERVICE_TOKEN",
            "OSCAR_SERVICE_BASE_PATH",
        ):
            env.pop(key, None)
        if self.version.delivers_secrets and spec["environment"]["secrets"]:
            env.update(self._secrets_of(name))
        env.update(spec["environment"]["variables"])
        if self.version.sets_service_name:
            env.update(
                OSCAR_SERVICE_NAME=name,
                OSCAR_SERVICE_TOKEN=spec["token"],
                OSCAR_SERVICE_BASE_PATH=BASE_PATH.format(name=name),
            )
        env["DRO_FUNCTION_CONFIG"] = self._config_path(name)
        env["TMPDIR"] = work
        env["HOME"] = work
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._deployments

    def hpa_exists(self, name: str) -> bool:
        with self._lock:
            dep = self._deployments.get(name)
            return dep is not None and dep.hpa

    def _replicas_for(self, service: dict[str, Any]) -> int:
        # getDeploymentSpec (v3.7.0 to v4.1.2 expose.go) gives 0 replicas, until Kueue admits the
        # Workload, to a service not owned by cluster_admin when Kueue is on; but with Kueue on no
        # exposed service is ever created here (registry.py _not_admitted), nor updated (UpdateExpose
        # checks the admission again), so every Deployment has min_scale.
        return int(service["expose"]["min_scale"])

    def create(self, service: dict[str, Any], with_hpa: bool = True) -> None:
        with self._lock:
            if service["name"] in self._deployments:
                raise ServiceError(409, "A service with the provided name already exists")
            dep = Deployment(self, service)
            dep.hpa = with_hpa
            self._deployments[service["name"]] = dep
        dep.apply(service, self._replicas_for(service))

    def update(self, service: dict[str, Any]) -> None:
        """UpdateExpose: the Deployment (template, replicas = min_scale), then the HPA; a missing
        Deployment or HPA is an error after what came before it was done."""
        name = service["name"]
        with self._lock:
            dep = self._deployments.get(name)
        if dep is None:
            raise ServiceError(500, f'Error updating the service: deployments.apps "{name}-dpl" not found')
        dep.apply(service, self._replicas_for(service))
        if not dep.hpa:
            raise ServiceError(
                500,
                f'Error updating the service: horizontalpodautoscalers.autoscaling "{name}-hpa" not found',
            )

    def delete(self, name: str) -> None:
        with self._lock:
            dep = self._deployments.pop(name, None)
        if dep is not None:
            dep.delete()

    def stop_service(self, name: str) -> None:
        """lifecycle.go stopExposedService: previous-replicas annotation, 0 replicas, HPA deleted."""
        dep = self._get(name)
        with dep._lock:
            if dep.replicas_wanted > 0:
                dep.previous_replicas = dep.replicas_wanted
            dep.hpa = False
        dep.scale(0)

    def start_service(self, name: str, service: dict[str, Any]) -> None:
        """startExposedService: the annotated replicas, else min_scale, else 1; the HPA made again."""
        dep = self._get(name)
        with dep._lock:
            replicas = dep.previous_replicas or int(service["expose"]["min_scale"]) or 1
            dep.hpa = True
        dep.scale(replicas)

    def restart_service(self, name: str) -> None:
        """restartExposedService: a restartedAt annotation on the template, so a rollout."""
        dep = self._get(name)
        with dep._lock:
            spec = copy.deepcopy(dep.service)
            spec["_restarted_at"] = _now_rfc3339() + _secrets.token_hex(2)
            dep.service = spec
            dep.generation = template_hash(spec, self.version)
        dep.reconcile()

    def _get(self, name: str) -> Deployment:
        with self._lock:
            dep = self._deployments.get(name)
        if dep is None:
            raise ServiceError(404, "")
        return dep

    def stop(self) -> None:
        """The platform stops: every replica killed."""
        with self._lock:
            deps = list(self._deployments.values())
            self._deployments.clear()
        for dep in deps:
            dep.delete()

    # -- what OSCAR shows -----------------------------------------------------------------------

    def status(self, service: dict[str, Any]) -> dict[str, Any]:
        """``GET /system/services/NAME/deployment`` (deploymentStatusFromDeployment, deployment.go)."""
        name = service["name"]
        with self._lock:
            dep = self._deployments.get(name)
        if not is_exposed(service):
            return {
                "service_name": name,
                "namespace": NAMESPACE,
                "state": "unavailable",
                "reason": "Current deployment visibility is unavailable for this service runtime.",
                "active_instances": 0,
                "affected_instances": 0,
                "resource_kind": "unavailable",
            }
        if dep is None:
            return {
                "service_name": name,
                "namespace": NAMESPACE,
                "state": "unavailable",
                "reason": "Current deployment resources are unavailable.",
                "active_instances": 0,
                "affected_instances": 0,
                "resource_kind": "unavailable",
            }
        with dep._lock:
            dep._update_conditions()
            available, observed = dep.counts()
            desired = dep.replicas_wanted
            latest = max(dep.conditions.values(), key=lambda c: c[2], default=None)
        affected = max(0, observed - available)
        if desired == 0:
            state = "stopped" if self.version.exposed_lifecycle else "pending"
        elif available >= desired:
            state = "ready"
        elif available > 0:
            state = "degraded"
        else:
            state = "pending"
        reason, when = (f"{latest[0]}: {latest[1]}", latest[2]) if latest else ("", None)
        if state == "stopped":
            reason = "Deployment is stopped."
        body: dict[str, Any] = {
            "service_name": name,
            "namespace": NAMESPACE,
            "state": state,
            "reason": reason,
            "active_instances": observed,
            "affected_instances": affected,
            "resource_kind": "exposed_service",
        }
        if when:
            body["last_transition_time"] = when
        return body

    def _pods(self, name: str) -> list[Replica]:
        """The pods of service ``name``'s Deployment, oldest first (none without one)."""
        with self._lock:
            dep = self._deployments.get(name)
        if dep is None:
            return []
        with dep._lock:
            return sorted(dep.pods, key=lambda p: p.created)

    def logs(self, name: str, tail: int) -> list[str]:
        lines: list[str] = []
        for pod in self._pods(name):
            lines.extend(pod.tail_lines(tail))
        return lines[-tail:] if tail > 0 else []

    def replicas(self, name: str) -> list[dict[str, Any]]:
        """The emulator's own view (not OSCAR's): every pod with its pid and readiness."""
        return [{**pod.info(), "tail": pod.tail_lines(20)} for pod in self._pods(name)]
