"""OSCAR's REST API (the parts oscar-python and the project use), as a Flask app on loopback."""

from __future__ import annotations

import base64
import json
import logging
import platform as _platform
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import make_server

from .accounts import ISSUER_PATH, REVOKE_ENDPOINT, TOKEN_ENDPOINT, Accounts, Kueue, User
from .exposed import ExposedServices
from .exposed_replica import api_ports
from .faults import Fault, FaultPlan, MinioRestarts
from .job_records import SUSPENDED, JobStore
from .registry import ServiceRegistry
from .validation import ServiceError
from .versions import DEFAULT as DEFAULT_VERSION
from .versions import JOB_LISTING_LIMIT, OscarVersion

if TYPE_CHECKING:
    from .gate import StorageGate

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    """What the API needs from the rest of the platform."""

    user: str
    password: str
    registry: ServiceRegistry
    store: JobStore
    minio_provider: dict[str, Any]
    submit: Callable[[dict[str, Any], bytes, str | None], Any]  # (service, event body, job owner) -> job
    service_deleted: Callable[[str], None]  # after delete: drop its jobs
    version: OscarVersion = field(default_factory=lambda: OscarVersion.parse(DEFAULT_VERSION))
    accounts: Accounts | None = None
    kueue: Kueue | None = None
    capacity: float = 1.0
    faults: FaultPlan | None = None  # fault injection rules (not part of OSCAR's API)
    exposed: ExposedServices | None = None  # exposed services' Deployments
    storage_front: StorageGate | None = None  # where MinIO's restarts refuse connections
    minio: MinioRestarts | None = None  # made by create_app when not given


def _encode_page(name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": name}).encode()).decode()


def _decode_page(token: str) -> str:
    if not token:
        return ""
    try:
        return str(json.loads(base64.urlsafe_b64decode(token.encode()))["after"])
    except (ValueError, KeyError, TypeError):
        raise ServiceError(500, "invalid continue token") from None


def _quantity(value: int, name: str) -> str:
    """A Kubernetes quantity's canonical text (``2``, ``250m``, ``2Gi``), as 3.7 reports quotas."""
    if name == "cpu":
        return str(value // 1000) if value % 1000 == 0 else f"{value}m"
    for suffix, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value and value % size == 0:
            return f"{value // size}{suffix}"
    return str(value)


def _quota_values(name: str, maximum: int, used: int, as_numbers: bool) -> dict[str, Any]:
    # From 4.0 integers (milli-CPUs, bytes); 3.7 gives quantities as text.
    if as_numbers:
        return {"max": maximum, "used": used}
    return {"max": _quantity(maximum, name), "used": _quantity(used, name)}


def _text(status: int, message: str = "") -> Response:
    return Response(message, status=status, mimetype="text/plain")


def _read_json() -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError as err:
        raise ServiceError(400, f"The service specification is not valid: {err}") from None


def create_app(ctx: ApiContext) -> Flask:
    app = Flask(__name__)
    if ctx.minio is None:
        ctx.minio = MinioRestarts(ctx.storage_front or (ctx.faults.gate if ctx.faults is not None else None))
    minio = ctx.minio
    # oscar-python asks for "/system/config/" as well as "/system/config".
    app.url_map.strict_slashes = False

    def basic_auth_ok() -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return False
        user_ok = secrets.compare_digest((auth.username or "").encode(), ctx.user.encode())
        password_ok = secrets.compare_digest((auth.password or "").encode(), ctx.password.encode())
        return user_ok and password_ok

    def oidc_user() -> User | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or ctx.accounts is None:
            return None
        return ctx.accounts.user_for_token(token.strip())

    # Routes a release lacks: gin answers its own 404 before any middleware runs.
    later_routes: tuple[tuple[re.Pattern[str], Callable[[OscarVersion], bool]], ...] = (
        (re.compile(r"^/system/services/[^/]+/deployment(/logs)?/?$"), lambda v: v.deployment_status),
        (re.compile(r"^/system/services/[^/]+/(stop|start|restart)/?$"), lambda v: v.exposed_lifecycle),
    )

    @app.before_request
    def require_auth() -> Response | None:
        # Management endpoints take basic auth (the admin) or an OIDC user's bearer token;
        # /health and /job/NAME do not.
        g.user = None
        for pattern, present in later_routes:
            if pattern.match(request.path) and not present(ctx.version):
                return _text(404, "404 page not found")
        if not request.path.startswith("/system") or basic_auth_ok():
            return None
        g.user = oidc_user()
        if g.user is not None:
            return None
        response = _text(401, "Unauthorized")
        response.headers["WWW-Authenticate"] = 'Basic realm="Authorization Required"'
        return response

    def caller() -> str | None:
        """The OIDC user calling, or None for the admin."""
        return g.user.sub if g.user is not None else None

    def visible(name: str) -> dict[str, Any]:
        """The service, if the caller may see it (404 unknown, 403 otherwise)."""
        service = ctx.registry.public(name)
        if service is None:
            raise ServiceError(404, f"Service '{name}' not found")
        if ctx.accounts is not None and not ctx.accounts.can_see(caller(), service):
            raise ServiceError(403, f"User {caller()} doesn't have permision to get this service")
        return service

    def owned(name: str) -> None:
        """Only the admin or the service's owner may change it (update.go, delete.go)."""
        service = visible(name)
        if caller() is not None and service.get("owner") != caller():
            raise ServiceError(403, f"User {caller()} doesn't have permision to modify this service")

    @app.errorhandler(ServiceError)
    def service_error(err: ServiceError) -> Response:
        return _text(err.status, err.message)

    @app.get("/health")
    def health() -> Response:
        return _text(200, "Ok")

    @app.get("/system/info")
    def info() -> Response:
        # OSCAR reports its tag without the "v"; the Kubernetes backend has no serverless_backend.
        return jsonify(
            {
                "version": ctx.version.number,
                "git_commit": "local",
                "architecture": _platform.machine(),
                "kubernetes_version": "",
            }
        )

    def own_provider() -> dict[str, Any]:
        # An OIDC user is handed their own MinIO account (access key: their sub).
        if g.user is None:
            return ctx.minio_provider
        return {**ctx.minio_provider, "access_key": g.user.sub, "secret_key": g.user.secret_key}

    @app.get("/system/config")
    def config() -> Response:
        return jsonify(
            {
                "config": {
                    "name": "oscar",
                    "namespace": "oscar",
                    "services_namespace": "oscar-svc",
                    "gpu_available": False,
                    "interLink_available": False,
                    "yunikorn_enable": False,
                    "kueue_enable": ctx.version.kueue,
                    "volume_enable": False,
                    "oidc_groups": [],
                    "minio_quota_enabled": False,
                    "cpu_capacity": ctx.capacity,
                },
                "minio_provider": own_provider(),
                "allowed_image_repositories": [],
            }
        )

    def with_deployment(service: dict[str, Any]) -> dict[str, Any]:
        """``?include=deployment`` (4.0, read.go/list.go setDeploymentSummary)."""
        if (
            not ctx.version.deployment_status
            or ctx.exposed is None
            or "deployment" not in request.args.get("include", "").split(",")
        ):
            return service
        status = ctx.exposed.status(service)
        summary = {
            key: status[key]
            for key in (
                "state",
                "reason",
                "last_transition_time",
                "active_instances",
                "affected_instances",
                "resource_kind",
            )
            if key in status
        }
        return {**service, "deployment": summary}

    @app.get("/system/services")
    def list_services() -> Response:
        services = [ctx.registry.public(name) for name in ctx.registry.names()]
        if ctx.accounts is not None:
            services = [s for s in services if s is not None and ctx.accounts.can_see(caller(), s)]
        return jsonify([with_deployment(s) for s in services if s is not None])

    # Every create and delete, and an update adding a bucket, restarts MinIO (faults.MinioRestarts);
    # a refused create or update restarts it as often as OSCAR did before failing.

    @app.post("/system/services")
    def create_service() -> Response:
        try:
            ctx.registry.create(_read_json(), owner=caller())
        except ServiceError as err:
            minio.restart(err.minio_restarts)
            raise
        minio.restart()
        return _text(201)

    @app.put("/system/services")
    def update_service() -> Response:
        payload = _read_json()
        if isinstance(payload, dict) and isinstance(payload.get("name"), str):
            owned(payload["name"])
        try:
            service, restarts = ctx.registry.update(payload, owner=caller())
        except ServiceError as err:
            minio.restart(err.minio_restarts)
            raise
        minio.restart(restarts)
        if service is None:  # the release answers without changing anything
            return _text(200)
        return _text(204)

    @app.get("/system/services/<name>")
    def read_service(name: str) -> Response:
        try:
            return jsonify(with_deployment(visible(name)))
        except ServiceError as err:
            if err.status == 403 and (3, 6, 0) <= ctx.version.release < (4, 0, 0):
                return _text(200)  # read.go falls through without an answer (fixed in 4.0)
            raise

    @app.delete("/system/services/<name>")
    def delete_service(name: str) -> Response:
        owned(name)

        def webhook_removed(service: str) -> None:
            # delete.go: the service's Kubernetes objects go, then its webhook (MinIO restarts),
            # then its buckets.
            ctx.service_deleted(service)
            minio.restart()

        ctx.registry.delete(name, before_buckets=webhook_removed)
        return _text(204)

    @app.get("/system/quotas/user")
    def own_quota() -> Response:
        if not ctx.version.kueue or ctx.kueue is None:
            return _text(404, "Not found")
        if g.user is None:
            raise ServiceError(400, "the admin has no quota")
        quota = ctx.kueue.quota(g.user.sub)
        resources = {
            name: _quota_values(name, maximum, used, as_numbers=ctx.version.release >= (4, 0, 0))
            for name, (maximum, used) in quota["resources"].items()
        }
        return jsonify({**quota, "resources": resources})

    @app.post("/job/<name>")
    def job(name: str) -> Response:
        service = ctx.registry.get(name)
        if service is None:
            return _text(404, f"Service '{name}' not found")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            return _text(401, "Unauthorized")
        owner = None
        if not secrets.compare_digest(token.strip().encode(), service["token"].encode()):
            user = oidc_user()
            if user is None:
                return _text(401, "Unauthorized")
            if (
                ctx.version.release >= (4, 0, 0)
                and ctx.accounts is not None
                and not ctx.accounts.can_see(user.sub, ctx.registry.public(name) or {})
            ):
                return _text(404)  # selectService finds no service the caller may use (job.go)
            owner = user.sub  # OSCAR labels the job with the caller (job-owner)
        ctx.submit(service, request.get_data(), owner)
        return _text(201)

    @app.get("/system/logs/<name>")
    def list_jobs(name: str) -> Response:
        try:
            visible(name)
        except ServiceError as err:
            if err.status == 403 and ctx.version.release >= (4, 0, 0):
                return _text(200)  # 4.0's authorizeRequest answers nothing at all (logs.go)
            raise
        jobs = sorted(ctx.store.list(name), key=lambda job: job.name)
        if caller() is not None and ctx.version.release >= (3, 6, 5):
            # An OIDC caller sees only the jobs labelled with its own job-owner (logs.go).
            jobs = [job for job in jobs if job.owner == caller()]
        if not ctx.version.lists_podless_jobs:
            jobs = [job for job in jobs if job.status != SUSPENDED]
        if not ctx.version.pages_job_listing:
            # Up to 3.6.3: every job in a flat map.
            return jsonify({job.name: job.info() for job in jobs})
        # From 3.6.4: Kubernetes' paging in name order, ``page`` being the continuation token.
        after = _decode_page(request.args.get("page", ""))
        rest = [job for job in jobs if job.name > after]
        page, more = rest[:JOB_LISTING_LIMIT], rest[JOB_LISTING_LIMIT:]
        body: dict[str, Any] = {"jobs": {job.name: job.info() for job in page}}
        if more:  # omitted when empty; remaining_jobs too (Kubernetes gives no count with a label selector)
            body["next_page"] = _encode_page(page[-1].name)
        return jsonify(body)

    @app.delete("/system/logs/<name>")
    def delete_jobs(name: str) -> Response:
        if ctx.registry.get(name) is None:
            return _text(404, f"Service '{name}' not found")
        everything = request.args.get("all", "false").lower() in ("1", "t", "true")
        ctx.store.remove_many(name, only_succeeded=not everything)
        return _text(204)

    @app.get("/system/logs/<name>/<job_name>")
    def job_log(name: str, job_name: str) -> Response:
        job = ctx.store.get(name, job_name)
        if ctx.registry.get(name) is None or job is None:
            return _text(404, "Not found")
        return _text(200, ctx.store.read_log(job))

    @app.delete("/system/logs/<name>/<job_name>")
    def delete_job(name: str, job_name: str) -> Response:
        if ctx.registry.get(name) is None or ctx.store.remove(name, job_name) is None:
            return _text(404, "Not found")
        return _text(204)

    # -- exposed services: deployment status (4.0) and lifecycle (4.1) -------------------------

    def readable(name: str) -> dict[str, Any]:
        """deployment.go getAuthorizedService: 404 unknown, 403 a service the caller may not see."""
        try:
            return visible(name)
        except ServiceError as err:
            if err.status == 403:
                raise ServiceError(403, "You do not have permission to access this service") from None
            raise ServiceError(err.status, "") from None

    @app.get("/system/services/<name>/deployment")
    def deployment_status(name: str) -> Response:
        service = readable(name)
        assert ctx.exposed is not None
        return jsonify(ctx.exposed.status(service))

    @app.get("/system/services/<name>/deployment/logs")
    def deployment_logs(name: str) -> Response:
        service = readable(name)
        assert ctx.exposed is not None
        try:
            tail = int(request.args.get("tailLines", "200"))
        except ValueError:
            tail = 200
        tail = tail if tail > 0 else 200
        lines = ctx.exposed.logs(name, tail) if ctx.exposed.has(name) else []
        body: dict[str, Any] = {
            "service_name": service["name"],
            "available": bool(lines),
            "entries": [{"message": line} for line in lines],
        }
        if not ctx.exposed.has(name):
            body["message"] = "Deployment logs are unavailable for this service."
        elif not lines:
            body["message"] = "Deployment logs are not yet available."
        return jsonify(body)

    def lifecycle(name: str, action: str) -> Response:
        """lifecycle.go makeExposedServiceLifecycleHandler."""
        service = ctx.registry.public(name)
        if service is None:
            return _text(404)
        if g.user is not None and service.get("owner") != g.user.sub:
            return _text(403, f"User {g.user.sub} doesn't have permission to manage this service")
        if not api_ports(service):
            return _text(400, f'service "{name}" is not exposed')
        assert ctx.exposed is not None
        try:
            if action == "stop":
                ctx.exposed.stop_service(name)
            elif action == "start":
                ctx.exposed.start_service(name, service)
            else:
                ctx.exposed.restart_service(name)
        except ServiceError as err:
            return _text(err.status, err.message)
        return jsonify(ctx.exposed.status(service))

    @app.post("/system/services/<name>/stop")
    def stop_exposed(name: str) -> Response:
        return lifecycle(name, "stop")

    @app.post("/system/services/<name>/start")
    def start_exposed(name: str) -> Response:
        return lifecycle(name, "start")

    @app.post("/system/services/<name>/restart")
    def restart_exposed(name: str) -> Response:
        return lifecycle(name, "restart")

    # -- the OIDC issuer the users' tokens name (a Keycloak realm's endpoints, not OSCAR's) -------

    @app.post(ISSUER_PATH + TOKEN_ENDPOINT)
    def oidc_token() -> Response:
        if ctx.accounts is None:
            return _text(404)
        status, answer = ctx.accounts.tokens.grant(request.form)
        response = jsonify(answer)
        response.status_code = status
        return response

    @app.post(ISSUER_PATH + REVOKE_ENDPOINT)
    def oidc_revoke() -> Response:
        if ctx.accounts is None:
            return _text(404)
        ctx.accounts.tokens.revoke(request.form.get("token", ""))
        return _text(200)  # RFC 7009: also for a token it does not know

    # -- the embedded platform's own endpoints, not OSCAR's ------------------------------------

    @app.get("/system/local/exposed/<name>")
    def exposed_replicas(name: str) -> Response:
        """Every replica (pod) of an exposed service, with its pid and readiness (emulator only)."""
        if ctx.registry.get(name) is None and (ctx.exposed is None or not ctx.exposed.has(name)):
            return _text(404, f"Service '{name}' not found")
        return jsonify(ctx.exposed.replicas(name) if ctx.exposed is not None else [])

    @app.get("/system/local/minio")
    def minio_restarts() -> Response:
        """How long each MinIO restart lasts, how many there were, whether they cut storage."""
        return jsonify(minio.report())

    @app.put("/system/local/minio")
    def set_minio_restarts() -> Response:
        """``{"restart_seconds": S}``: the length of the next restarts (tests shorten them)."""
        body = _read_json()
        seconds = body.get("restart_seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return _text(400, "restart_seconds must be a number of seconds, 0 or more")
        minio.seconds = float(seconds)
        return jsonify(minio.report())

    # -- fault injection: the embedded platform's own endpoints, not OSCAR's -----------------

    @app.get("/system/local/faults")
    def list_faults() -> Response:
        return jsonify(ctx.faults.report() if ctx.faults else [])

    @app.post("/system/local/faults")
    def add_faults() -> Response:
        if ctx.faults is None:
            return _text(404, "fault injection is not available")
        try:
            ctx.faults.add([Fault.from_json(rule) for rule in _read_json()])
        except (TypeError, ValueError) as err:
            return _text(400, f"bad fault rule: {err}")
        return _text(201)

    @app.delete("/system/local/faults")
    def clear_faults() -> Response:
        if ctx.faults is not None:
            ctx.faults.clear()
        return _text(204)

    return app


class ApiServer:
    """werkzeug's threaded server on a free loopback port, run on a background thread."""

    def __init__(self, app: Flask) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="oscar-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
