"""MinIO's admin API (``/minio/admin/v3/``), the users and canned policies subset.

minio-py's ``MinioAdmin`` makes MinIO users, canned policies and attachments through it; the
storage front (gate.py) hands such requests, once their signature is checked, to
:func:`answer_admin`, which changes ``accounts.MinioIam`` as MinIO's handlers would
(cmd/admin-router.go, cmd/admin-handlers-users.go) and answers in MinIO's JSON. Served for the
root account or an account whose policies grant the ``admin:`` action.
"""

from __future__ import annotations

import http.client
import io
import json
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from .accounts import IamError
from .http_framing import MessageHead, s3_target

if TYPE_CHECKING:
    from .accounts import MinioIam
    from .signature_checks import AuthError

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


def admin_error(path: str, status: int, code: str, message: str) -> bytes:
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


def is_admin_request(head: MessageHead) -> bool:
    """Whether a request is for MinIO's admin API (``/minio/admin/v3/...``)."""
    return s3_target(head)[1] == "minio" and urlsplit(head.first.split(" ")[1]).path.startswith(_ADMIN_PREFIX)


def admin_refusal(head: MessageHead, refused: AuthError) -> bytes:
    """A request refused before the admin API ran (its signature, its body), in the admin's JSON."""
    return admin_error(urlsplit(head.first.split(" ")[1]).path, refused.status, refused.code, str(refused))


def answer_admin(head: MessageHead, body: bytes, access_key: str, iam: MinioIam) -> bytes:
    """Answer one admin request (cmd/admin-router.go, cmd/admin-handlers-users.go)."""
    method, target = head.first.split(" ")[:2]
    parts = urlsplit(target)
    command = parts.path.removeprefix(_ADMIN_PREFIX)
    params = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    spec = _ADMIN.get((method, command))
    if spec is None:
        return admin_error(
            parts.path,
            400,
            "XMinioAdminNotImplemented",
            f"{method} {command} is not part of the admin API the embedded platform serves",
        )
    action, needed = spec
    if any(name not in params for name in needed):
        return admin_error(
            parts.path, 400, "InvalidArgument", f"missing query parameters {', '.join(needed)}"
        )
    # An account may change its own secret unless a policy denies it (AddUser's DenyOnly).
    own = command == "add-user" and params.get("accessKey") == access_key and iam.is_user(access_key)
    if not (own or iam.allows(access_key, action)):
        return admin_error(parts.path, 403, "AccessDenied", "Access Denied.")
    try:
        answer = _run_command(iam, command, params, body, access_key)
    except IamError as exc:
        return admin_error(parts.path, exc.status, exc.code, str(exc))
    data = b"" if answer is None else json.dumps(answer).encode()
    return (
        f"HTTP/1.1 200 OK\r\nServer: MinIO\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def _run_command(iam: MinioIam, command: str, params: dict[str, str], body: bytes, access_key: str) -> object:
    """Run one admin command: its JSON answer (None for none); a refusal raises IamError."""
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
