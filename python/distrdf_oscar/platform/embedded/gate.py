"""The storage front: MinIO's per-request rules in front of moto, and injected outages.

moto accepts any access key and knows no users. Every client (the user's, the
functions', the platform's own) reaches storage through this proxy instead, as
all reach one MinIO, and it applies, request by request:

- **accounts**: a request signed with an unknown access key is refused (403
  ``InvalidAccessKeyId``), as MinIO does;
- **bucket policies**: ``allowed(access_key, bucket)`` decides whether a user may
  touch a bucket (OSCAR grants a service's users access to its buckets); a
  refusal is 403 ``AccessDenied``;
- **bucket notifications**: each successful creation (PUT, copy, completed
  multipart upload) is reported to ``on_created`` with the uploader's access key,
  which MinIO puts in its event as ``principalId`` and OSCAR uses to choose the
  function's credentials;
- **outages** (fault injection): answer 503, or refuse connections, for a while,
  cutting the connections already open as a restarting server would.

It is an HTTP/1.1 proxy that reads each request's head, forwards its body by
``Content-Length`` (or chunked) and relays the response the same way, so
kept-alive connections are checked request by request.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from .faults import Fault

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


@dataclass
class _Head:
    raw: bytes  # the head as received, through the blank line
    first: str  # request or status line
    headers: dict[str, str]  # lower-case names

    @property
    def length(self) -> int:
        return int(self.headers.get("content-length", "0") or 0)

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


class _Closed(Exception):
    """The peer closed the connection (between requests: the normal end)."""


class _Stream:
    """A socket with a read buffer, for parsing HTTP message by message."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(_CHUNK)
        if not chunk:
            raise _Closed
        self._buffer += chunk

    def head(self) -> _Head:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > 1 << 20:
                raise _Closed
            self._fill()
        raw, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return _Head(raw + b"\r\n\r\n", lines[0], headers)

    def line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def exactly(self, count: int, sink: Callable[[bytes], None]) -> None:
        while count > 0:
            if not self._buffer:
                self._fill()
            piece, self._buffer = self._buffer[:count], self._buffer[count:]
            count -= len(piece)
            sink(piece)

    def until_closed(self, sink: Callable[[bytes], None]) -> None:
        with contextlib.suppress(_Closed):
            while True:
                if self._buffer:
                    piece, self._buffer = self._buffer, b""
                    sink(piece)
                self._fill()

    def body(self, head: _Head, sink: Callable[[bytes], None]) -> None:
        """Relay a message body framed by ``head`` (a request's, or a response with a body)."""
        if head.chunked:
            while True:
                size_line = self.line()
                sink(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.line()) != b"\r\n":
                        sink(trailer)
                    sink(b"\r\n")
                    return
                self.exactly(size + 2, sink)
        else:
            self.exactly(head.length, sink)


def access_key_of(head: _Head) -> str | None:
    """The access key a request is signed with (SigV4 header or presigned query), if any."""
    text = head.headers.get("authorization", "")
    if "Credential=" in text:
        return text.split("Credential=", 1)[1].split("/", 1)[0]
    query = urlsplit(head.first.split(" ")[1] if " " in head.first else "").query
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name == "X-Amz-Credential":
            return unquote(value).split("/", 1)[0]
    return None


def _target(head: _Head) -> tuple[str, str, str, str]:
    """(method, bucket, key, query) of a path-style S3 request."""
    method, target = head.first.split(" ")[:2]
    parts = urlsplit(target)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    return method, bucket, key, parts.query


def _error(status: str, code: str, message: str) -> bytes:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)


class StorageGate:
    """Forwards S3 requests to moto, applying MinIO's rules (see the module's docstring)."""

    def __init__(self, upstream_port: int, keys: Callable[[], set[str]],
                 allowed: Callable[[str, str], bool] | None = None) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._keys = keys  # the access keys storage knows
        self._allowed = allowed or (lambda access_key, bucket: True)
        self._lock = threading.Lock()
        self._mode: str | None = None
        self._open: set[socket.socket] = set()
        # (bucket, key, size or None, etag, uploader's access key) of every object created
        self.on_created: Callable[[str, str, int | None, str, str], None] | None = None
        self._stopping = threading.Event()
        self._listener: socket.socket | None = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="storage-gate", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._acceptor.start()

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.settimeout(0.1)
        return sock

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:  # refusing connections: nothing listens on the port
                time.sleep(0.05)
                continue
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(None)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    # -- outages -----------------------------------------------------------------

    def schedule(self, rule: Fault) -> None:
        def outage() -> None:
            if self._stopping.wait(rule.after):
                return
            rule.fired = 1
            self._begin(rule.mode or "503")
            log.warning("storage outage (%s) for %.1f s", rule.mode, rule.seconds)
            self._stopping.wait(rule.seconds)
            self._end()

        threading.Thread(target=outage, name="storage-outage", daemon=True).start()

    def _begin(self, mode: str) -> None:
        with self._lock:
            self._mode = mode
            if mode == "refuse" and self._listener is not None:
                self._listener.close()
                self._listener = None
            victims = list(self._open)
        for sock in victims:
            _shut(sock)

    def _end(self) -> None:
        with self._lock:
            if self._mode == "refuse" and not self._stopping.is_set():
                self._listener = self._listen(self.port)
            self._mode = None

    # -- requests ----------------------------------------------------------------

    def _refusal(self, head: _Head) -> bytes | None:
        with self._lock:
            mode = self._mode
        if mode == "503":
            return _error("503 Slow Down", "SlowDown", "Please reduce your request rate (injected fault).")
        access_key = access_key_of(head)
        if access_key is None or access_key not in self._keys():
            return _error("403 Forbidden", "InvalidAccessKeyId",
                          "The Access Key Id you provided does not exist in our records.")
        _, bucket, _, _ = _target(head)
        if bucket and not self._allowed(access_key, bucket):
            return _error("403 Forbidden", "AccessDenied", "Access Denied.")
        return None

    def _serve(self, client_sock: socket.socket) -> None:
        client = _Stream(client_sock)
        upstream_sock: socket.socket | None = None
        with self._lock:
            self._open.add(client_sock)
        try:
            while True:
                head = client.head()
                if head.headers.get("expect", "").lower() == "100-continue":
                    client_sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                refusal = self._refusal(head)
                if refusal is not None:
                    client.body(head, lambda piece: None)
                    client_sock.sendall(refusal)
                    continue
                if upstream_sock is None:
                    upstream_sock = socket.create_connection(self._upstream, timeout=10)
                    upstream_sock.settimeout(None)
                    upstream = _Stream(upstream_sock)
                    with self._lock:
                        self._open.add(upstream_sock)
                forwarded = head.raw.replace(b"\r\nExpect: 100-continue", b"").replace(
                    b"\r\nexpect: 100-continue", b"")
                upstream_sock.sendall(forwarded)
                client.body(head, upstream_sock.sendall)
                response, keep_alive = self._relay_response(head, upstream, client_sock)
                self._report_creation(head, response)
                if not keep_alive:
                    break
        except (_Closed, OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._open.difference_update({client_sock, upstream_sock})
            for sock in (client_sock, upstream_sock):
                if sock is not None:
                    _shut(sock)
                    sock.close()

    @staticmethod
    def _relay_response(request: _Head, upstream: _Stream, client: socket.socket) -> tuple[_Head, bool]:
        """Relay one response: its head, and whether the connection stays open after it."""
        while True:
            response = upstream.head()
            client.sendall(response.raw)
            status = int(response.first.split(" ")[1])
            if status >= 200:
                break  # 1xx are interim: the real answer follows
        method = request.first.split(" ")[0]
        if method == "HEAD" or status in (204, 304):
            pass
        elif response.chunked or "content-length" in response.headers:
            upstream.body(response, client.sendall)
        else:
            upstream.until_closed(client.sendall)
            return response, False
        return response, response.headers.get("connection", "").lower() != "close"

    def _report_creation(self, head: _Head, response: _Head) -> None:
        method, bucket, key, query = _target(head)
        if not 200 <= int(response.first.split(" ")[1]) < 300 or not key:
            return
        upload = (method == "PUT" and "partNumber=" not in query) or (method == "POST" and "uploadId=" in query)
        if upload and self.on_created is not None:
            # A plain PUT says its size; a copy or a multipart completion does not (nor its ETag).
            plain = method == "PUT" and "x-amz-copy-source" not in head.headers
            size = head.headers.get("x-amz-decoded-content-length", head.length) if plain else None
            etag = response.headers.get("etag", "").strip('"') if plain else ""
            self.on_created(bucket, key, None if size is None else int(size), etag, access_key_of(head) or "")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            victims = list(self._open)
        for sock in victims:
            _shut(sock)
        self._acceptor.join(2)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
