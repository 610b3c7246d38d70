"""What a running function knows: its trigger, its output folder, its storage."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

from .. import layout
from ..signing import from_environment
from ..storage import Storage, config_from_function


@dataclass
class FunctionContext:
    service: str
    input_path: str
    key: str  # object key of the trigger, relative to the bucket
    output_dir: str
    storage: Storage

    def scratch(self, name: str) -> str:
        """A local path for a file this invocation produces."""
        return os.path.join(self.output_dir, name)

    def publish(self, job_id: str, key: str, path: str | None = None, data: bytes | None = None) -> bool:
        """Upload an object of a job ourselves rather than through the supervisor's outputs
        (its outcome is known here, and no bare-bucket output, which OSCAR >= 4.1 rewrites
        to a per-service bucket, is needed).

        The client deletes a finished job's manifest before its other objects, so checking
        the manifest *after* the upload and withdrawing the object if it is gone means no
        object outlives its job. Returns whether the object stays.
        """
        if path is not None:
            self.storage.put_file(key, path)
            os.remove(path)
        else:
            self.storage.put_bytes(key, data or b"")
        if self.storage.exists(layout.JobKeys(job_id).manifest):
            return True
        self.storage.delete([key])
        return False

    def read_input_json(self) -> dict:
        """The trigger the supervisor downloaded, once its signature is verified."""
        self.storage.verify_local(self.key, self.input_path)
        with open(self.input_path) as f:
            return json.load(f)

    def report_error(self, job_id: str, who: str, exc: BaseException) -> None:
        """Error marker, written directly so the client sees it even if the upload step never runs."""
        marker = {
            "job": job_id,
            "who": who,
            "service": self.service,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
        }
        print(marker["traceback"], file=sys.stderr, flush=True)
        self.publish(job_id, layout.JobKeys(job_id).error(who), data=json.dumps(marker).encode())


def serve(role: str, work: Callable[[FunctionContext], None]) -> int:
    """Run a function's work; any failure becomes an error marker of the job its trigger belongs to.

    The marker is named after the role and the trigger (e.g. ``mapper-000003_000004``), which
    needs nothing from the trigger's content, so an unreadable or refused trigger is reported too.
    """
    ctx = current()
    try:
        work(ctx)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the client
        job_id = layout.job_of_key(ctx.key)
        if job_id is None:
            raise
        name = ctx.key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        ctx.report_error(job_id, f"{role}-{name}", exc)
        return 1
    return 0


def _triggering_key(bucket: str) -> str:
    """The object key that invoked us: from the MinIO event, else STORAGE_OBJECT_KEY."""
    event = os.environ.get("EVENT", "")
    try:
        record = json.loads(event)["Records"][0]["s3"]
        return unquote(record["object"]["key"])
    except (ValueError, KeyError, IndexError, TypeError):
        key = os.environ.get("STORAGE_OBJECT_KEY", "")
        return key[len(bucket) + 1:] if key.startswith(bucket + "/") else key


@functools.lru_cache(maxsize=4)
def _storage(bucket: str, config_path: str, key_fingerprint: str) -> Storage:
    # Warm workers reuse the client (and its connection pool) across invocations.
    return Storage(config_from_function(bucket, config_path), signer=from_environment())


def _fingerprint() -> str:
    # Part of the cache key, so a warm worker serving another deployment gets its own signer.
    import hashlib

    return hashlib.sha256(os.environ.get("DRO_SIGNING_KEY", "").encode()).hexdigest()


def current() -> FunctionContext:
    bucket = os.environ["DRO_BUCKET"]
    config_path = os.environ.get("DRO_FUNCTION_CONFIG", "/oscar/config/function_config.yaml")
    return FunctionContext(
        service=os.environ.get("OSCAR_SERVICE_NAME", "?"),
        input_path=os.environ["INPUT_FILE_PATH"],
        key=_triggering_key(bucket),
        output_dir=os.environ["TMP_OUTPUT_DIR"],
        storage=_storage(bucket, config_path, _fingerprint()),
    )
