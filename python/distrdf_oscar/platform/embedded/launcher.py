"""The handle on the local platform, used from the user's process."""

from __future__ import annotations

import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Self

from .accounts import (
    CLIENT_ID,
    DEFAULT_QUOTA,
    DEFAULT_TOKEN_LIFETIME,
    SCOPE,
    TOKEN_ENDPOINT,
    OidcTokens,
    issuer_url,
    new_users,
)
from .faults import RESTART_SECONDS, RESTART_SECONDS_VARIABLE, Fault
from .minio_release import checked as checked_minio_release
from .minio_release import installed_by as installed_minio
from .versions import DEFAULT as DEFAULT_VERSION
from .versions import OscarVersion

MODES = ("cold", "prestarted")

# What starting an OSCAR job's pod costs before its script runs, with the image already on the node:
# scheduling and the container's creation (Kubernetes' start-up SLO allows 5 s at the 99th
# percentile, image pulls excluded), ``ImagePullPolicy: Always``'s registry round trip, and the
# PyInstaller-built FaaS supervisor unpacking itself. No OSCAR cluster can be measured here: 2 s
# is the low end of that, and fits the prototype's 4-5 s per tree level, whose reducers also
# imported PyROOT (about 2 s here; a native-only reducer's start-up and merge take 0.4 s). LocalCluster adds it to every
# file-triggered call in its "cold" and "warm" modes (docs/local-platform.md).
POD_START_DELAY = 2.0

# The directory that holds the ``distrdf_oscar`` package: the platform process
# and its functions import from it even when it is not installed.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _check_extra() -> None:
    """Say which install is missing before the platform process dies of an ImportError."""
    import importlib.util

    missing = [name for name in ("flask", "moto") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(
            f"the embedded platform needs {' and '.join(missing)}: pip install 'distrdf-oscar[local]'"
        )


class LocalPlatform:
    """An OSCAR-compatible cluster with MinIO-like storage, on this machine, in one child process.

    Drive it exactly as a real cluster: with ``oscar-python`` against
    :attr:`oscar_endpoint` (basic auth :attr:`oscar_user` / :attr:`oscar_password`)
    and with ``minio.Minio(s3_endpoint, s3_access_key, s3_secret_key, secure=s3_secure)``.

    Args:
        workers: CPU slots. An invocation occupies its service's ``cpu`` request
            (default 1) and starts only when the free slots cover it.
        mode: ``"cold"`` (a fresh ``bash`` per invocation, like OSCAR's Kubernetes
            Jobs) or ``"prestarted"`` (one pre-started process per slot with ROOT imported
            runs the Python entry point named by a service's ``DRO_ENTRYPOINT``).
        startup_delay: seconds added to every invocation before it runs (emulated
            container start), for experiments.
        bucket_hint: a bucket to create at start-up.
        workdir: where the platform's private temporary directory is created
            (default: the system's temporary directory).
        log_level: logging level of the platform process (its log goes to stderr).
        start_timeout: seconds to wait for the platform to be ready (default 60,
            300 in prestarted mode where every worker imports ROOT).
        headroom: CPU capacity beyond ``workers`` that only sub-core requests can
            use together with full slots (a node's spare fraction), so a light
            coordinator does not take a whole slot from the mappers.
        fault_injection: put a gate in front of the S3 server so that
            :meth:`inject` can also stage storage outages (trigger and function
            faults work without it). See :mod:`.faults`.
        oscar_version: the OSCAR release to behave as (``"3.5"`` ... ``"4.1"``, or a patch
            release such as ``"3.6.3"``); see :mod:`.versions` and ``docs/local-platform.md``.
        oidc_users: OIDC users (their ``sub``) besides the admin: each gets OIDC tokens from
            the emulated issuer at :attr:`oidc_issuer` (:meth:`oidc_options`) and a MinIO account
            of its own (:meth:`oidc_storage_keys`).
        oidc_token_lifetime: seconds an OIDC access token is valid (default a day: tests that
            want one to expire mid-job shorten it); expired ones are refused with 401.
        user_quota: (cpu, memory) of each OIDC user's Kueue queue (3.7 and later).
        minio_restart_seconds: how long storage refuses connections each time OSCAR restarts
            MinIO (every service create and delete, see :class:`.faults.MinioRestarts`). Default:
            ``$DRO_LOCAL_MINIO_RESTART_SECONDS`` if set (the test suite shortens it), else
            :data:`.faults.RESTART_SECONDS`.
        minio_release: the MinIO release storage behaves as (default: the one OSCAR's own
            deployment installs with ``oscar_version``, see :mod:`.minio_release`); before
            ``RELEASE.2024-05-07T06-41-25Z`` a PUT ignores ``If-None-Match``.
    """

    cluster_id = "local"
    oscar_user = "oscar"
    s3_secure = False
    s3_region = "us-east-1"

    def __init__(
        self,
        workers: int = 2,
        mode: str = "cold",
        startup_delay: float = 0.0,
        bucket_hint: str | None = None,
        workdir: str | None = None,
        log_level: str | int = "WARNING",
        start_timeout: float | None = None,
        headroom: float = 0.0,
        fault_injection: bool = False,
        oscar_version: str = DEFAULT_VERSION,
        oidc_users: tuple[str, ...] = (),
        oidc_token_lifetime: float = DEFAULT_TOKEN_LIFETIME,
        user_quota: tuple[str, str] = DEFAULT_QUOTA,
        exposed_time_scale: float = 1.0,
        minio_restart_seconds: float | None = None,
        minio_release: str | None = None,
    ) -> None:
        if int(workers) != workers or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if startup_delay < 0:
            raise ValueError("startup_delay must not be negative")
        if headroom < 0:
            raise ValueError("headroom must not be negative")
        if not exposed_time_scale > 0:
            raise ValueError("exposed_time_scale must be positive")
        if not oidc_token_lifetime > 0:
            raise ValueError("oidc_token_lifetime must be positive")
        if minio_restart_seconds is None:
            minio_restart_seconds = float(os.environ.get(RESTART_SECONDS_VARIABLE, RESTART_SECONDS))
        if not minio_restart_seconds >= 0:
            raise ValueError("minio_restart_seconds must not be negative")
        self.minio_restart_seconds = float(minio_restart_seconds)
        # Multiplies exposed services' probe periods and delays, crash back-off and grace (1.0: OSCAR's).
        self.exposed_time_scale = float(exposed_time_scale)
        version = OscarVersion.parse(oscar_version)
        self.oscar_version = version.label[1:]
        self.minio_release = checked_minio_release(minio_release or installed_minio(version.release))
        self.oidc_users = tuple(oidc_users)
        self.user_quota = tuple(user_quota)
        self.oidc_token_lifetime = float(oidc_token_lifetime)
        self._oidc: dict[str, dict[str, str]] = {}
        self._tokens: OidcTokens | None = None  # the issuer's, sharing its key with the platform
        self.oidc_issuer: str | None = None
        self.workers = int(workers)
        self.headroom = float(headroom)
        self.fault_injection = bool(fault_injection)
        self.mode = mode
        self.startup_delay = float(startup_delay)
        self.bucket_hint = bucket_hint
        self.workdir = workdir
        self.log_level = log_level if isinstance(log_level, str) else logging.getLevelName(log_level)
        self.start_timeout = (
            start_timeout if start_timeout is not None else (300.0 if mode == "prestarted" else 60.0)
        )
        self._proc: subprocess.Popen[bytes] | None = None
        self.tmpdir: str | None = None
        self.pid: int | None = None
        self.oscar_endpoint: str | None = None
        self.oscar_password: str | None = None
        self.s3_endpoint: str | None = None
        self.s3_access_key: str | None = None
        self.s3_secret_key: str | None = None

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> LocalPlatform:
        if self._proc is not None:
            raise RuntimeError("the local platform is already running")
        _check_extra()
        self.tmpdir = tempfile.mkdtemp(prefix="distrdf-oscar-local-", dir=self.workdir)
        password = secrets.token_urlsafe(24)
        access_key = "dro" + secrets.token_hex(8)
        secret_key = secrets.token_urlsafe(30)
        users = new_users(self.oidc_users)
        oidc_key = secrets.token_urlsafe(32)
        config = {
            "workdir": self.tmpdir,
            "package_root": _PACKAGE_ROOT,
            "workers": self.workers,
            "capacity": self.workers + self.headroom,
            "mode": self.mode,
            "startup_delay": self.startup_delay,
            "bucket_hint": self.bucket_hint,
            "log_level": self.log_level,
            "oscar_user": self.oscar_user,
            "oscar_password": password,
            "s3_access_key": access_key,
            "s3_secret_key": secret_key,
            "fault_injection": self.fault_injection,
            "oscar_version": self.oscar_version,
            "oidc_users": users,
            "oidc_key": oidc_key,
            "oidc_token_lifetime": self.oidc_token_lifetime,
            "user_quota": list(self.user_quota),
            "exposed_time_scale": self.exposed_time_scale,
            "minio_restart_seconds": self.minio_restart_seconds,
            "minio_release": self.minio_release,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        # Own session: a Ctrl-C meant for the user's process does not hit the
        # platform half-way; stop() (or our exit, which closes its stdin) ends it.
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "distrdf_oscar.platform.embedded"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=self.tmpdir,
            env=env,
            start_new_session=True,
        )
        try:
            assert self._proc.stdin is not None
            # Credentials travel on the pipe, never on a command line.
            self._proc.stdin.write(json.dumps(config).encode() + b"\n")
            self._proc.stdin.flush()
            ready = self._read_ready()
        except BaseException:  # Ctrl-C during start-up too: leave nothing behind
            self.stop()
            raise
        self.pid = ready["pid"]
        self.oscar_endpoint = f"http://127.0.0.1:{ready['oscar_port']}"
        self.oscar_password = password
        self.s3_endpoint = f"127.0.0.1:{ready['s3_port']}"
        self.s3_access_key = access_key
        self.s3_secret_key = secret_key
        self._oidc = users
        self.oidc_issuer = issuer_url(self.oscar_endpoint)
        self._tokens = OidcTokens(oidc_key, self.oidc_token_lifetime, self.oidc_issuer)
        return self

    def _read_ready(self) -> dict[str, Any]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        deadline = time.monotonic() + self.start_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the local platform was not ready within {self.start_timeout:.0f} s")
                if selector.select(remaining):
                    chunk = os.read(stdout.fileno(), 4096)
                    if not chunk:
                        raise RuntimeError(
                            f"the local platform exited during start-up (code {self._proc.wait()}); see its log on stderr"
                        )
                    buffer += chunk
        ready: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
        if not ready.get("ready"):
            raise RuntimeError(f"the local platform failed to start: {ready.get('error')}")
        return ready

    def stop(self, timeout: float = 20.0) -> None:
        """Stop everything the platform started and remove its directory; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(b"stop\n")
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_session(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.pid = None
        self.oscar_endpoint = self.s3_endpoint = None
        self.oscar_password = self.s3_access_key = self.s3_secret_key = None
        self._oidc = {}
        self._tokens = self.oidc_issuer = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"oscar={self.oscar_endpoint} s3={self.s3_endpoint}" if self.running else "stopped"
        return f"<LocalPlatform workers={self.workers} mode={self.mode} {state}>"

    # -- conveniences ----------------------------------------------------------------

    def oscar_options(self) -> dict[str, Any]:
        """The options ``oscar_python.client.Client`` takes for this cluster."""
        self._require_running()
        return {
            "cluster_id": self.cluster_id,
            "endpoint": self.oscar_endpoint,
            "user": self.oscar_user,
            "password": self.oscar_password,
            "ssl": False,
        }

    def oidc_options(self, sub: str, refresh: bool = False) -> dict[str, Any]:
        """The options ``oscar_python.client.Client`` takes for OIDC user ``sub``: a new access
        token, valid ``oidc_token_lifetime`` seconds from now. With ``refresh`` also a new refresh
        token (what oscar-cli keeps as ``oidc_refresh_token``) and the issuer's token endpoint,
        client and scopes, with which oscar-python renews an expired access token itself."""
        self._require_running()
        assert self._tokens is not None
        if sub not in self._oidc:
            raise KeyError(f"{sub!r} is not an OIDC user of this platform (oidc_users={self.oidc_users})")
        options: dict[str, Any] = {
            "cluster_id": self.cluster_id,
            "endpoint": self.oscar_endpoint,
            "oidc_token": self._tokens.access_token(sub),
            "ssl": False,
        }
        if refresh:
            options.update(
                refresh_token=self._tokens.refresh_token(sub),
                token_endpoint=self._tokens.issuer + TOKEN_ENDPOINT,
                client_id=CLIENT_ID,
                scopes=SCOPE.split(),
            )
        return options

    def oidc_storage_keys(self, sub: str) -> tuple[str, str]:
        """(access key, secret key) of OIDC user ``sub``'s MinIO account."""
        self._require_running()
        return sub, self._oidc[sub]["secret_key"]

    def minio_client(self) -> Any:
        """A ``minio.Minio`` client for the platform's object store."""
        self._require_running()
        import urllib3

        from ...protocol.storage import minio_client

        assert self.s3_endpoint is not None
        scheme = "https://" if self.s3_secure else "http://"
        # minio-py's own defaults: five minutes' patience, five retries of server errors.
        return minio_client(
            scheme + self.s3_endpoint,
            self.s3_access_key,
            self.s3_secret_key,
            region=self.s3_region,
            timeout=(300.0, 300.0),
            retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )

    # -- exposed services: the emulator's own view (OSCAR's API shows no pods) -------------------

    def exposed_replicas(self, name: str) -> list[dict[str, Any]]:
        """The replicas (pods) of exposed service ``name``: ``name``, ``pid`` (None while the
        container is not running), ``ready``, ``state``, ``reason``, ``restarts``,
        ``last_exit_code``, ``generation`` (pod template), ``dir``, ``log``, ``tail`` (last
        lines of its output). From ``GET /system/local/exposed/NAME``, which is not OSCAR's."""
        import requests

        self._require_running()
        response = requests.get(
            f"{self.oscar_endpoint}/system/local/exposed/{name}",
            auth=(self.oscar_user, self.oscar_password or ""),
            timeout=30,
        )
        response.raise_for_status()
        return list(response.json())

    # -- the storage front's request counts ---------------------------------------------------

    def storage_requests(self) -> dict[str, int]:
        """Requests the storage front has received so far, per access key that signed them (a
        listening stream counts once, when opened; ``""``: requests that proved no account).
        From ``GET /system/local/storage-requests``, which is not OSCAR's."""
        import requests

        self._require_running()
        response = requests.get(
            f"{self.oscar_endpoint}/system/local/storage-requests",
            auth=(self.oscar_user, self.oscar_password or ""),
            timeout=30,
        )
        response.raise_for_status()
        return {str(key): int(count) for key, count in response.json().items()}

    # -- fault injection -------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Add fault rules; each fires the number of times it says, on matching invocations."""
        self._faults_request("post", json=[fault.to_json() for fault in faults])

    def faults(self) -> list[Fault]:
        """Every rule added so far, with how often it has fired."""
        return [Fault.from_json(rule) for rule in self._faults_request("get").json()]

    def clear_faults(self) -> None:
        self._faults_request("delete")

    def _faults_request(self, method: str, **kwargs: Any) -> Any:
        import requests

        self._require_running()
        response = requests.request(
            method,
            f"{self.oscar_endpoint}/system/local/faults",
            auth=(self.oscar_user, self.oscar_password or ""),
            timeout=30,
            **kwargs,
        )
        if response.status_code >= 400:
            raise ValueError(f"fault injection refused: {response.text}")
        return response

    def _require_running(self) -> None:
        if not self.running:
            raise RuntimeError("the local platform is not running (call start())")


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    """Last resort when the platform does not stop by itself: its whole process group."""
    for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
