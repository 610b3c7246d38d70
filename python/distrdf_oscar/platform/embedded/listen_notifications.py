"""Listening to bucket notifications: MinIO's ``GET /<bucket>?events=...`` extension.

minio-py's ``listen_bucket_notification`` asks MinIO for a never-ending stream of the events
of a bucket (or of all, on ``/``), filtered by name, prefix and suffix. The storage front
(gate.py) sees every object creation and publishes it to :class:`ListenStreams`, which serves
each open stream as MinIO's ``ListenNotificationHandler`` does: the same checks and refusals,
one JSON line per event, and MinIO's keep-alives.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import queue
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from .http_framing import MessageHead, s3_error, s3_target

if TYPE_CHECKING:
    from .accounts import MinioIam

# -- listening to bucket notifications (MinIO's ListenNotificationHandler) -------------------------
#
# Read in cmd/listen-notification-handlers.go of RELEASE.2022-05-08T23-50-31Z and
# RELEASE.2024-12-18T13-15-44Z, the names in internal/event/name.go (ParseName), the filter checks
# in internal/event/config.go (ValidateFilterRuleValue) and rules.go (NewPattern), the record in
# internal/event/event.go and cmd/event-notification.go (ToEvent, unescaped key for listeners).

# Every name ParseName accepts (2024; 2022 knows a subset): a listener may ask for any of them.
_EVENT_NAMES = frozenset(
    ["s3:BucketCreated:*", "s3:BucketRemoved:*", "s3:LifecycleDelMarkerExpiration:Delete"]
    + [f"s3:ObjectAccessed:{n}" for n in ("*", "Get", "GetRetention", "GetLegalHold", "Head", "Attributes")]
    + [
        f"s3:ObjectCreated:{n}"
        for n in (
            "*",
            "CompleteMultipartUpload",
            "Copy",
            "Post",
            "Put",
            "PutRetention",
            "PutLegalHold",
            "PutTagging",
            "DeleteTagging",
        )
    ]
    + [f"s3:ObjectRemoved:{n}" for n in ("*", "Delete", "DeleteMarkerCreated", "NoOP", "DeleteAllVersions")]
    + [
        f"s3:Replication:{n}"
        for n in (
            "*",
            "OperationFailedReplication",
            "OperationCompletedReplication",
            "OperationMissedThreshold",
            "OperationReplicatedAfterThreshold",
            "OperationNotTracked",
        )
    ]
    + [f"s3:ObjectRestore:{n}" for n in ("*", "Post", "Completed")]
    + [f"s3:ObjectTransition:{n}" for n in ("*", "Failed", "Complete")]
    + [f"s3:Scanner:{n}" for n in ("ManyVersions", "LargeVersions", "BigPrefix")]
)
KEEP_ALIVE = 0.5  # seconds between the " " MinIO writes to an idle stream (no ``ping`` asked for)


def _pattern(prefix: str, suffix: str) -> re.Pattern[str]:
    """MinIO's filter: ``prefix*`` + ``*suffix`` (NewPattern), matched with ``*`` as the only wildcard."""
    pattern = (
        prefix
        + ("" if not prefix or prefix.endswith("*") else "*")
        + ("" if not suffix or suffix.startswith("*") else "*")
        + suffix
    ).replace("**", "*") or "*"
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _filter_value_valid(value: str) -> bool:
    return (
        all(segment not in (".", "..") for segment in value.split("/"))
        and len(value.encode()) <= 1024
        and "\\" not in value
    )


@dataclass
class ObjectCreation:
    """An object creation as the storage front saw it."""

    bucket: str
    key: str
    event: str  # s3:ObjectCreated:Put, :Copy or :CompleteMultipartUpload
    size: int | None  # None when the request did not say (copies, multipart completions)
    etag: str
    content_type: str
    metadata: dict[str, str]
    principal: str
    when: float = field(default_factory=time.time)


@dataclass(eq=False)
class _Listener:
    bucket: str  # "" listens to every bucket (``GET /?events=``)
    names: frozenset[str]
    pattern: re.Pattern[str]
    events: queue.SimpleQueue[ObjectCreation] = field(default_factory=queue.SimpleQueue)

    def wants(self, created: ObjectCreation) -> bool:
        if self.bucket and created.bucket != self.bucket:
            return False
        family = created.event.rsplit(":", 1)[0] + ":*"
        return bool({created.event, family} & self.names) and self.pattern.fullmatch(created.key) is not None


def _record(created: ObjectCreation) -> dict[str, Any]:
    """The event as MinIO encodes it for a listener (``ToEvent(false)``: the key not escaped)."""
    when = _dt.datetime.fromtimestamp(created.when, _dt.UTC)
    request_id = f"{time.time_ns():X}"
    obj: dict[str, Any] = {"key": created.key}
    if created.size:
        obj["size"] = created.size
    if created.etag:
        obj["eTag"] = created.etag
    if created.content_type:
        obj["contentType"] = created.content_type
    if created.metadata:
        obj["userMetadata"] = created.metadata
    obj["sequencer"] = f"{int(created.when * 1e9):X}"
    principal = {"principalId": created.principal}
    return {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
        "eventName": created.event,
        "userIdentity": principal,
        "requestParameters": {**principal, "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {
            "x-amz-id-2": uuid.uuid4().hex,
            "x-amz-request-id": request_id,
            "x-minio-deployment-id": _DEPLOYMENT_ID,
            "x-minio-origin-endpoint": "",
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {
                "name": created.bucket,
                "ownerIdentity": principal,
                "arn": f"arn:aws:s3:::{created.bucket}",
            },
            "object": obj,
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": ""},
    }


_DEPLOYMENT_ID = str(uuid.uuid4())


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def is_listen_request(head: MessageHead) -> bool:
    """MinIO's ListenNotification route: GET on a bucket (or on ``/``) with an ``events`` query."""
    method, _, key, query = s3_target(head)
    return method == "GET" and not key and "events" in parse_qs(query, keep_blank_values=True)


class ListenStreams:
    """The open listening streams, each given the creations it asked for."""

    def __init__(self, upstream: tuple[str, int], iam: MinioIam, stopping: threading.Event) -> None:
        self._upstream = upstream  # moto, for the store's own look-ups
        self._iam = iam  # whose root account signs those look-ups
        self._stopping = stopping  # set when the storage front stops: every stream ends
        self._lock = threading.Lock()
        self._listeners: set[_Listener] = set()

    def publish(self, created: ObjectCreation) -> None:
        """Give an object's creation to every stream whose filter wants it."""
        with self._lock:
            listeners = [listener for listener in self._listeners if listener.wants(created)]
        for listener in listeners:
            listener.events.put(created)

    def _store_head(self, path: str) -> tuple[int, dict[str, str]]:
        """HEAD ``path`` on moto directly: the store's own look-up. moto checks no signature, but
        answers an anonymous request by the object's ACL."""
        conn = http.client.HTTPConnection(*self._upstream, timeout=10)
        credential = f"{self._iam.root_access_key}/20000101/us-east-1/s3/aws4_request"
        try:
            conn.request(
                "HEAD",
                quote(path),
                headers={
                    "Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=0"
                },
            )
            response = conn.getresponse()
            response.read()
            return response.status, {name.lower(): value for name, value in response.getheaders()}
        finally:
            conn.close()

    def serve(self, head: MessageHead, sock: socket.socket) -> None:
        """Serve one ``GET /<bucket>?events=...`` as MinIO does: checks first (an error is an
        ordinary answer), then a chunked ``text/event-stream`` of one JSON line per event,
        ``{"Records":[...]}``, and a keep-alive: " " every 0.5 s, or with ``ping=N`` (2024)
        ``{"Records":null}`` every N seconds."""
        _, bucket, _, query = s3_target(head)
        values = parse_qs(query, keep_blank_values=True)
        problem = None
        for name, what in (("prefix", "prefix"), ("suffix", "suffix")):
            given = values.get(name, [])
            if len(given) > 1:
                problem = (
                    "400 Bad Request",
                    "InvalidArgument",
                    f"Cannot specify more than one {what} rule in a filter.",
                )
            elif given and not _filter_value_valid(given[0]):
                problem = (
                    "400 Bad Request",
                    "InvalidArgument",
                    "Size of filter rule value cannot exceed 1024 bytes in UTF-8 representation",
                )
        names = values.get("events", [])
        if problem is None and any(name not in _EVENT_NAMES for name in names):
            problem = (
                "400 Bad Request",
                "InvalidArgument",
                "A specified event is not supported for notifications.",
            )
        ping = values.get("ping", [""])[0]
        if problem is None and ping and (not ping.isdigit() or int(ping) < 1):
            problem = (
                "400 Bad Request",
                "AuthorizationQueryParametersError",  # ErrInvalidQueryParams, as MinIO
                (
                    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                    "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
                ),
            )
        if problem is None and bucket and self._store_head("/" + bucket)[0] == 404:
            problem = ("404 Not Found", "NoSuchBucket", "The specified bucket does not exist")
        if problem is not None:
            sock.sendall(s3_error(*problem))
            return
        listener = _Listener(
            bucket, frozenset(names), _pattern(values.get("prefix", [""])[0], values.get("suffix", [""])[0])
        )
        with self._lock:
            self._listeners.add(listener)
        try:
            sock.sendall(
                (
                    "HTTP/1.1 200 OK\r\nServer: MinIO\r\nAccept-Ranges: bytes\r\nCache-Control: no-cache\r\n"
                    "Content-Type: text/event-stream\r\nX-Accel-Buffering: no\r\n"
                    f"X-Amz-Request-Id: {time.time_ns():X}\r\nTransfer-Encoding: chunked\r\n\r\n"
                ).encode()
            )
            period = float(ping) if ping else KEEP_ALIVE
            tick = time.monotonic() + period
            while not self._stopping.is_set():
                try:
                    created = listener.events.get(timeout=max(0.0, tick - time.monotonic()))
                except queue.Empty:
                    sock.sendall(_chunk(b'{"Records":null}\n' if ping else b" "))
                    tick += period
                    continue
                if created.size is None:
                    status, headers = self._store_head(f"/{created.bucket}/{created.key}")
                    if status == 200:
                        created.size = int(headers.get("content-length", "0"))
                        created.etag = headers.get("etag", "").strip('"')
                        created.content_type = headers.get("content-type", "")
                        created.metadata = {k: v for k, v in headers.items() if k.startswith("x-amz-meta-")}
                line = json.dumps({"Records": [_record(created)]}, separators=(",", ":")) + "\n"
                sock.sendall(_chunk(line.encode()))
        except OSError:
            pass  # the client went away, or an outage cut the connection
        finally:
            with self._lock:
                self._listeners.discard(listener)
