"""AWS Signature V4 verification, as MinIO verifies a request before any handler runs.

The storage front (gate.py) checks every request's signature (in its ``Authorization`` header
or a presigned query), its date and its body's signed SHA-256 (and Content-MD5) with the secret
of the account it names, and refuses it with MinIO's codes and messages. The client side's
signing is protocol/signing.py; this is the server's side of the same algorithm.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as _dt
import hashlib
import hmac
import http.client
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .http_framing import MessageHead, s3_error

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
        return s3_error(
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


def auth_error(name: str) -> AuthError:
    """The refusal :data:`_ERR` names ``name``."""
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
        raise auth_error("SignatureVersionNotSupported")
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
        raise auth_error("CredMalformed")
    access_key, scope = "/".join(parts[:-4]), parts[-4:]
    if len(access_key) < 3:  # auth.IsAccessKeyValid
        raise auth_error("InvalidAccessKeyId")
    try:
        _dt.datetime.strptime(scope[0], "%Y%m%d")
    except ValueError:
        raise auth_error("MalformedCredentialDate") from None
    if scope[2] != "s3":
        raise auth_error("InvalidServiceS3")
    if scope[3] != "aws4_request":
        raise auth_error("InvalidRequestVersion")
    return access_key, scope


def _iso8601(text: str, error: str) -> _dt.datetime:
    try:
        return _dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.UTC)
    except ValueError:
        raise auth_error(error) from None


def _amz_date(head: MessageHead) -> _dt.datetime:
    """setAuthMiddleware's date: ``x-amz-date``, else ``Date`` (ISO 8601 or RFC 1123)."""
    for name in ("x-amz-date", "date"):
        text = head.headers.get(name, "")
        if not text:
            continue
        for form in ("%Y%m%dT%H%M%SZ", "%a, %d %b %Y %H:%M:%S %Z", "%a, %d %b %Y %H:%M:%S %z"):
            with contextlib.suppress(ValueError):
                when = _dt.datetime.strptime(text, form)
                return when if when.tzinfo else when.replace(tzinfo=_dt.UTC)
        raise auth_error("MalformedDate")
    raise auth_error("MissingDateHeader")


def _canonical_headers(head: MessageHead, signed: list[str], query: list[tuple[str, str]]) -> str:
    """extractSignedHeaders + getCanonicalHeaders: every signed header (``host`` required) with its
    values, trimmed, comma-joined; a missing one is taken from the query, else refused."""
    if "host" not in signed:
        raise auth_error("UnsignedHeaders")
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
                raise auth_error("UnsignedHeaders")
        lines.append((name.lower(), ",".join(" ".join(v.split()) for v in found)))
    lines.sort()
    return "".join(f"{name}:{value}\n" for name, value in lines)


def _canonical_request(
    head: MessageHead, signed: list[str], headers: str, canonical_query: str, payload: str
) -> str:
    method, target = head.first.split(" ")[:2]
    path = quote(unquote(urlsplit(target).path), safe="/" + _UNRESERVED)  # s3utils.EncodePath
    return "\n".join([method, path, canonical_query, headers, ";".join(signed), payload])


def _body_checks(head: MessageHead, claimed: str | None, access_key: str) -> Authenticated:
    """isReqAuthenticated's body checks: the signed SHA-256 (unless unsigned or absent), Content-MD5."""
    auth = Authenticated(access_key)
    if claimed is not None and claimed not in (UNSIGNED_PAYLOAD, _UNSIGNED_TRAILER):
        try:
            auth.sha256 = bytes.fromhex(claimed)
        except ValueError:
            raise auth_error("ContentSHA256Mismatch") from None
        if len(auth.sha256) != 32:
            raise auth_error("ContentSHA256Mismatch")
    if "content-md5" in head.headers:
        try:
            auth.md5 = base64.b64decode(head.headers["content-md5"], validate=True)
        except ValueError:
            raise auth_error("InvalidDigest") from None
        if len(auth.md5) != 16:
            raise auth_error("InvalidDigest")
    return auth


def authenticate(
    head: MessageHead,
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
            raise auth_error("AccessKeyDisabled" if disabled(access_key) else "InvalidAccessKeyId")
        if "x-amz-security-token" in head.headers or any(k == "X-Amz-Security-Token" for k, _ in query):
            raise auth_error("InvalidToken")  # none of the accounts here has a session token
        return secret

    if authorization.startswith("AWS ") and not authorization.startswith(SIGN_V4):
        raise auth_error("SignatureVersionNotSupported")  # V2: MinIO serves it, no client here sends it
    if method == "PUT" and (
        content_sha256 in _STREAMING
        or (content_sha256 == _UNSIGNED_TRAILER and "aws-chunked" in head.headers.get("content-encoding", ""))
    ):
        _amz_date(head)
        raise auth_error("StreamingNotServed")
    if authorization.startswith(SIGN_V4):
        when = _amz_date(head)
        if abs((current - when).total_seconds()) > MAX_SKEW:
            raise auth_error("RequestTimeTooSkewed")
        # parseSignV4
        credential_element = authorization.strip().split(",")[0].removeprefix(SIGN_V4)
        fields = authorization.replace(" ", "").removeprefix(SIGN_V4).strip().split(",")
        if len(fields) != 3:
            raise auth_error("MissingFields")
        name, _, value = credential_element.strip().partition("=")
        if not _:
            raise auth_error("MissingFields")
        if name != "Credential":
            raise auth_error("MissingCredTag")
        access_key, scope = _credential(value)
        signed_field = fields[1].split("=")
        if len(signed_field) != 2 or not signed_field[1]:
            raise auth_error("MissingFields")
        if signed_field[0] != "SignedHeaders":
            raise auth_error("MissingSignHeadersTag")
        signature_field = fields[2].split("=")
        if len(signature_field) != 2 or not signature_field[1]:
            raise auth_error("MissingFields")
        if signature_field[0] != "Signature":
            raise auth_error("MissingSignTag")
        signed = signed_field[1].split(";")
        payload = EMPTY_SHA256 if content_sha256 is None else content_sha256
        canonical_headers = _canonical_headers(head, signed, query)  # refusals in MinIO's order
        secret = key_secret(access_key)
        stamp = head.headers.get("x-amz-date") or head.headers.get("date", "")
        when = _iso8601(stamp, "MalformedDate")
        canonical = _canonical_request(head, signed, canonical_headers, _go_encode(query), payload)
        expected = _signature(secret, scope, when.strftime("%Y%m%dT%H%M%SZ"), canonical)
        if not hmac.compare_digest(expected, signature_field[1]):
            raise auth_error("SignatureDoesNotMatch")
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
            raise auth_error("InvalidQueryParams")
        if form["X-Amz-Algorithm"] != SIGN_V4:
            raise auth_error("InvalidQuerySignatureAlgo")
        access_key, scope = _credential(form["X-Amz-Credential"])
        when = _iso8601(form["X-Amz-Date"], "MalformedPresignedDate")
        try:
            expires = float(form["X-Amz-Expires"])
        except ValueError:
            raise auth_error("MalformedExpires") from None
        if expires < 0:
            raise auth_error("NegativeExpires")
        if expires > 604800:
            raise auth_error("MaximumExpires")
        if not form["X-Amz-SignedHeaders"]:
            raise auth_error("MissingFields")
        if not form["X-Amz-Signature"]:
            raise auth_error("MissingFields")
        signed = form["X-Amz-SignedHeaders"].split(";")
        secret = key_secret(access_key)
        canonical_headers = _canonical_headers(head, signed, query)
        for name in head.headers:  # checkMetaHeaders
            if name.startswith("x-amz-meta-") and name not in (h.lower() for h in signed):
                raise auth_error("UnsignedHeaders")
        if (when - current).total_seconds() > MAX_SKEW:
            raise auth_error("RequestNotReadyYet")
        if (current - when).total_seconds() > expires:
            raise auth_error("ExpiredPresignRequest")
        claimed = form.get("X-Amz-Content-Sha256", content_sha256)
        payload = UNSIGNED_PAYLOAD if claimed is None else claimed
        unsigned_query = [(k, v) for k, v in query if k != "X-Amz-Signature"]
        canonical = _canonical_request(head, signed, canonical_headers, _go_encode(unsigned_query), payload)
        expected = _signature(secret, scope, form["X-Amz-Date"], canonical)
        if not hmac.compare_digest(expected, form["X-Amz-Signature"]):
            raise auth_error("SignatureDoesNotMatch")
        return _body_checks(head, claimed, access_key)
    raise auth_error("InvalidAccessKeyId")


class BodyCheck:
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
            return auth_error("BadDigest")
        if self._sha256 is not None and self._sha256.digest() != self._auth.sha256:
            return auth_error("ContentSHA256Mismatch")
        return None

    def finish(self) -> None:
        if self._held:
            self._forward(self._held)
            self._held = b""
