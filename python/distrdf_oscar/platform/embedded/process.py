"""The platform process: S3 server, OSCAR API, trigger notifier and runner, started and stopped together.

Started by :class:`~distrdf_oscar.platform.embedded.LocalPlatform` as
``python -m distrdf_oscar.platform.embedded``. Protocol on its standard streams:
the first stdin line is the JSON configuration (credentials included, so they
never appear on a command line); when ready, one JSON line goes to stdout;
``stop`` on stdin, stdin reaching EOF (the parent died) or SIGTERM shut
everything down and remove the platform's directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from .s3server import S3Server

if TYPE_CHECKING:
    from .job_records import Job

log = logging.getLogger("distrdf_oscar.platform.embedded")

PRESTARTED_START_TIMEOUT = 300.0


def _base_env(package_root: str) -> dict[str, str]:
    """The environment every function starts from: ours, with this interpreter and package first."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), env.get("PATH", "")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[distrdf-oscar local %(levelname)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    if root.level > logging.DEBUG:
        # werkzeug logs every request at INFO: far too chatty with functions polling.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _watch_stdin(stop: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()  # "stop", or EOF because the parent is gone


def run(config: dict[str, Any]) -> int:
    workdir = config["workdir"]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    debug = config.get("log_level", "WARNING").upper() == "DEBUG"

    # moto needs about a second to import: start it first, from this thread and
    # before any other thread exists, and overlap its start with ours.
    s3 = S3Server(log_path=os.path.join(workdir, "moto.log") if debug else None)
    s3.launch()

    # Imported here, not at the top, so that these imports overlap moto's start.
    from .accounts import DEFAULT_QUOTA, Accounts, Kueue, OidcTokens, issuer_url
    from .api import ApiContext, ApiServer, create_app
    from .exposed import ExposedServices
    from .faults import FaultPlan, MinioRestarts
    from .gate import StorageGate
    from .job_records import JobStore
    from .minio_release import honours_if_none_match
    from .prestarted import PrestartedPool
    from .provisioning import StorageCredentials, ensure_bucket
    from .registry import ServiceRegistry
    from .runner import PRESTARTED, Runner
    from .triggers import TriggerNotifier
    from .versions import OscarVersion

    base_env = _base_env(config["package_root"])
    pool = (
        PrestartedPool(config["workers"], config["package_root"], base_env)
        if config["mode"] == PRESTARTED
        else None
    )
    server = notifier = runner = gate = exposed = None
    try:
        s3.wait_ready()
        direct = StorageCredentials(s3.endpoint, config["s3_access_key"], config["s3_secret_key"])
        version = OscarVersion.parse(config["oscar_version"])
        accounts = Accounts(
            config["s3_access_key"],
            config.get("oidc_users") or {},
            version,
            root_secret_key=config["s3_secret_key"],
            tokens=OidcTokens(config["oidc_key"], config["oidc_token_lifetime"]),
        )
        services: list[ServiceRegistry] = []  # the registry, once made (it needs the gate's endpoint)

        def allowed(access_key: str, bucket: str) -> bool:
            if access_key == accounts.root_access_key:
                return True
            return any(bucket in registry.buckets_of(access_key, accounts.can_see) for registry in services)

        # Everyone reaches storage through the gate, which also reports each new object (MinIO's notifier).
        gate = StorageGate(
            s3.port,
            secret_of=accounts.secret_of,
            iam=accounts.minio,
            allowed=allowed,
            if_none_match=honours_if_none_match(config["minio_release"]),
        )
        gate.start()
        storage = StorageCredentials(gate.endpoint, config["s3_access_key"], config["s3_secret_key"])
        faults = FaultPlan(
            gate if config.get("fault_injection") else None, token_dir=os.path.join(workdir, "faults")
        )
        client = storage.client()
        if config.get("bucket_hint"):
            ensure_bucket(client, config["bucket_hint"])
        registry = ServiceRegistry(os.path.join(workdir, "services"), storage, version)
        services.append(registry)

        def secrets_of(name: str) -> dict[str, str]:
            service = registry.get(name)
            return dict(service["environment"]["secrets"]) if service else {}

        # Exposed services' Deployments: replicas under <workdir>/exposed/<service>/<pod>/.
        exposed = ExposedServices(
            os.path.join(workdir, "exposed"),
            base_env,
            version,
            config_path=registry.config_path,
            script_path=registry.script_path,
            secrets_of=secrets_of,
            time_scale=config.get("exposed_time_scale", 1.0),
        )
        registry.exposed = exposed
        store = JobStore(os.path.join(workdir, "logs"))

        def credentials(job: Job) -> tuple[str, str] | None:
            """The MinIO keys a job's pod mounts: the secret named after the event's uploader, or
            the caller, or the owner (3.6.5); the root ``minio`` secret when that is the owner (3.7)."""
            principal = job.owner or job.service.get("owner") or ""
            if version.release >= (3, 7, 0) and principal == job.service.get("owner"):
                principal = accounts.root_access_key
            if principal == accounts.root_access_key:
                return config["s3_access_key"], config["s3_secret_key"]
            user = accounts.users.get(principal)
            return (user.sub, user.secret_key) if user is not None else None

        runners: list[Runner] = []  # Kueue admits into the runner, made just below

        def admitted(job: Job) -> None:
            runners[0].enqueue(job)

        quota = config.get("user_quota") or DEFAULT_QUOTA
        kueue = Kueue(set(accounts.users), (quota[0], quota[1]), start=admitted)
        runner = Runner(
            capacity=config["capacity"],
            mode=config["mode"],
            store=store,
            client=client,
            jobs_dir=os.path.join(workdir, "jobs"),
            base_env=base_env,
            config_path=registry.config_path,
            prestarted=pool,
            version=version,
            credentials=credentials,
            kueue=kueue,
            startup_delay=config.get("startup_delay", 0.0),
            faults=faults,
        )
        runners.append(runner)

        def submit_by_name(name: str, body: bytes) -> None:
            # MinIO's webhook calls /job/NAME with the token it was registered with.
            service = registry.get(name)
            if service is None:
                return
            if registry.webhook_token(name) != service["token"]:
                log.warning("storage event for %s refused (401): the webhook holds an outdated token", name)
                return
            runner.submit(service, body)

        notifier = TriggerNotifier(registry, direct.client(), submit_by_name, faults=faults)
        gate.on_created = notifier.created

        def service_deleted(name: str) -> None:
            store.remove_many(name, only_succeeded=False)

        ctx = ApiContext(
            user=config["oscar_user"],
            password=config["oscar_password"],
            registry=registry,
            store=store,
            minio_provider=storage.provider(),
            submit=runner.submit,
            service_deleted=service_deleted,
            version=version,
            accounts=accounts,
            kueue=kueue,
            capacity=float(config["capacity"]),
            faults=faults,
            exposed=exposed,
            storage_front=gate,
            minio=MinioRestarts(gate, config["minio_restart_seconds"]),
        )
        app = create_app(ctx)
        _add_storage_requests_route(app, gate)
        server = ApiServer(app)
        accounts.tokens.issuer = issuer_url(f"http://127.0.0.1:{server.port}")  # as the launcher names it
        server.start()
        notifier.start()
        if pool is not None and not pool.wait_ready(PRESTARTED_START_TIMEOUT):
            raise RuntimeError("pre-started workers failed to start (see the log above)")

        s3_port = gate.port
        ready = {"ready": True, "pid": os.getpid(), "oscar_port": server.port, "s3_port": s3_port}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        threading.Thread(target=_watch_stdin, args=(stop,), name="stdin-watch", daemon=True).start()
        log.info("local platform ready: OSCAR API on port %d, S3 on port %d", server.port, s3_port)
        stop.wait()
        return 0
    except Exception as err:  # reported to the parent, which raises it
        log.exception("local platform failed")
        sys.stdout.write(json.dumps({"ready": False, "error": str(err)}) + "\n")
        sys.stdout.flush()
        return 1
    finally:
        log.info("stopping the local platform")
        for part in (gate, notifier, server, exposed, runner, pool):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # keep tearing the rest down
                    log.exception("error stopping %s", type(part).__name__)
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _add_storage_requests_route(app: Any, gate: Any) -> None:
    """``GET /system/local/storage-requests``: the storage front's requests per access key
    (``StorageGate.counts``), for the admin only. The embedded platform's own, not OSCAR's."""
    from flask import g, jsonify

    def storage_requests() -> Any:
        if getattr(g, "user", None) is not None:  # an OIDC user's token passed the API's check
            return "Forbidden", 403
        return jsonify(gate.counts())

    app.add_url_rule("/system/local/storage-requests", "storage_requests", storage_requests, methods=["GET"])


def main() -> int:
    config = json.loads(sys.stdin.readline())
    _configure_logging(config.get("log_level", "WARNING"))
    return run(config)
