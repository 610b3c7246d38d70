"""OSCAR's REST API (the parts oscar-python and the project use), as a Flask app on loopback."""

from __future__ import annotations

import base64
import json
import logging
import platform as _platform
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

from .faults import Fault, FaultPlan
from .jobs import SUSPENDED, JobStore
from .services import ServiceRegistry
from .validation import ServiceError
from .versions import JOB_LISTING_LIMIT, OscarVersion

log = logging.getLogger(__name__)


@dataclass
class ApiContext:
    """What the API needs from the rest of the platform."""

    user: str
    password: str
    registry: ServiceRegistry
    store: JobStore
    minio_provider: dict[str, Any]
    submit: Callable[[dict[str, Any], bytes], Any]  # (service definition, event body) -> job
    service_changed: Callable[[str], None]  # after create/update: watch its inputs
    service_deleted: Callable[[str], None]  # after delete: stop watching, drop its jobs
    version: OscarVersion = OscarVersion.parse("4.1")
    capacity: float = 1.0
    faults: FaultPlan | None = None  # fault injection rules (not part of OSCAR's API)


def _encode_page(name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": name}).encode()).decode()


def _decode_page(token: str) -> str:
    if not token:
        return ""
    try:
        return str(json.loads(base64.urlsafe_b64decode(token.encode()))["after"])
    except (ValueError, KeyError, TypeError):
        raise ServiceError(500, "invalid continue token") from None


def _text(status: int, message: str = "") -> Response:
    return Response(message, status=status, mimetype="text/plain")


def _read_json() -> Any:
    try:
        return json.loads(request.get_data() or b"null")
    except ValueError as err:
        raise ServiceError(400, f"The service specification is not valid: {err}") from None


def create_app(ctx: ApiContext) -> Flask:
    app = Flask(__name__)
    # oscar-python asks for "/system/config/" as well as "/system/config".
    app.url_map.strict_slashes = False

    def basic_auth_ok() -> bool:
        auth = request.authorization
        if auth is None or auth.type != "basic":
            return False
        user_ok = secrets.compare_digest((auth.username or "").encode(), ctx.user.encode())
        password_ok = secrets.compare_digest((auth.password or "").encode(), ctx.password.encode())
        return user_ok and password_ok

    @app.before_request
    def require_basic_auth() -> Response | None:
        # Management endpoints take basic auth; /health and /job/NAME do not.
        if request.path.startswith("/system") and not basic_auth_ok():
            response = _text(401, "Unauthorized")
            response.headers["WWW-Authenticate"] = 'Basic realm="Authorization Required"'
            return response
        return None

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
                "version": ctx.version.label[1:],
                "git_commit": "local",
                "architecture": _platform.machine(),
                "kubernetes_version": "",
            }
        )

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
                "minio_provider": ctx.minio_provider,
                "allowed_image_repositories": [],
            }
        )

    @app.get("/system/services")
    def list_services() -> Response:
        return jsonify([ctx.registry.public(name) for name in ctx.registry.names()])

    @app.post("/system/services")
    def create_service() -> Response:
        service = ctx.registry.create(_read_json())
        ctx.service_changed(service["name"])
        return _text(201)

    @app.put("/system/services")
    def update_service() -> Response:
        service = ctx.registry.update(_read_json())
        if service is None:  # the release answers without changing anything
            return _text(200)
        ctx.service_changed(service["name"])
        return _text(204)

    @app.get("/system/services/<name>")
    def read_service(name: str) -> Response:
        service = ctx.registry.public(name)
        if service is None:
            return _text(404, f"Service '{name}' not found")
        return jsonify(service)

    @app.delete("/system/services/<name>")
    def delete_service(name: str) -> Response:
        ctx.registry.delete(name)
        ctx.service_deleted(name)
        return _text(204)

    @app.post("/job/<name>")
    def job(name: str) -> Response:
        service = ctx.registry.get(name)
        if service is None:
            return _text(404, f"Service '{name}' not found")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token.strip():
            return _text(401, "Unauthorized")
        if not secrets.compare_digest(token.strip().encode(), service["token"].encode()):
            return _text(401, "Unauthorized")
        ctx.submit(service, request.get_data())
        return _text(201)

    @app.get("/system/logs/<name>")
    def list_jobs(name: str) -> Response:
        if ctx.registry.get(name) is None:
            return _text(404, f"Service '{name}' not found")
        jobs = sorted(ctx.store.list(name), key=lambda job: job.name)
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
