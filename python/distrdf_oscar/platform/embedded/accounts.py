"""Who is who: the admin (basic auth), OIDC users, their MinIO accounts, what they may see, MinIO's
own users and canned policies (its admin API), and Kueue's per-user quotas.

OSCAR gives every OIDC user a MinIO account whose access key is the user's
``sub``, and grants the users of a service (its owner; everyone if public; the
``allowed_users`` if restricted) access to its buckets. With Kueue (3.7 and
later) the jobs of a service owned by an OIDC user are admitted from that
user's ClusterQueue, 2 CPUs and 2Gi by default (``KUEUE_DEFAULT_CPU``,
``KUEUE_DEFAULT_MEMORY``; pkg/utils/kueue.go), and the jobs of a service owned
by nobody known (``""`` after an admin's update) are never admitted.

OIDC users' access tokens come from an emulated issuer (:class:`OidcTokens`): JWTs that expire,
renewed with a refresh token at the issuer's token endpoint, as Keycloak and EGI Check-in do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ...protocol.quantities import parse_quantity
from .validation import DEFAULT_OWNER
from .versions import OscarVersion

DEFAULT_QUOTA = ("2", "2Gi")  # cpu, memory of a user's ClusterQueue


@dataclass(frozen=True)
class User:
    sub: str
    secret_key: str = field(repr=False)  # of the user's MinIO account, whose access key is ``sub``


def new_users(subs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Credentials for OIDC users (sent to the platform process with its configuration); their
    tokens come from :class:`OidcTokens`."""
    return {sub: {"secret_key": secrets.token_urlsafe(30)} for sub in subs}


# -- the OIDC issuer ------------------------------------------------------------------------------

ISSUER_PATH = "/realms/local"  # under the API's own address, in Keycloak's shape
TOKEN_ENDPOINT = "/protocol/openid-connect/token"  # under the issuer, where oscar-cli finds it
REVOKE_ENDPOINT = "/protocol/openid-connect/revoke"  # RFC 7009, as Keycloak's
CLIENT_ID = "oscar-local"  # the ``azp`` of every token: the client a refresh must name
SCOPE = "openid profile email"
DEFAULT_TOKEN_LIFETIME = 86_400.0  # long: nothing expires unless a test asks (Keycloak: 300 s, EGI: 3600 s)
ACCESS, REFRESH = "Bearer", "Refresh"  # Keycloak's ``typ`` claims


def issuer_url(api_endpoint: str) -> str:
    return api_endpoint.rstrip("/") + ISSUER_PATH


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class OidcTokens:
    """The OIDC provider whose tokens the OIDC users present (a Keycloak realm in miniature).

    Its tokens are JWTs, because OSCAR reads the issuer from a token before asking it, and clients
    read ``exp`` (renewal) and ``iss``/``azp``/``scope`` (a refresh token's token endpoint) from
    them. They are signed with HS256 and a key the launcher (which hands tokens out) and the
    platform (which checks them) share, where Keycloak signs with RS256 and publishes its JWKS.
    An access token lives ``lifetime`` seconds; a refresh token until it is revoked (Keycloak's
    offline tokens), and the token endpoint does not rotate it. Revoking a token (the revocation
    endpoint) refuses it from then on; access tokens issued before a refresh token is revoked stay
    valid until they expire, as OSCAR keeps accepting tokens it has already checked (its cache).
    """

    def __init__(self, key: str, lifetime: float = DEFAULT_TOKEN_LIFETIME, issuer: str = "") -> None:
        self._key = key.encode()
        self.lifetime = float(lifetime)
        self.issuer = issuer  # the platform learns it once its API's port is known
        self._lock = threading.Lock()
        self._revoked: set[str] = set()  # the ``jti`` of revoked tokens

    def _signature(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def _signed(self, claims: dict[str, Any]) -> str:
        parts = ({"alg": "HS256", "typ": "JWT"}, claims)
        body = ".".join(_b64(json.dumps(part, separators=(",", ":")).encode()) for part in parts)
        return f"{body}.{self._signature(body)}"

    def _claims(self, sub: str, typ: str, scope: str) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": sub,
            "typ": typ,
            "azp": CLIENT_ID,
            "scope": scope,
            "iat": now,
            "jti": secrets.token_hex(12),
        }

    def access_token(self, sub: str, scope: str = SCOPE) -> str:
        """A new access token of ``sub``, valid ``lifetime`` seconds from now."""
        claims = self._claims(sub, ACCESS, scope)
        return self._signed({**claims, "exp": claims["iat"] + math.ceil(self.lifetime)})

    def refresh_token(self, sub: str) -> str:
        """A new refresh token of ``sub`` (as ``oscar-cli cluster add`` stores one)."""
        return self._signed({**self._claims(sub, REFRESH, SCOPE), "aud": self.issuer})

    def verify(self, token: str, typ: str) -> dict[str, Any] | None:
        """The claims of a token of this issuer and kind, signed, not expired nor revoked; else None."""
        try:
            body, _, signature = token.rpartition(".")
            if not body or not hmac.compare_digest(self._signature(body), signature):
                return None
            payload = body.partition(".")[2]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (TypeError, ValueError):  # compare_digest refuses non-ASCII text
            return None
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer or claims.get("typ") != typ:
            return None
        if "exp" in claims and not float(claims["exp"]) > time.time():
            return None
        with self._lock:
            return None if claims.get("jti") in self._revoked else claims

    def grant(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (status, JSON answer) for a ``refresh_token`` grant, with Keycloak's
        error codes."""
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant_type"}
        claims = self.verify(form.get("refresh_token", ""), REFRESH)
        if claims is None:
            return 400, {"error": "invalid_grant", "error_description": "Token is not active"}
        if form.get("client_id", CLIENT_ID) != claims["azp"]:
            return 400, {
                "error": "invalid_grant",
                "error_description": "Token client and authorized client don't match",
            }
        scope = str(claims.get("scope") or SCOPE)
        return 200, {
            "access_token": self.access_token(str(claims["sub"]), scope),
            "expires_in": math.ceil(self.lifetime),
            "refresh_expires_in": 0,
            "refresh_token": form["refresh_token"],
            "token_type": "Bearer",
            "scope": scope,
        }

    def revoke(self, token: str) -> None:
        """The revocation endpoint: a token of this issuer is refused from now on."""
        claims = self.verify(token, REFRESH) or self.verify(token, ACCESS)
        if claims is not None:
            with self._lock:
                self._revoked.add(str(claims.get("jti")))


class IamError(Exception):
    """A refusal of MinIO's admin API: its HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _no_such_user() -> IamError:
    return IamError(404, "XMinioAdminNoSuchUser", "The specified user does not exist.")


@dataclass
class IamUser:
    secret_key: str = field(repr=False)
    enabled: bool = True
    policies: tuple[str, ...] = ()


def _wildcard(pattern: str, text: str) -> bool:
    """minio/pkg's ``wildcard.Match``: ``*`` any run of characters, ``?`` one."""
    expression = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(expression, text, re.DOTALL) is not None


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


class MinioIam:
    """MinIO's built-in users and canned policies, and its policy engine for their requests.

    What minio/pkg (v3.0.23, RELEASE.2024-12-18's; v1.1.23 for 2022) does for an IAM user: no
    policy, no access; a Deny statement that matches wins over any Allow; an action matches a
    statement's ``Action`` pattern (``s3:*``, ``s3:Get*``) with ``s3:GetObjectVersion`` implying
    ``s3:GetObject``; the resource of a bucket-level request is ``bucket/`` (matching both
    ``arn:aws:s3:::bucket`` and ``arn:aws:s3:::bucket/*``), of an object request ``bucket/key``
    (policy/statement.go ``IsAllowed``, resource.go ``Match``). Conditions are not evaluated:
    a statement with a ``Condition`` is taken as not matching (an Allow then grants nothing, a
    Deny still denies), never kinder than MinIO. The root account is allowed everything.
    """

    def __init__(self, root_access_key: str, root_secret_key: str) -> None:
        self.root_access_key = root_access_key
        self._root_secret_key = root_secret_key
        self._lock = threading.Lock()
        self._users: dict[str, IamUser] = {}
        self._policies: dict[str, dict[str, Any]] = {}

    def access_keys(self) -> set[str]:
        with self._lock:
            return {key for key, user in self._users.items() if user.enabled}

    def is_user(self, access_key: str) -> bool:
        with self._lock:
            return access_key in self._users

    def secret_of(self, access_key: str) -> str | None:
        """The secret key of the root account or of a user, enabled or not."""
        if access_key == self.root_access_key:
            return self._root_secret_key
        with self._lock:
            user = self._users.get(access_key)
            return user.secret_key if user else None

    def enabled_secret_of(self, access_key: str) -> str | None:
        """The secret key that signs the account's requests: None for a disabled user."""
        if access_key == self.root_access_key:
            return self._root_secret_key
        with self._lock:
            user = self._users.get(access_key)
            return user.secret_key if user and user.enabled else None

    # -- the admin API's operations (cmd/admin-handlers-users.go, cmd/iam-store.go) ------------

    def add_user(self, access_key: str, secret_key: str, status: str = "enabled") -> None:
        """``add-user``: create, or update the secret (and status) of, a user."""
        if access_key == self.root_access_key:
            raise IamError(
                403, "XMinioInvalidIAMCredentials", "Credential is not allowed to be same as admin access key"
            )
        if access_key != access_key.strip():
            raise IamError(
                400,
                "XMinioInvalidResource",
                "Policy, user or group names are not allowed to begin or end with space characters",
            )
        if len(access_key) < 3 or any(c in access_key for c in "=,"):
            raise IamError(400, "XMinioAdminInvalidAccessKey", "The access key is invalid.")
        if len(secret_key) < 8:
            raise IamError(400, "XMinioAdminInvalidSecretKey", "The secret key is invalid.")
        with self._lock:
            user = self._users.get(access_key)
            policies = user.policies if user else ()
            self._users[access_key] = IamUser(secret_key, status != "disabled", policies)

    def remove_user(self, access_key: str) -> None:
        if access_key == self.root_access_key:
            raise IamError(403, "XMinioIAMActionNotAllowed", "Specified IAM action is not allowed")
        with self._lock:
            if self._users.pop(access_key, None) is None:
                raise _no_such_user()

    def user_info(self, access_key: str) -> dict[str, Any]:
        with self._lock:
            user = self._users.get(access_key)
            if user is None:
                raise _no_such_user()
            return {
                "policyName": ",".join(user.policies),
                "status": "enabled" if user.enabled else "disabled",
                "memberOf": None,
            }

    def add_policy(self, name: str, document: dict[str, Any]) -> None:
        """``add-canned-policy``: a policy needs a ``Version`` and valid statements."""
        if name != name.strip():
            raise IamError(
                400,
                "XMinioInvalidResource",
                "Policy, user or group names are not allowed to begin or end with space characters",
            )
        if "," in name:
            raise IamError(400, "XMinioPolicyInvalidName", "Policy name may not contain comma")
        if not document.get("Version"):
            raise IamError(400, "MalformedPolicy", "The policy must contain a valid version string")
        statements = document.get("Statement")
        if not isinstance(statements, list) or not statements:
            raise IamError(400, "XMinioMalformedIAMPolicy", "policy has no statements")
        for statement in statements:
            if (
                not isinstance(statement, dict)
                or statement.get("Effect") not in ("Allow", "Deny")
                or not (_listed(statement.get("Action")) or _listed(statement.get("NotAction")))
            ):
                raise IamError(400, "XMinioMalformedIAMPolicy", f"invalid statement {statement!r}")
        with self._lock:
            self._policies[name] = document

    def remove_policy(self, name: str) -> None:
        """``remove-canned-policy``: refused while a user has it (2024: errPolicyInUse); a
        missing policy is no error."""
        with self._lock:
            if any(name in user.policies for user in self._users.values()):
                raise IamError(
                    400, "XMinioAdminPolicyInUse", "Specified policy is in use and cannot be deleted."
                )
            self._policies.pop(name, None)

    def policy_info(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self._policies:
                raise IamError(404, "XMinioAdminNoSuchPolicy", "The canned policy does not exist.")
            return self._policies[name]

    def set_policy(self, access_key: str, names: str) -> None:
        """``set-user-or-group-policy`` for a user: its policies become ``names`` (comma-separated)."""
        if access_key == self.root_access_key:
            raise IamError(403, "XMinioIAMActionNotAllowed", "Specified IAM action is not allowed")
        wanted = tuple(n.strip() for n in names.split(",") if n.strip())
        with self._lock:
            user = self._users.get(access_key)
            if user is None:
                raise _no_such_user()
            if any(n not in self._policies for n in wanted):
                raise IamError(404, "XMinioAdminNoSuchPolicy", "The canned policy does not exist.")
            user.policies = wanted

    # -- the policy engine ------------------------------------------------------------------------

    def allows(self, access_key: str, action: str, bucket: str = "", key: str = "") -> bool:
        """Whether the account may do ``action`` on ``bucket``/``key`` (see the class docstring)."""
        if access_key == self.root_access_key:
            return True
        with self._lock:
            user = self._users.get(access_key)
            if user is None or not user.enabled:
                return False
            statements = [
                s for name in user.policies for s in self._policies.get(name, {}).get("Statement", [])
            ]
        resource = f"{bucket}/{key}" if key else f"{bucket}/"
        matching = [s for s in statements if _statement_matches(s, action, resource)]
        if any(s["Effect"] == "Deny" for s in matching):
            return False
        return any(s["Effect"] == "Allow" and "Condition" not in s for s in matching)


def _statement_matches(statement: dict[str, Any], action: str, resource: str) -> bool:
    actions, not_actions = _listed(statement.get("Action")), _listed(statement.get("NotAction"))
    implied = {action, "s3:GetObjectVersion"} if action == "s3:GetObject" else {action}
    if actions and not any(_wildcard(p, a) for p in actions for a in implied):
        return False
    if any(_wildcard(p, action) for p in not_actions):
        return False
    if action.startswith("admin:"):
        return True  # admin statements ignore their resources
    for arn in _listed(statement.get("Resource")):
        pattern = arn.removeprefix("arn:aws:s3:::")
        if resource.rstrip("/") == pattern or _wildcard(pattern, resource):
            return True
    return False


class Accounts:
    def __init__(
        self,
        root_access_key: str,
        users: dict[str, dict[str, str]],
        version: OscarVersion,
        root_secret_key: str = "",
        tokens: OidcTokens | None = None,
    ) -> None:
        self.root_access_key = root_access_key
        self.version = version
        self.users = {sub: User(sub, **creds) for sub, creds in users.items()}
        # Without the launcher's key, no token is valid.
        self.tokens = tokens or OidcTokens(secrets.token_urlsafe(32))
        self.minio = MinioIam(
            root_access_key, root_secret_key
        )  # MinIO's own users, made through its admin API

    def access_keys(self) -> set[str]:
        return {self.root_access_key, *self.users, *self.minio.access_keys()}

    def secret_of(self, access_key: str) -> str | None:
        """The secret key of an account storage accepts (the root's, an OIDC user's, an enabled
        MinIO user's): what the storage front checks its requests' signatures with."""
        user = self.users.get(access_key)
        if user is not None and access_key != self.root_access_key:
            return user.secret_key
        return self.minio.enabled_secret_of(access_key)

    def user_for_token(self, token: str) -> User | None:
        """The OIDC user of an access token the issuer signed, not expired (OSCAR checks it with
        the issuer's keys and userinfo, and answers 401 once it has expired)."""
        claims = self.tokens.verify(token, ACCESS)
        return self.users.get(str(claims.get("sub"))) if claims is not None else None

    def can_see(self, sub: str | None, service: dict[str, Any]) -> bool:
        """Whether a caller (None: the admin) sees a service (pkg/handlers/list.go, read.go)."""
        if sub is None:
            return True
        allowed = service.get("allowed_users") or []
        if self.version.release < (3, 6, 0):
            return not allowed or sub in allowed or service.get("owner") == sub
        visibility = service.get("visibility")
        return (
            visibility == "public"
            or service.get("owner") == sub
            or (visibility == "restricted" and sub in allowed)
        )


class Kueue:
    """Admission of the jobs of services not owned by the admin, one ClusterQueue per owner.

    ``admit(job)`` is called for every new job of such a service; ``release(job)`` when an admitted
    job ends. ``start(job)`` is how an admitted job goes on to be scheduled. Queueing is
    best-effort FIFO (Kueue's default): a job that does not fit lets smaller later ones pass.
    """

    def __init__(self, users: set[str], quota: tuple[str, str], start: Callable[[Any], None]) -> None:
        self._users = users
        self._cpu, self._memory = parse_quantity(quota[0]), parse_quantity(quota[1])
        self._start = start
        self._lock = threading.Lock()
        self._used: dict[str, list[float]] = {}
        self._waiting: dict[str, deque[Any]] = {}

    @staticmethod
    def queued(service: dict[str, Any]) -> bool:
        return service.get("owner") != DEFAULT_OWNER

    @staticmethod
    def _needs(job: Any) -> tuple[float, float]:
        return job.cpu, parse_quantity(job.service.get("memory") or "256Mi")

    def admit(self, job: Any) -> bool:
        """True if the job may start now; else it waits (for ever, if its owner has no queue)."""
        owner = job.service.get("owner") or ""
        with self._lock:
            if owner not in self._users:
                return False
            self._waiting.setdefault(owner, deque()).append(job)
            started = self._admit_waiting(owner)
        for admitted in started:
            self._start(admitted)
        return job in started

    def release(self, job: Any) -> None:
        owner = job.service.get("owner") or ""
        with self._lock:
            used = self._used.get(owner)
            if used is None or not getattr(job, "admitted", False):
                return
            cpu, memory = self._needs(job)
            used[0] -= cpu
            used[1] -= memory
            started = self._admit_waiting(owner)
        for admitted in started:
            self._start(admitted)

    def _admit_waiting(self, owner: str) -> list[Any]:
        used = self._used.setdefault(owner, [0.0, 0.0])
        started = []
        for job in list(self._waiting.get(owner, ())):
            cpu, memory = self._needs(job)
            if getattr(job, "cancelled", False):
                self._waiting[owner].remove(job)
            elif used[0] + cpu <= self._cpu + 1e-9 and used[1] + memory <= self._memory:
                used[0] += cpu
                used[1] += memory
                job.admitted = True
                self._waiting[owner].remove(job)
                started.append(job)
        return started

    def quota(self, sub: str) -> dict[str, Any]:
        """``GET /system/quotas/user``: 4.1 gives integers (milli-CPUs, bytes), 3.7 and 4.0 strings."""
        with self._lock:
            cpu_used, memory_used = self._used.get(sub, [0.0, 0.0])
        return {
            "user_id": sub,
            "cluster_queue": f"oscar-cq-{sub}",
            "resources": {
                "cpu": (int(self._cpu * 1000), int(cpu_used * 1000)),
                "memory": (int(self._memory), int(memory_used)),
            },
        }
