"""Storage triggers: what MinIO's webhook to OSCAR does, done by listing (moto has no listen API).

Each service's input paths are listed every ``interval`` seconds. A key that
appears (or whose ETag/modification time changes, as a new PUT would notify)
invokes the service once with a MinIO-style event; a key that disappears is
forgotten, so creating it again triggers again. Objects present when a watch
starts do not trigger, as a webhook only reports later events. Folder markers
(keys ending in "/") never trigger.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
import uuid
from collections.abc import Callable
from urllib.parse import quote_plus

from minio import Minio
from minio.error import S3Error

from .faults import FaultPlan
from .registry import ServiceRegistry

log = logging.getLogger(__name__)

Version = tuple[str, str]  # (etag, last-modified) of one object


def minio_event(bucket: str, key: str, size: int = 0, etag: str = "", access_key: str = "minio") -> dict:
    """The notification MinIO posts to ``/job/NAME`` for a new object (the fields the supervisor reads and a few more)."""
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    request_id = uuid.uuid4().hex[:16].upper()
    return {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{bucket}/{key}",
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": now,
                "eventName": "s3:ObjectCreated:Put",
                "userIdentity": {"principalId": access_key},
                "requestParameters": {
                    "principalId": access_key,
                    "region": "",
                    "sourceIPAddress": "127.0.0.1",
                },
                "responseElements": {"x-amz-request-id": request_id},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": access_key},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    # MinIO query-escapes the key here ('/' becomes %2F).
                    "object": {
                        "key": quote_plus(key, safe=""),
                        "size": size,
                        "eTag": etag,
                        "sequencer": request_id,
                    },
                },
                "source": {"host": "127.0.0.1", "port": "", "userAgent": ""},
            }
        ],
    }


class TriggerPoller:
    """Polls every service's input paths and calls ``submit(service_name, event_body)`` for new objects."""

    def __init__(
        self,
        registry: ServiceRegistry,
        client: Minio,
        submit: Callable[[str, bytes], object],
        interval: float = 0.075,
        access_key: str = "minio",
        faults: FaultPlan | None = None,
        uploader: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self._registry = registry
        self._faults = faults or FaultPlan()
        self._client = client
        self._submit = submit
        self._interval = interval
        self._access_key = access_key
        self._uploader = uploader or (lambda bucket, key: None)  # who wrote an object (MinIO knows)
        self._lock = threading.Lock()
        # (service, bucket, prefix) -> the objects seen there, as _list returns them
        self._seen: dict[tuple[str, str, str], dict[str, tuple[Version, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trigger-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def sync_service(self, name: str) -> None:
        """Start watching a service's (new) input paths now, so that uploads right after creation trigger."""
        watches = {(name, bucket, prefix) for bucket, prefix in self._registry.input_watches(name)}
        with self._lock:
            for watch in [w for w in self._seen if w[0] == name and w not in watches]:
                del self._seen[watch]
            for watch in watches - set(self._seen):
                self._seen[watch] = self._list(watch[1], watch[2])

    def drop_service(self, name: str) -> None:
        with self._lock:
            for watch in [w for w in self._seen if w[0] == name]:
                del self._seen[watch]

    def _list(self, bucket: str, prefix: str) -> dict[str, tuple[Version, int]]:
        """key -> ((etag, last-modified), size) of the objects under a prefix, folder markers excluded."""
        found = {}
        try:
            for obj in self._client.list_objects(bucket, prefix=prefix, recursive=True):
                if obj.object_name.endswith("/"):
                    continue
                version = (obj.etag or "", obj.last_modified.isoformat() if obj.last_modified else "")
                found[obj.object_name] = (version, obj.size or 0)
        except S3Error as err:
            # A deleted bucket holds nothing; if it comes back, its objects are new.
            if err.code != "NoSuchBucket":
                raise
        return found

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(self._interval):
            try:
                self._tick()
                failing = False
            except Exception:  # a failed listing is retried on the next tick
                if not failing:  # once per outage, not every tick
                    log.exception("trigger poll failed")
                failing = True

    def _tick(self) -> None:
        fired: list[tuple[str, bytes]] = []
        with self._lock:
            # One listing per distinct (bucket, prefix), shared by the services watching it.
            listings: dict[tuple[str, str], dict[str, tuple[Version, int]]] = {}
            for _service, bucket, prefix in self._seen:
                if (bucket, prefix) not in listings:
                    listings[(bucket, prefix)] = self._list(bucket, prefix)
            for watch, seen in self._seen.items():
                service, bucket, prefix = watch
                current = listings[(bucket, prefix)]
                new = [k for k, (version, _) in current.items() if k not in seen or seen[k][0] != version]
                # Oldest first, like the order in which MinIO would have notified.
                new.sort(key=lambda k: (current[k][0][1], k))
                for key in new:
                    if self._faults.take("drop_trigger", service, key):
                        continue  # a lost webhook call
                    (etag, _), size = current[key]
                    event = minio_event(bucket, key, size, etag, self._uploader(bucket, key) or self._access_key)
                    copies = 2 if self._faults.take("duplicate_trigger", service, key) else 1
                    fired.extend([(service, json.dumps(event).encode())] * copies)
                self._seen[watch] = dict(current)
        for service, body in fired:
            try:
                self._submit(service, body)
            except Exception:  # like a lost webhook call
                log.exception("could not invoke %s", service)
