"""The storage front: MinIO's per-request rules in front of moto, and injected outages.

moto accepts any access key and knows no users. Every client (the user's, the
functions', the platform's own) reaches storage through this proxy instead, as
all reach one MinIO, and it applies, request by request:

- **accounts and signatures**: every request's AWS Signature V4 (header or presigned
  query), its date and its body's signed SHA-256 are checked with the secret of the account
  it names, as MinIO does (see signature_checks.py); an unknown access key is refused (403
  ``InvalidAccessKeyId``), a wrong signature too (403 ``SignatureDoesNotMatch``). Requests
  are counted per signing access key (:meth:`StorageGate.counts`);
- **bucket policies**: ``allowed(access_key, bucket)`` decides whether an OIDC
  user's account may touch a bucket (OSCAR grants a service's users access to
  its buckets); an account made through MinIO's admin API gets what its canned
  policies allow, action by action (``accounts.MinioIam``); a refusal is 403
  ``AccessDenied``. A bucket listing shows such accounts only the buckets they
  may list, as MinIO's ``ListBucketsHandler`` filters it (see s3_permissions.py);
- **MinIO's admin API** (``/minio/admin/v3/``): the users and canned policies
  subset minio-py's ``MinioAdmin`` uses (see minio_admin_api.py), for the root account
  or an account whose policies grant the ``admin:`` action;
- **bucket notifications**: each successful creation (PUT, copy, completed
  multipart upload) is reported to ``on_created`` with the uploader's access key,
  which MinIO puts in its event as ``principalId`` and OSCAR uses to choose the
  function's credentials;
- **listening to notifications** (MinIO's extension ``GET /<bucket>?events=...``,
  minio-py's ``listen_bucket_notification``): served here, from the same
  creation events, as MinIO's ``ListenNotificationHandler`` does (see
  listen_notifications.py);
- **conditional writes**: a MinIO release before 2024-05 (minio_release.py) ignores
  ``If-None-Match`` on PUT: the header is dropped before moto sees it, so the PUT overwrites;
- **outages** (fault injection): answer 503, or refuse connections, for a while,
  cutting the connections already open as a restarting server would.

It is an HTTP/1.1 proxy that reads each request's head, forwards its body by
``Content-Length`` (or chunked) and relays the response the same way (see http_framing.py),
so kept-alive connections are checked request by request.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from .http_framing import MessageHead, MessageStream, PeerClosed, s3_error, s3_target, unchunk
from .listen_notifications import ListenStreams, ObjectCreation, is_listen_request
from .minio_admin_api import admin_refusal, answer_admin, is_admin_request
from .s3_permissions import S3Permissions
from .signature_checks import Authenticated, AuthError, BodyCheck, auth_error, authenticate

if TYPE_CHECKING:
    from .accounts import MinioIam
    from .faults import Fault

log = logging.getLogger(__name__)
_IF_NONE_MATCH = re.compile(rb"\r\nif-none-match:[^\r]*", re.IGNORECASE)


class StorageGate:
    """Forwards S3 requests to moto, applying MinIO's rules (see the module's docstring)."""

    def __init__(
        self,
        upstream_port: int,
        secret_of: Callable[[str], str | None],
        iam: MinioIam,
        allowed: Callable[[str, str], bool] | None = None,
        if_none_match: bool = True,
    ) -> None:
        self._if_none_match = if_none_match  # False: MinIO before 2024-05 (minio_release.py) ignores it
        self._upstream = ("127.0.0.1", upstream_port)
        self._secret_of = secret_of  # an enabled account's secret key, for checking its signatures
        self._counts: Counter[str] = Counter()  # requests per access key ("": not authenticated)
        self._iam = iam  # the root account, and the accounts made through the admin API
        self._permissions = S3Permissions(iam, allowed)  # the other accounts' (OIDC ones by ``allowed``)
        self._lock = threading.Lock()
        self._mode: str | None = None
        self._open: set[socket.socket] = set()
        # (bucket, key, size or None, etag, uploader's access key) of every object created
        self.on_created: Callable[[str, str, int | None, str, str], None] | None = None
        self._stopping = threading.Event()
        self._streams = ListenStreams(self._upstream, iam, self._stopping)
        self._listener: socket.socket | None = self._listen_below_ephemeral()
        self.port = self._listener.getsockname()[1]
        self._held: socket.socket | None = None  # the port's placeholder during a refusing outage
        self._acceptor = threading.Thread(target=self._accept_loop, name="storage-gate", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._acceptor.start()

    @staticmethod
    def _bound(port: int) -> socket.socket:
        """A socket bound to ``port``, not yet listening: connections to it are refused."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Lets an outage hold the port with a second, non-listening socket before the listener
        # closes: nothing else can take the port meanwhile.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def _listen(self, port: int, sock: socket.socket | None = None) -> socket.socket:
        sock = sock or self._bound(port)
        sock.listen(128)
        sock.settimeout(0.1)
        return sock

    def _listen_below_ephemeral(self) -> socket.socket:
        """A listener on a free port below the kernel's ephemeral range: an outage closes it and
        binds the port again, which an outgoing connection (of this machine's other clients, a
        parallel test run's too) could otherwise have taken meanwhile as its local port."""
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
                ephemeral = int(ports.read().split()[0])
        except (OSError, ValueError, IndexError):  # not Linux: the kernel's choice
            return self._listen(0)
        for port in random.sample(range(max(1024, ephemeral - 12_000), ephemeral), 200):
            with contextlib.suppress(OSError):
                return self._listen(port)
        return self._listen(0)

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
                self._held = self._bound(self.port)  # holds the port, refusing, while MinIO is down
                self._listener.close()
                self._listener = None
            victims = list(self._open)
        for sock in victims:
            _shut(sock)

    def _end(self) -> None:
        with self._lock:
            if self._mode == "refuse" and not self._stopping.is_set():
                self._listener = self._listen(self.port, self._held)
                self._held = None
            self._mode = None

    # -- requests ----------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Requests received so far per access key that signed them (a listening stream counts once,
        when it is asked for); ``""`` counts those that proved no account (unsigned, or refused
        while checking their signature)."""
        with self._lock:
            return dict(self._counts)

    def _authenticate(self, head: MessageHead) -> Authenticated | AuthError:
        try:
            auth: Authenticated | AuthError = authenticate(head, self._secret_of, self._iam.is_user)
        except AuthError as exc:
            auth = exc
        with self._lock:
            self._counts[auth.access_key if isinstance(auth, Authenticated) else ""] += 1
        if (
            isinstance(auth, Authenticated)
            and is_admin_request(head)
            and "x-amz-content-sha256" not in head.headers
        ):
            auth = auth_error("AccessDenied")  # validateAdminSignature: header-signed, payload hash given
        return auth

    def _refusal(self, head: MessageHead, auth: Authenticated | AuthError) -> bytes | None:
        with self._lock:
            mode = self._mode
        if mode == "503":
            return s3_error("503 Slow Down", "SlowDown", "Please reduce your request rate (injected fault).")
        if isinstance(auth, AuthError):
            if is_admin_request(head):
                return admin_refusal(head, auth)
            return auth.xml()
        access_key = auth.access_key
        if access_key == self._iam.root_access_key or is_admin_request(head):
            return None  # the admin API answers its own refusals, in JSON
        granted = self._permissions.grants(head, access_key)
        return None if granted else s3_error("403 Forbidden", "AccessDenied", "Access Denied.")

    def _serve(self, client_sock: socket.socket) -> None:
        client = MessageStream(client_sock)
        upstream_sock: socket.socket | None = None
        with self._lock:
            self._open.add(client_sock)
        try:
            while True:
                head = client.head()
                if head.headers.get("expect", "").lower() == "100-continue":
                    client_sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                auth = self._authenticate(head)
                refusal = self._refusal(head, auth)
                if refusal is not None or isinstance(auth, AuthError):
                    client.body(head, lambda piece: None)
                    client_sock.sendall(refusal or b"")
                    continue
                access_key = auth.access_key
                if is_listen_request(head):
                    client.body(head, lambda piece: None)
                    self._streams.serve(head, client_sock)
                    break  # a stream ends only with its connection
                if is_admin_request(head):
                    body: list[bytes] = []
                    check = BodyCheck(auth, body.append)
                    client.body(head, check.relay, check.data)
                    problem = check.problem()
                    check.finish()
                    client_sock.sendall(
                        answer_admin(head, b"".join(body), access_key, self._iam)
                        if problem is None
                        else admin_refusal(head, problem)
                    )
                    continue
                if upstream_sock is None:
                    upstream_sock = socket.create_connection(self._upstream, timeout=10)
                    upstream_sock.settimeout(None)
                    upstream = MessageStream(upstream_sock)
                    with self._lock:
                        self._open.add(upstream_sock)
                forwarded = head.raw.replace(b"\r\nExpect: 100-continue", b"").replace(
                    b"\r\nexpect: 100-continue", b""
                )
                if not self._if_none_match:
                    forwarded = _IF_NONE_MATCH.sub(b"", forwarded)
                problem = None
                if not auth.checks_body:
                    upstream_sock.sendall(forwarded)
                    client.body(head, upstream_sock.sendall)
                elif not head.chunked and head.length == 0:
                    problem = BodyCheck(
                        auth, upstream_sock.sendall
                    ).problem()  # checked before anything is sent
                    if problem is None:
                        upstream_sock.sendall(forwarded)
                else:
                    # Relayed as it comes, hashed on the way; its last piece is held back until the
                    # hashes match, so moto never gets a whole request with a body MinIO would refuse.
                    upstream_sock.sendall(forwarded)
                    check = BodyCheck(auth, upstream_sock.sendall)
                    client.body(head, check.relay, check.data)
                    problem = check.problem()
                    if problem is None:
                        check.finish()
                    else:  # the incomplete request dies with its connection
                        with self._lock:
                            self._open.discard(upstream_sock)
                        _shut(upstream_sock)
                        upstream_sock.close()
                        upstream_sock = None
                if problem is not None:
                    client_sock.sendall(problem.xml())
                    continue
                if s3_target(head)[1] == "" and access_key != self._iam.root_access_key:
                    response, keep_alive = self._relay_bucket_list(access_key, upstream, client_sock)
                else:
                    response, keep_alive = self._relay_response(head, upstream, client_sock)
                self._report_creation(head, response, access_key)
                if not keep_alive:
                    break
        except (PeerClosed, OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._open.difference_update({client_sock, upstream_sock})
            for sock in (client_sock, upstream_sock):
                if sock is not None:
                    _shut(sock)
                    sock.close()

    @staticmethod
    def _relay_response(
        request: MessageHead, upstream: MessageStream, client: socket.socket
    ) -> tuple[MessageHead, bool]:
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

    def _relay_bucket_list(
        self, access_key: str, upstream: MessageStream, client: socket.socket
    ) -> tuple[MessageHead, bool]:
        """Relay a ListBuckets answer showing only the buckets the account may list."""
        while True:
            response = upstream.head()
            if int(response.first.split(" ")[1]) >= 200:
                break
        raw: list[bytes] = []
        upstream.body(response, raw.append)
        body = b"".join(raw)
        if response.chunked:
            body = unchunk(body)
        if response.first.split(" ")[1] == "200":
            body = self._permissions.visible_buckets(access_key, body)
        lines = [
            line
            for line in response.raw.decode("latin-1").split("\r\n")[:-2]
            if line.split(":")[0].lower() not in ("content-length", "transfer-encoding")
        ]
        client.sendall(
            ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode("latin-1") + body
        )
        return response, response.headers.get("connection", "").lower() != "close"

    def _report_creation(self, head: MessageHead, response: MessageHead, uploader: str) -> None:
        method, bucket, key, query = s3_target(head)
        if not 200 <= int(response.first.split(" ")[1]) < 300 or not key:
            return
        upload = (method == "PUT" and "partNumber=" not in query) or (
            method == "POST" and "uploadId=" in query
        )
        if not upload:
            return
        # A plain PUT says its size; a copy or a multipart completion does not (nor its ETag).
        copy = "x-amz-copy-source" in head.headers
        plain = method == "PUT" and not copy
        size = head.headers.get("x-amz-decoded-content-length", head.length) if plain else None
        etag = response.headers.get("etag", "").strip('"') if plain else ""
        if self.on_created is not None:
            self.on_created(bucket, key, None if size is None else int(size), etag, uploader)
        event = "s3:ObjectCreated:" + ("Put" if plain else "Copy" if copy else "CompleteMultipartUpload")
        metadata = {name: value for name, value in head.headers.items() if name.startswith("x-amz-meta-")}
        created = ObjectCreation(
            bucket,
            key,
            event,
            None if size is None else int(size),
            etag,
            head.headers.get("content-type", "") if plain else "",
            metadata if plain else {},
            uploader,
        )
        self._streams.publish(created)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for sock in (self._listener, self._held):
                if sock is not None:
                    sock.close()
            self._listener = self._held = None
            victims = list(self._open)
        for sock in victims:
            _shut(sock)
        self._acceptor.join(2)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
