"""Clusters as oscar-cli users already have them: its configuration file, written by
``oscar-cli cluster add`` (``~/.oscar-cli/config.yaml``), read as oscar-cli reads it
(grycap/oscar-cli ``pkg/config/config.go`` and ``pkg/cluster/cluster.go``):

    oscar:
      my-cluster:
        endpoint: https://oscar.example.org
        auth_user: oscar                 # basic auth, or
        auth_password: ...
        oidc_account_name: egi           # an oidc-agent account, or
        oidc_refresh_token: eyJ...       # a refresh token (its issuer, client and scopes inside)
        ssl_verify: true
    default: my-cluster

YAML for a ``.yaml``/``.yml`` file, JSON otherwise, as oscar-cli decides.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PATH = os.path.join("~", ".oscar-cli", "config.yaml")
PATH_VARIABLE = "DISTRDF_OSCAR_CLI_CONFIG"  # another file than oscar-cli's default


class ClusterConfigError(ValueError):
    """oscar-cli's configuration file is missing, unreadable, or names no such cluster."""


@dataclass(frozen=True)
class ClusterEntry:
    """One cluster of oscar-cli's file; exactly one way to authenticate is set."""

    name: str
    endpoint: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    oidc_account: str | None = None  # an oidc-agent account's short name
    refresh_token: str | None = field(default=None, repr=False)
    ssl_verify: bool = True


def config_path(path: str | None = None) -> str:
    return os.path.expanduser(path or os.environ.get(PATH_VARIABLE) or DEFAULT_PATH)


def read_cluster(name: str | None = None, path: str | None = None) -> ClusterEntry:
    """The cluster ``name`` of oscar-cli's file, or its default cluster."""
    where = config_path(path)
    try:
        with open(where) as handle:
            text = handle.read()
    except OSError as exc:
        raise ClusterConfigError(
            f"no oscar-cli configuration at {where} ({exc.strerror}): add the cluster with "
            "`oscar-cli cluster add`, or set OSCAR_ENDPOINT and its credentials"
        ) from None
    try:
        if where.endswith((".yaml", ".yml")):
            import yaml

            config = yaml.safe_load(text)
        else:
            config = json.loads(text)
    except ValueError as exc:  # yaml's errors are ValueErrors too
        raise ClusterConfigError(f"oscar-cli's configuration {where} is not valid: {exc}") from None
    clusters = config.get("oscar") if isinstance(config, dict) else None
    if not isinstance(clusters, dict) or not clusters:
        raise ClusterConfigError(f"oscar-cli's configuration {where} lists no cluster under 'oscar'")
    chosen = name or config.get("default")
    if not chosen:
        raise ClusterConfigError(f"oscar-cli's configuration {where} has no default cluster: name one")
    entry = clusters.get(chosen)
    if not isinstance(entry, dict):
        raise ClusterConfigError(
            f"cluster {chosen!r} is not in oscar-cli's configuration {where} (it has {', '.join(sorted(clusters))})"
        )
    return _entry(str(chosen), entry, where)


def _entry(name: str, entry: dict[str, Any], where: str) -> ClusterEntry:
    endpoint = str(entry.get("endpoint") or "")
    if not endpoint:
        raise ClusterConfigError(f"cluster {name!r} in {where} has no endpoint")
    user, password = entry.get("auth_user") or None, entry.get("auth_password") or None
    account, refresh = entry.get("oidc_account_name") or None, entry.get("oidc_refresh_token") or None
    if not (user and password) and not account and not refresh:
        raise ClusterConfigError(
            f"cluster {name!r} in {where} has no credentials (auth_user/auth_password, "
            "oidc_account_name or oidc_refresh_token)"
        )
    verify = entry.get("ssl_verify", True)
    return ClusterEntry(
        name=name,
        endpoint=endpoint,
        user=str(user) if user and password else None,
        password=str(password) if user and password else None,
        oidc_account=None if user and password else (str(account) if account else None),
        refresh_token=None if (user and password) or account else str(refresh),
        ssl_verify=verify if isinstance(verify, bool) else str(verify).lower() in ("1", "true", "yes"),
    )


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the issuer checks its own tokens): oscar-cli reads the
    token endpoint (``iss`` + ``/protocol/openid-connect/token``), the client (``azp``) and the
    scopes from the refresh token itself, and so does this client."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise ClusterConfigError(f"the OIDC token is not a JWT ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise ClusterConfigError("the OIDC token's claims are not a JSON object")
    return claims
