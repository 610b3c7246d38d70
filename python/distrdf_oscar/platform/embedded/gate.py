"""The storage front: MinIO's per-request rules in front of moto, and injected outages.

moto accepts any access key and knows no users. Every client (the user's, the
functions', the platform's own) reaches storage through this proxy instead, as
all reach one MinIO, and it applies, request by request:

- **accounts and signatures**: every request's AWS Signature V4 (header or presigned
  query), its date and its body's signed SHA-256 are checked with the secret of the account
  it names, as MinIO does (see :func:`authenticate`); an unknown access key is refused (403
  ``InvalidAccessKeyId``), a wrong signature too (403 ``SignatureDoesNotMatch``). Requests
  are counted per signing access key (:meth:`StorageGate.counts`);
- **bucket policies**: ``allowed(access_key, bucket)`` decides whether an OIDC
  user's account may touch a bucket (OSCAR grants a service's users access to
  its buckets); an account made through MinIO's admin API gets what its canned
  policies allow, action by action (``accounts.MinioIam``); a refusal is 403
  ``AccessDenied``. A bucket listing shows such accounts only the buckets they
  may list, as MinIO's ``ListBucketsHandler`` filters it;
- **MinIO's admin API** (``/minio/admin/v3/``): the users and canned policies
  subset minio-py's ``MinioAdmin`` uses (see ``_ADMIN``), for the root account
  or an account whose policies grant the ``admin:`` action;
- **bucket notifications**: each successful creation (PUT, copy, completed
  multipart upload) is reported to ``on_created`` with the uploader's access key,
  which MinIO puts in its event as ``principalId`` and OSCAR uses to choose the
  function's credentials;
- **listening to notifications** (MinIO's extension ``GET /<bucket>?events=...``,
  minio-py's ``listen_bucket_notification``): served here, from the same
  creation events, as MinIO's ``ListenNotificationHandler`` does (see
  :class:`_Listener`);
- **outages** (fault injection): answer 503, or refuse connections, for a while,
  cutting the connections already open as a restarting server would.

It is an HTTP/1.1 proxy that reads each request's head, forwards its body by
``Content-Length`` (or chunked) and relays the response the same way, so
kept-alive connections are checked request by request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import hmac
import http.client
import io
import json
import logging
import queue
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

from .accounts import IamError, MinioIam

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

    def body(
        self, head: _Head, sink: Callable[[bytes], None], data: Callable[[bytes], None] | None = None
    ) -> None:
        """Relay a message body framed by ``head`` (a request's, or a response with a body);
        ``data`` also gets the body's bytes without their framing."""

        def both(piece: bytes) -> None:
            sink(piece)
            if data is not None:
                data(piece)

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
                self.exactly(size, both)
                self.exactly(2, sink)
        else:
            self.exactly(head.length, both)


# -- AWS Signature V4, checked as MinIO checks it --------------------------------------------------
#
# Read in minio/minio RELEASE.2024-12-18T13-15-44Z: cmd/auth-handler.go (getRequestAuthType,
# setAuthMiddleware's date check, isReqAuthenticated, validateAdminSignature), cmd/signature-v4.go
# (doesSignatureMatch, doesPresignedSignatureMatch, the canonical request), cmd/signature-v4-parser.go
# (parseSignV4, parsePreSignV4, parseCredentialHeader), cmd/signature-v4-utils.go
# (extractSignedHeaders, getContentSha256Cksum, skipContentSha256Cksum, checkKeyValid) and
# cmd/streaming-signature-v4.go; the codes and messages are cmd/api-errors.go's. The server's
# region is MinIO's default (none configured): any region a request was signed for is accepted.

SIGN_V4 = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60.0  # seconds: MinIO's globalMaxSkewTime
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_STREAMING = ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
_UNRESERVED = "-_.~"  # with letters and digits: what s3utils.EncodePath and url.QueryEscape keep


class AuthError(Exception):
    """A request MinIO refuses before any handler runs: HTTP status, S3 error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def xml(self) -> bytes:
        return _error(
            f"{self.status} {http.client.responses.get(self.status, 'Error')}", self.code, str(self)
        )


_ERR: dict[str, tuple[int, str, str]] = {
    "SignatureDoesNotMatch": (
        403,
        "SignatureDoesNotMatch",
        (
            "The request signature we calculated does not match "
            "the signature you provided. Check your key and signing method."
        ),
    ),
    "InvalidAccessKeyId": (
        403,
        "InvalidAccessKeyId",
        "The Access Key Id you provided does not exist in our records.",
    ),
    "AccessKeyDisabled": (
        403,
        "InvalidAccessKeyId",
        "Your account is disabled; please contact your administrator.",
    ),
    "RequestTimeTooSkewed": (
        403,
        "RequestTimeTooSkewed",
        "The difference between the request time and the server's time is too large.",
    ),
    "ContentSHA256Mismatch": (
        400,
        "XAmzContentSHA256Mismatch",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
    ),
    "MissingDateHeader": (
        400,
        "AccessDenied",
        "AWS authentication requires a valid Date or x-amz-date header",
    ),
    "MalformedDate": (
        400,
        "MalformedDate",
        "Invalid date format header, expected to be in ISO8601, RFC1123 or RFC1123Z time format.",
    ),
    "UnsignedHeaders": (
        400,
        "AccessDenied",
        "There were headers present in the request which were not signed",
    ),
    "SignatureVersionNotSupported": (
        400,
        "InvalidRequest",
        ("The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."),
    ),
    "MissingFields": (400, "MissingFields", "Missing fields in request."),
    "MissingCredTag": (400, "InvalidRequest", "Missing Credential field for this request."),
    "CredMalformed": (
        400,
        "AuthorizationQueryParametersError",
        (
            "Error parsing the X-Amz-Credential parameter; "
            'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        ),
    ),
    "MalformedCredentialDate": (
        400,
        "AuthorizationQueryParametersError",
        (
            "Error parsing the X-Amz-Credential "
            "parameter; incorrect date format. This date in the credential must be in the "
            'format "yyyyMMdd".'
        ),
    ),
    "InvalidServiceS3": (
        400,
        "AuthorizationParametersError",
        (
            "Error parsing the Credential/X-Amz-Credential "
            'parameter; incorrect service. This endpoint belongs to "s3".'
        ),
    ),
    "InvalidRequestVersion": (
        400,
        "AuthorizationQueryParametersError",
        (
            "Error parsing the X-Amz-Credential "
            'parameter; incorrect terminal. This endpoint uses "aws4_request".'
        ),
    ),
    "MissingSignTag": (400, "AccessDenied", "Signature header missing Signature field."),
    "MissingSignHeadersTag": (400, "InvalidArgument", "Signature header missing SignedHeaders field."),
    "AuthHeaderEmpty": (
        400,
        "InvalidArgument",
        "Authorization header is invalid -- one and only one ' ' (space) required.",
    ),
    "ExpiredPresignRequest": (403, "AccessDenied", "Request has expired"),
    "RequestNotReadyYet": (403, "AccessDenied", "Request is not valid yet"),
    "InvalidQueryParams": (
        400,
        "AuthorizationQueryParametersError",
        (
            "Query-string authentication version 4 "
            "requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, "
            "X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        ),
    ),
    "InvalidQuerySignatureAlgo": (
        400,
        "AuthorizationQueryParametersError",
        'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256".',
    ),
    "MalformedPresignedDate": (
        400,
        "AuthorizationQueryParametersError",
        "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
    ),
    "MalformedExpires": (400, "AuthorizationQueryParametersError", "X-Amz-Expires should be a number"),
    "NegativeExpires": (400, "AuthorizationQueryParametersError", "X-Amz-Expires must be non-negative"),
    "MaximumExpires": (
        400,
        "AuthorizationQueryParametersError",
        (
            "X-Amz-Expires must be less than a week (in "
            "seconds); that is, the given X-Amz-Expires must be less than 604800 seconds"
        ),
    ),
    "InvalidToken": (403, "InvalidTokenId", "The security token included in the request is invalid"),
    "BadDigest": (400, "BadDigest", "The Content-Md5 you specified did not match what we received."),
    "InvalidDigest": (400, "InvalidDigest", "The Content-Md5 you specified is not valid."),
    "AccessDenied": (403, "AccessDenied", "Access Denied."),
    # Not MinIO's answer: MinIO accepts these, the embedded platform does not (docs/local-platform.md).
    "StreamingNotServed": (
        501,
        "NotImplemented",
        (
            "The embedded platform's storage front does not accept "
            "streaming (aws-chunked) signed payloads; sign the payload's SHA-256 instead."
        ),
    ),
}


def _fail(name: str) -> AuthError:
    return AuthError(*_ERR[name])


@dataclass
class Authenticated:
    """Who signed a request, and what its body must hash to (checked as it is read)."""

    access_key: str
    sha256: bytes | None = None  # the body's SHA-256 the request was signed with, when MinIO checks it
    md5: bytes | None = None  # Content-MD5, when given

    @property
    def checks_body(self) -> bool:
        return self.sha256 is not None or self.md5 is not None


def _go_query(query: str) -> list[tuple[str, str]]:
    """Go's ``url.ParseQuery``: '&'-separated, '+' a space; a ';' or a bad escape is an error
    (MinIO then takes the request's signature type as unknown)."""
    if ";" in query or re.search(r"%(?![0-9A-Fa-f]{2})", query):
        raise _fail("SignatureVersionNotSupported")
    return parse_qsl(query, keep_blank_values=True)


def _go_encode(pairs: list[tuple[str, str]]) -> str:
    """Go's ``url.Values.Encode`` with '+' as '%20': sorted by name (values in their order)."""
    return "&".join(
        f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}"
        for k, v in sorted(pairs, key=lambda pair: pair[0])
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _signature(secret: str, scope: list[str], when: str, canonical: str) -> str:
    date, region, service, request = scope
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), request)
    to_sign = "\n".join([SIGN_V4, when, "/".join(scope), hashlib.sha256(canonical.encode()).hexdigest()])
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _credential(value: str) -> tuple[str, list[str]]:
    """parseCredentialHeader: (access key, [date, region, service, request])."""
    parts = value.strip().split("/")
    if len(parts) < 5:
        raise _fail("CredMalformed")
    access_key, scope = "/".join(parts[:-4]), parts[-4:]
    if len(access_key) < 3:  # auth.IsAccessKeyValid
        raise _fail("InvalidAccessKeyId")
    try:
        _dt.datetime.strptime(scope[0], "%Y%m%d")
    except ValueError:
        raise _fail("MalformedCredentialDate") from None
    if scope[2] != "s3":
        raise _fail("InvalidServiceS3")
    if scope[3] != "aws4_request":
        raise _fail("InvalidRequestVersion")
    return access_key, scope


def _iso8601(text: str, error: str) -> _dt.datetime:
    try:
        return _dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.UTC)
    except ValueError:
        raise _fail(error) from None


def _amz_date(head: _Head) -> _dt.datetime:
    """setAuthMiddleware's date: ``x-amz-date``, else ``Date`` (ISO 8601 or RFC 1123)."""
    for name in ("x-amz-date", "date"):
        text = head.headers.get(name, "")
        if not text:
            continue
        for form in ("%Y%m%dT%H%M%SZ", "%a, %d %b %Y %H:%M:%S %Z", "%a, %d %b %Y %H:%M:%S %z"):
            with contextlib.suppress(ValueError):
                when = _dt.datetime.strptime(text, form)
                return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)
        raise _fail("MalformedDate")
    raise _fail("MissingDateHeader")


def _canonical_headers(head: _Head, signed: list[str], query: list[tuple[str, str]]) -> str:
    """extractSignedHeaders + getCanonicalHeaders: every signed header (``host`` required) with its
    values, trimmed, comma-joined; a missing one is taken from the query, else refused."""
    if "host" not in signed:
        raise _fail("UnsignedHeaders")
    values: dict[str, list[str]] = {}
    for line in head.raw.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            values.setdefault(name.strip().lower(), []).append(value)
    lines = []
    for name in signed:
        found = values.get(name.lower()) or [v for k, v in query if k == name]
        if not found:
            if name == "expect":
                found = ["100-continue"]
            elif name == "content-length":
                found = [str(head.length)]
            else:
                raise _fail("UnsignedHeaders")
        lines.append((name.lower(), ",".join(" ".join(v.split()) for v in found)))
    lines.sort()
    return "".join(f"{name}:{value}\n" for name, value in lines)


def _canonical_request(
    head: _Head, signed: list[str], headers: str, canonical_query: str, payload: str
) -> str:
    method, target = head.first.split(" ")[:2]
    path = quote(unquote(urlsplit(target).path), safe="/" + _UNRESERVED)  # s3utils.EncodePath
    return "\n".join([method, path, canonical_query, headers, ";".join(signed), payload])


def _body_checks(head: _Head, claimed: str | None, access_key: str) -> Authenticated:
    """isReqAuthenticated's body checks: the signed SHA-256 (unless unsigned or absent), Content-MD5."""
    auth = Authenticated(access_key)
    if claimed is not None and claimed not in (UNSIGNED_PAYLOAD, _UNSIGNED_TRAILER):
        try:
            auth.sha256 = bytes.fromhex(claimed)
        except ValueError:
            raise _fail("ContentSHA256Mismatch") from None
        if len(auth.sha256) != 32:
            raise _fail("ContentSHA256Mismatch")
    if "content-md5" in head.headers:
        try:
            auth.md5 = base64.b64decode(head.headers["content-md5"], validate=True)
        except ValueError:
            raise _fail("InvalidDigest") from None
        if len(auth.md5) != 16:
            raise _fail("InvalidDigest")
    return auth


def authenticate(
    head: _Head,
    secret_of: Callable[[str], str | None],
    disabled: Callable[[str], bool],
    now: float | None = None,
) -> Authenticated:
    """Check a request's AWS Signature V4 (header or presigned query) as MinIO does; the signer
    and the body checks left to do, or :class:`AuthError`. A request that carries no signature is
    refused (``InvalidAccessKeyId``): the embedded platform gives anonymous requests nothing."""
    current = _dt.datetime.fromtimestamp(time.time() if now is None else now, _dt.UTC)
    method, target = head.first.split(" ")[:2]
    query = _go_query(urlsplit(target).query)
    authorization = head.headers.get("authorization", "")
    content_sha256 = head.headers.get("x-amz-content-sha256")

    def key_secret(access_key: str) -> str:  # checkKeyValid
        secret = secret_of(access_key)
        if secret is None:
            raise _fail("AccessKeyDisabled" if disabled(access_key) else "InvalidAccessKeyId")
        if "x-amz-security-token" in head.headers or any(k == "X-Amz-Security-Token" for k, _ in query):
            raise _fail("InvalidToken")  # none of the accounts here has a session token
        return secret

    if authorization.startswith("AWS ") and not authorization.startswith(SIGN_V4):
        raise _fail("SignatureVersionNotSupported")  # V2: MinIO serves it, no client here sends it
    if method == "PUT" and (
        content_sha256 in _STREAMING
        or (content_sha256 == _UNSIGNED_TRAILER and "aws-chunked" in head.headers.get("content-encoding", ""))
    ):
        _amz_date(head)
        raise _fail("StreamingNotServed")
    if authorization.startswith(SIGN_V4):
        when = _amz_date(head)
        if abs((current - when).total_seconds()) > MAX_SKEW:
            raise _fail("RequestTimeTooSkewed")
        # parseSignV4
        credential_element = authorization.strip().split(",")[0].removeprefix(SIGN_V4)
        fields = authorization.replace(" ", "").removeprefix(SIGN_V4).strip().split(",")
        if len(fields) != 3:
            raise _fail("MissingFields")
        name, _, value = credential_element.strip().partition("=")
        if not _:
            raise _fail("MissingFields")
        if name != "Credential":
            raise _fail("MissingCredTag")
        access_key, scope = _credential(value)
        signed_field = fields[1].split("=")
        if len(signed_field) != 2 or not signed_field[1]:
            raise _fail("MissingFields")
        if signed_field[0] != "SignedHeaders":
            raise _fail("MissingSignHeadersTag")
        signature_field = fields[2].split("=")
        if len(signature_field) != 2 or not signature_field[1]:
            raise _fail("MissingFields")
        if signature_field[0] != "Signature":
            raise _fail("MissingSignTag")
        signed = signed_field[1].split(";")
        payload = EMPTY_SHA256 if content_sha256 is None else content_sha256
        canonical_headers = _canonical_headers(head, signed, query)  # refusals in MinIO's order
        secret = key_secret(access_key)
        stamp = head.headers.get("x-amz-date") or head.headers.get("date", "")
        when = _iso8601(stamp, "MalformedDate")
        canonical = _canonical_request(head, signed, canonical_headers, _go_encode(query), payload)
        expected = _signature(secret, scope, when.strftime("%Y%m%dT%H%M%SZ"), canonical)
        if not hmac.compare_digest(expected, signature_field[1]):
            raise _fail("SignatureDoesNotMatch")
        return _body_checks(head, content_sha256, access_key)
    form = dict(query)
    if "X-Amz-Credential" in form:
        # parsePreSignV4
        if any(
            n not in form
            for n in (
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Signature",
                "X-Amz-Date",
                "X-Amz-SignedHeaders",
                "X-Amz-Expires",
            )
        ):
            raise _fail("InvalidQueryParams")
        if form["X-Amz-Algorithm"] != SIGN_V4:
            raise _fail("InvalidQuerySignatureAlgo")
        access_key, scope = _credential(form["X-Amz-Credential"])
        when = _iso8601(form["X-Amz-Date"], "MalformedPresignedDate")
        try:
            expires = float(form["X-Amz-Expires"])
        except ValueError:
            raise _fail("MalformedExpires") from None
        if expires < 0:
            raise _fail("NegativeExpires")
        if expires > 604800:
            raise _fail("MaximumExpires")
        if not form["X-Amz-SignedHeaders"]:
            raise _fail("MissingFields")
        if not form["X-Amz-Signature"]:
            raise _fail("MissingFields")
        signed = form["X-Amz-SignedHeaders"].split(";")
        secret = key_secret(access_key)
        canonical_headers = _canonical_headers(head, signed, query)
        for name in head.headers:  # checkMetaHeaders
            if name.startswith("x-amz-meta-") and name not in (h.lower() for h in signed):
                raise _fail("UnsignedHeaders")
        if (when - current).total_seconds() > MAX_SKEW:
            raise _fail("RequestNotReadyYet")
        if (current - when).total_seconds() > expires:
            raise _fail("ExpiredPresignRequest")
        claimed = form.get("X-Amz-Content-Sha256", content_sha256)
        payload = UNSIGNED_PAYLOAD if claimed is None else claimed
        unsigned_query = [(k, v) for k, v in query if k != "X-Amz-Signature"]
        canonical = _canonical_request(head, signed, canonical_headers, _go_encode(unsigned_query), payload)
        expected = _signature(secret, scope, form["X-Amz-Date"], canonical)
        if not hmac.compare_digest(expected, form["X-Amz-Signature"]):
            raise _fail("SignatureDoesNotMatch")
        return _body_checks(head, claimed, access_key)
    raise _fail("InvalidAccessKeyId")


class _BodyCheck:
    """Hashes a body as it is relayed (SHA-256 and MD5, as the request asks) and holds back its
    last piece, so that the upstream server never receives a whole request whose body does not
    match: :meth:`finish` then sends it, or says why not."""

    def __init__(self, auth: Authenticated, forward: Callable[[bytes], None]) -> None:
        self._auth = auth
        self._forward = forward
        self._sha256 = hashlib.sha256() if auth.sha256 is not None else None
        self._md5 = hashlib.md5(usedforsecurity=False) if auth.md5 is not None else None
        self._held = b""

    def relay(self, piece: bytes) -> None:
        if self._held:
            self._forward(self._held)
        self._held = piece

    def data(self, piece: bytes) -> None:
        if self._sha256 is not None:
            self._sha256.update(piece)
        if self._md5 is not None:
            self._md5.update(piece)

    def problem(self) -> AuthError | None:
        if self._md5 is not None and self._md5.digest() != self._auth.md5:
            return _fail("BadDigest")
        if self._sha256 is not None and self._sha256.digest() != self._auth.sha256:
            return _fail("ContentSHA256Mismatch")
        return None

    def finish(self) -> None:
        if self._held:
            self._forward(self._held)
            self._held = b""


_ADMIN_PREFIX = "/minio/admin/v3/"
# (method, command) -> (the admin action a non-root account needs, the query parameters MinIO's
# route requires); minio/pkg policy/admin-action.go names the actions.
_ADMIN: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("PUT", "add-user"): ("admin:CreateUser", ("accessKey",)),
    ("DELETE", "remove-user"): ("admin:DeleteUser", ("accessKey",)),
    ("GET", "user-info"): ("admin:GetUser", ("accessKey",)),
    ("PUT", "add-canned-policy"): ("admin:CreatePolicy", ("name",)),
    ("DELETE", "remove-canned-policy"): ("admin:DeletePolicy", ("name",)),
    ("GET", "info-canned-policy"): ("admin:GetPolicy", ("name",)),
    ("PUT", "set-user-or-group-policy"): (
        "admin:AttachUserOrGroupPolicy",
        ("policyName", "userOrGroup", "isGroup"),
    ),
}


def _admin_error(path: str, status: int, code: str, message: str) -> bytes:
    """An admin API refusal as MinIO writes it (writeErrorResponseJSON)."""
    body = json.dumps(
        {"Code": code, "Message": message, "Resource": path, "RequestId": f"{time.time_ns():X}", "HostId": ""}
    ).encode()
    reason = http.client.responses.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nServer: MinIO\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Body:
    """Bytes read like the HTTP response ``minio.crypto.decrypt`` takes."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, amount: int = -1) -> bytes:
        return self._data.read(amount)

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _unchunk(data: bytes) -> bytes:
    out, rest = b"", data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def _is_admin(head: _Head) -> bool:
    return _target(head)[1] == "minio" and urlsplit(head.first.split(" ")[1]).path.startswith(_ADMIN_PREFIX)


# Sub-resources of a bucket or object request -> MinIO's action for each method (cmd/api-router.go,
# the handlers' checkRequestAuthType calls); anything else is the plain request's action.
_BUCKET_ACTIONS = {
    "GET": {
        "events": "s3:ListenBucketNotification",
        "location": "s3:GetBucketLocation",
        "policy": "s3:GetBucketPolicy",
        "notification": "s3:GetBucketNotification",
        "versioning": "s3:GetBucketVersioning",
        "uploads": "s3:ListBucketMultipartUploads",
        "versions": "s3:ListBucketVersions",
        "tagging": "s3:GetBucketTagging",
        "lifecycle": "s3:GetLifecycleConfiguration",
        "object-lock": "s3:GetBucketObjectLockConfiguration",
        "encryption": "s3:GetEncryptionConfiguration",
        "replication": "s3:GetReplicationConfiguration",
        "acl": "s3:GetBucketPolicy",
        "cors": "s3:GetBucketCors",
        "": "s3:ListBucket",
    },
    "HEAD": {"": "s3:ListBucket"},
    "PUT": {
        "policy": "s3:PutBucketPolicy",
        "notification": "s3:PutBucketNotification",
        "versioning": "s3:PutBucketVersioning",
        "tagging": "s3:PutBucketTagging",
        "lifecycle": "s3:PutLifecycleConfiguration",
        "object-lock": "s3:PutBucketObjectLockConfiguration",
        "encryption": "s3:PutEncryptionConfiguration",
        "replication": "s3:PutReplicationConfiguration",
        "acl": "s3:PutBucketPolicy",
        "cors": "s3:PutBucketCors",
        "": "s3:CreateBucket",
    },
    "DELETE": {
        "policy": "s3:DeleteBucketPolicy",
        "tagging": "s3:PutBucketTagging",
        "lifecycle": "s3:PutLifecycleConfiguration",
        "encryption": "s3:PutEncryptionConfiguration",
        "replication": "s3:PutReplicationConfiguration",
        "cors": "s3:PutBucketCors",
        "": "s3:DeleteBucket",
    },
    "POST": {"delete": "s3:DeleteObject", "": "s3:PutObject"},
}
_OBJECT_ACTIONS = {
    "GET": {
        "uploadId": "s3:ListMultipartUploadParts",
        "tagging": "s3:GetObjectTagging",
        "retention": "s3:GetObjectRetention",
        "legal-hold": "s3:GetObjectLegalHold",
        "acl": "s3:GetObject",
        "attributes": "s3:GetObjectAttributes",
        "": "s3:GetObject",
    },
    "HEAD": {"": "s3:GetObject"},
    "PUT": {
        "tagging": "s3:PutObjectTagging",
        "retention": "s3:PutObjectRetention",
        "legal-hold": "s3:PutObjectLegalHold",
        "acl": "s3:PutObject",
        "": "s3:PutObject",
    },
    "POST": {
        "uploads": "s3:PutObject",
        "uploadId": "s3:PutObject",
        "restore": "s3:RestoreObject",
        "select": "s3:GetObject",
        "": "s3:PutObject",
    },
    "DELETE": {
        "uploadId": "s3:AbortMultipartUpload",
        "tagging": "s3:DeleteObjectTagging",
        "": "s3:DeleteObject",
    },
}


def _actions(head: _Head) -> list[tuple[str, str, str]]:
    """(action, bucket, key) a request needs: its own, and reading the source of a copy. A
    multi-object delete is checked on the bucket (MinIO checks each key: never kinder here, as a
    policy granting a whole bucket grants both). Unknown methods need an action nobody is given."""
    method, bucket, key, query = _target(head)
    if not bucket:
        return [("s3:ListAllMyBuckets", "", "")]
    table = (_OBJECT_ACTIONS if key else _BUCKET_ACTIONS).get(method, {})
    params = parse_qs(query, keep_blank_values=True)
    action = next((a for sub, a in table.items() if sub and sub in params), table.get("", "s3:Unknown"))
    needs = [(action, bucket, key)]
    source = head.headers.get("x-amz-copy-source")
    if source:
        source_bucket, _, source_key = unquote(source.split("?versionId=")[0]).lstrip("/").partition("/")
        needs.append(("s3:GetObject", source_bucket, source_key))
    return needs


def _is_listen(head: _Head) -> bool:
    """MinIO's ListenNotification route: GET on a bucket (or on ``/``) with an ``events`` query."""
    method, _, key, query = _target(head)
    return method == "GET" and not key and "events" in parse_qs(query, keep_blank_values=True)


def _target(head: _Head) -> tuple[str, str, str, str]:
    """(method, bucket, key, query) of a path-style S3 request."""
    method, target = head.first.split(" ")[:2]
    parts = urlsplit(target)
    bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
    return method, bucket, key, parts.query


def _error(status: str, code: str, message: str) -> bytes:
    # MinIO's answers name the request's resource and id too; clients read Code and Message.
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


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
class _Created:
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
    events: queue.SimpleQueue[_Created] = field(default_factory=queue.SimpleQueue)

    def wants(self, created: _Created) -> bool:
        if self.bucket and created.bucket != self.bucket:
            return False
        family = created.event.rsplit(":", 1)[0] + ":*"
        return bool({created.event, family} & self.names) and self.pattern.fullmatch(created.key) is not None


def _record(created: _Created) -> dict[str, Any]:
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


class StorageGate:
    """Forwards S3 requests to moto, applying MinIO's rules (see the module's docstring)."""

    def __init__(
        self,
        upstream_port: int,
        secret_of: Callable[[str], str | None],
        iam: MinioIam,
        allowed: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._secret_of = secret_of  # an enabled account's secret key, for checking its signatures
        self._counts: Counter[str] = Counter()  # requests per access key ("": not authenticated)
        self._iam = iam  # the root account, and the accounts made through the admin API
        self._allowed = allowed or (lambda access_key, bucket: True)  # for the other (OIDC) accounts
        self._lock = threading.Lock()
        self._mode: str | None = None
        self._open: set[socket.socket] = set()
        self._listeners: set[_Listener] = set()
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

    def counts(self) -> dict[str, int]:
        """Requests received so far per access key that signed them (a listening stream counts once,
        when it is asked for); ``""`` counts those that proved no account (unsigned, or refused
        while checking their signature)."""
        with self._lock:
            return dict(self._counts)

    def _authenticate(self, head: _Head) -> Authenticated | AuthError:
        try:
            auth: Authenticated | AuthError = authenticate(head, self._secret_of, self._iam.is_user)
        except AuthError as exc:
            auth = exc
        with self._lock:
            self._counts[auth.access_key if isinstance(auth, Authenticated) else ""] += 1
        if isinstance(auth, Authenticated) and _is_admin(head) and "x-amz-content-sha256" not in head.headers:
            auth = _fail("AccessDenied")  # validateAdminSignature: header-signed, payload hash given
        return auth

    def _refusal(self, head: _Head, auth: Authenticated | AuthError) -> bytes | None:
        with self._lock:
            mode = self._mode
        if mode == "503":
            return _error("503 Slow Down", "SlowDown", "Please reduce your request rate (injected fault).")
        if isinstance(auth, AuthError):
            if _is_admin(head):
                return _admin_error(
                    urlsplit(head.first.split(" ")[1]).path, auth.status, auth.code, str(auth)
                )
            return auth.xml()
        access_key = auth.access_key
        if access_key == self._iam.root_access_key or _is_admin(head):
            return None  # the admin API answers its own refusals, in JSON
        needs = _actions(head)
        if self._iam.is_user(access_key):
            granted = all(
                self._iam.allows(access_key, action, bucket, key)
                for action, bucket, key in needs
                if action != "s3:ListAllMyBuckets"
            )  # a bucket listing is filtered instead
        else:
            # An OIDC user's account: OSCAR's policies give it all or nothing of a bucket, and not
            # listening to a restricted service's (RESTRICTED_ACTIONS): never here, to be safe.
            granted = not _is_listen(head) and all(
                self._allowed(access_key, bucket) for _, bucket, _ in needs if bucket
            )
        return None if granted else _error("403 Forbidden", "AccessDenied", "Access Denied.")

    def _may_list(self, access_key: str, bucket: str) -> bool:
        """Whether a bucket listing shows ``bucket`` to a non-root account (ListBucketsHandler:
        those it may ``s3:ListBucket`` or ``s3:GetBucketLocation``, without ListAllMyBuckets)."""
        if self._iam.is_user(access_key):
            return any(
                self._iam.allows(access_key, action, bucket)
                for action in ("s3:ListAllMyBuckets", "s3:ListBucket", "s3:GetBucketLocation")
            )
        return self._allowed(access_key, bucket)

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
                auth = self._authenticate(head)
                refusal = self._refusal(head, auth)
                if refusal is not None or isinstance(auth, AuthError):
                    client.body(head, lambda piece: None)
                    client_sock.sendall(refusal or b"")
                    continue
                access_key = auth.access_key
                if _is_listen(head):
                    client.body(head, lambda piece: None)
                    self._serve_listen(head, client_sock)
                    break  # a stream ends only with its connection
                if _is_admin(head):
                    body: list[bytes] = []
                    check = _BodyCheck(auth, body.append)
                    client.body(head, check.relay, check.data)
                    problem = check.problem()
                    check.finish()
                    client_sock.sendall(
                        self._admin(head, b"".join(body), access_key)
                        if problem is None
                        else _admin_error(
                            urlsplit(head.first.split(" ")[1]).path,
                            problem.status,
                            problem.code,
                            str(problem),
                        )
                    )
                    continue
                if upstream_sock is None:
                    upstream_sock = socket.create_connection(self._upstream, timeout=10)
                    upstream_sock.settimeout(None)
                    upstream = _Stream(upstream_sock)
                    with self._lock:
                        self._open.add(upstream_sock)
                forwarded = head.raw.replace(b"\r\nExpect: 100-continue", b"").replace(
                    b"\r\nexpect: 100-continue", b""
                )
                problem = None
                if not auth.checks_body:
                    upstream_sock.sendall(forwarded)
                    client.body(head, upstream_sock.sendall)
                elif not head.chunked and head.length == 0:
                    problem = _BodyCheck(
                        auth, upstream_sock.sendall
                    ).problem()  # checked before anything is sent
                    if problem is None:
                        upstream_sock.sendall(forwarded)
                else:
                    # Relayed as it comes, hashed on the way; its last piece is held back until the
                    # hashes match, so moto never gets a whole request with a body MinIO would refuse.
                    upstream_sock.sendall(forwarded)
                    check = _BodyCheck(auth, upstream_sock.sendall)
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
                if _target(head)[1] == "" and access_key != self._iam.root_access_key:
                    response, keep_alive = self._relay_bucket_list(access_key, upstream, client_sock)
                else:
                    response, keep_alive = self._relay_response(head, upstream, client_sock)
                self._report_creation(head, response, access_key)
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

    def _relay_bucket_list(
        self, access_key: str, upstream: _Stream, client: socket.socket
    ) -> tuple[_Head, bool]:
        """Relay a ListBuckets answer showing only the buckets the account may list."""
        while True:
            response = upstream.head()
            if int(response.first.split(" ")[1]) >= 200:
                break
        raw: list[bytes] = []
        upstream.body(response, raw.append)
        body = b"".join(raw)
        if response.chunked:
            body = _unchunk(body)
        if response.first.split(" ")[1] == "200":

            def keep(match: re.Match[bytes]) -> bytes:
                name = re.search(rb"<Name>(.*?)</Name>", match.group(0))
                shown = name is not None and self._may_list(access_key, name.group(1).decode())
                return match.group(0) if shown else b""

            body = re.sub(rb"<Bucket>.*?</Bucket>", keep, body, flags=re.DOTALL)
        lines = [
            line
            for line in response.raw.decode("latin-1").split("\r\n")[:-2]
            if line.split(":")[0].lower() not in ("content-length", "transfer-encoding")
        ]
        client.sendall(
            ("\r\n".join([*lines, f"Content-Length: {len(body)}"]) + "\r\n\r\n").encode("latin-1") + body
        )
        return response, response.headers.get("connection", "").lower() != "close"

    # -- MinIO's admin API ---------------------------------------------------------------

    def _admin(self, head: _Head, body: bytes, access_key: str) -> bytes:
        """Answer one admin request (cmd/admin-router.go, cmd/admin-handlers-users.go)."""
        method, target = head.first.split(" ")[:2]
        parts = urlsplit(target)
        command = parts.path.removeprefix(_ADMIN_PREFIX)
        params = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        spec = _ADMIN.get((method, command))
        if spec is None:
            return _admin_error(
                parts.path,
                400,
                "XMinioAdminNotImplemented",
                f"{method} {command} is not part of the admin API the embedded platform serves",
            )
        action, needed = spec
        if any(name not in params for name in needed):
            return _admin_error(
                parts.path, 400, "InvalidArgument", f"missing query parameters {', '.join(needed)}"
            )
        # An account may change its own secret unless a policy denies it (AddUser's DenyOnly).
        own = (
            command == "add-user" and params.get("accessKey") == access_key and self._iam.is_user(access_key)
        )
        if not (own or self._iam.allows(access_key, action)):
            return _admin_error(parts.path, 403, "AccessDenied", "Access Denied.")
        try:
            answer = self._admin_do(command, params, body, access_key)
        except IamError as exc:
            return _admin_error(parts.path, exc.status, exc.code, str(exc))
        data = b"" if answer is None else json.dumps(answer).encode()
        return (
            f"HTTP/1.1 200 OK\r\nServer: MinIO\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode() + data

    def _admin_do(self, command: str, params: dict[str, str], body: bytes, access_key: str) -> object:
        iam = self._iam
        if command == "add-user":
            # The body is encrypted with the caller's secret key (madmin.EncryptData; minio-py's
            # minio.crypto.encrypt), as MinIO decrypts it.
            from minio.crypto import decrypt

            try:
                request = json.loads(decrypt(_Body(body), iam.secret_of(access_key) or ""))  # type: ignore[arg-type]
                secret, status = str(request["secretKey"]), str(request.get("status") or "enabled")
            except (ValueError, KeyError, TypeError, OSError):  # a wrong key fails the MAC check (ValueError)
                raise IamError(
                    400, "XMinioAdminConfigBadJSON", "JSON configuration provided is of incorrect format"
                ) from None
            iam.add_user(params["accessKey"], secret, status)
        elif command == "remove-user":
            if params["accessKey"] == access_key:
                raise IamError(403, "XMinioIAMActionNotAllowed", "Specified IAM action is not allowed")
            iam.remove_user(params["accessKey"])
        elif command == "user-info":
            return iam.user_info(params["accessKey"])
        elif command == "add-canned-policy":
            try:
                document = json.loads(body)
            except ValueError:
                raise IamError(400, "XMinioMalformedIAMPolicy", "the policy is not JSON") from None
            if not isinstance(document, dict):
                raise IamError(400, "XMinioMalformedIAMPolicy", "the policy is not a JSON object")
            iam.add_policy(params["name"], document)
        elif command == "remove-canned-policy":
            iam.remove_policy(params["name"])
        elif command == "info-canned-policy":
            return iam.policy_info(params["name"])
        elif command == "set-user-or-group-policy":
            if params["isGroup"] == "true":
                raise IamError(404, "XMinioAdminNoSuchGroup", "The specified group does not exist.")
            iam.set_policy(params["userOrGroup"], params["policyName"])
        return None

    def _report_creation(self, head: _Head, response: _Head, uploader: str) -> None:
        method, bucket, key, query = _target(head)
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
        created = _Created(
            bucket,
            key,
            event,
            None if size is None else int(size),
            etag,
            head.headers.get("content-type", "") if plain else "",
            metadata if plain else {},
            uploader,
        )
        with self._lock:
            listeners = [listener for listener in self._listeners if listener.wants(created)]
        for listener in listeners:
            listener.events.put(created)

    # -- listening -----------------------------------------------------------------

    def _upstream_head(self, path: str) -> tuple[int, dict[str, str]]:
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

    def _serve_listen(self, head: _Head, sock: socket.socket) -> None:
        """Serve one ``GET /<bucket>?events=...`` as MinIO does: checks first (an error is an
        ordinary answer), then a chunked ``text/event-stream`` of one JSON line per event,
        ``{"Records":[...]}``, and a keep-alive: " " every 0.5 s, or with ``ping=N`` (2024)
        ``{"Records":null}`` every N seconds."""
        _, bucket, _, query = _target(head)
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
        if problem is None and bucket and self._upstream_head("/" + bucket)[0] == 404:
            problem = ("404 Not Found", "NoSuchBucket", "The specified bucket does not exist")
        if problem is not None:
            sock.sendall(_error(*problem))
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
                    status, headers = self._upstream_head(f"/{created.bucket}/{created.key}")
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
