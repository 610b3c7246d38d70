"""Storage triggers: what MinIO's bucket notification to OSCAR's webhook does.

OSCAR subscribes each input path to ``s3:ObjectCreated:*`` with a prefix filter
(``enableInputNotification`` in ``pkg/utils/minio.go``): every PUT, completed
multipart upload or copy under the path invokes the service once, with a
MinIO-style event. The storage front (gate.py) sees each successful creation,
as MinIO's notifier does inside the server, and reports it here; nothing is
listed, so an event costs the same whatever the folder holds. Objects present
when a service is created never trigger (a webhook reports only later events);
a re-created or overwritten key triggers again. Folder markers (keys ending in
"/") never trigger.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from minio import Minio

from .faults import FaultPlan
from .registry import ServiceRegistry

log = logging.getLogger(__name__)


def minio_event(
    bucket: str, key: str, size: int = 0, etag: str = "", access_key: str = "minio"
) -> dict[str, Any]:
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


class TriggerNotifier:
    """Turns reported object creations into ``submit(service_name, event_body)`` calls, one per
    service whose input path holds the object, in creation order, from a thread of its own (a
    webhook call never holds up the upload that caused it)."""

    def __init__(
        self,
        registry: ServiceRegistry,
        client: Minio,
        submit: Callable[[str, bytes], object],
        faults: FaultPlan | None = None,
    ) -> None:
        self._registry = registry
        self._client = client  # direct to the S3 server, for the size of multipart uploads and copies
        self._submit = submit
        self._faults = faults or FaultPlan()
        self._events: queue.SimpleQueue[tuple[list[str], str, str, int | None, str, str] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name="trigger-notifier", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._events.put(None)
        if self._thread.is_alive():
            self._thread.join()

    def created(self, bucket: str, key: str, size: int | None, etag: str, uploader: str) -> None:
        """An object was created (``size`` None when the request did not carry it). The services
        to notify are those watching when it was created, as MinIO applies the notification rules
        in force at the request: a service created while the event waits is not among them."""
        if not key.endswith("/") and (watchers := self._watchers(bucket, key)):
            self._events.put((watchers, bucket, key, size, etag, uploader))

    def _loop(self) -> None:
        while (event := self._events.get()) is not None:
            try:
                self._notify(*event)
            except Exception:  # like a lost webhook call
                log.exception("could not deliver the storage event of %s/%s", event[1], event[2])

    def _watchers(self, bucket: str, key: str) -> list[str]:
        return [
            name
            for name in self._registry.names()
            if any(bucket == b and key.startswith(prefix) for b, prefix in self._registry.input_watches(name))
        ]

    def _notify(
        self, watchers: list[str], bucket: str, key: str, size: int | None, etag: str, uploader: str
    ) -> None:
        if size is None:
            stat = self._client.stat_object(bucket, key)
            size, etag = stat.size or 0, stat.etag or etag
        for service in watchers:
            if self._faults.take("drop_trigger", service, key):
                continue  # a lost webhook call
            body = json.dumps(minio_event(bucket, key, size or 0, etag, uploader)).encode()
            for _ in range(2 if self._faults.take("duplicate_trigger", service, key) else 1):
                try:
                    self._submit(service, body)
                except Exception:  # like a lost webhook call
                    log.exception("could not invoke %s", service)
