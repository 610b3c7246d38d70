"""OIDC access tokens for an OSCAR client: renewing one from a refresh token before it expires,
and saying what to do when a fixed one has expired.

oscar-python renews a token only once it has expired, so a request could carry a dying one; and a
notebook's hour-long analysis outlives any access token, so renewal happens before each call.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .cli_config import ClusterConfigError, token_claims
from .errors import OSCARError, connection_problem

TOKEN_MARGIN = 60.0  # seconds of validity left when an access token is renewed (at most half its life)
# What the holder of an access token that cannot be renewed can do about it.
FRESH_TOKEN_ADVICE = (
    "set OSCAR_TOKEN to a new one, or let the client renew it: OSCAR_REFRESH_TOKEN, "
    "OSCAR_OIDC_ACCOUNT (oidc-agent) or an oscar-cli cluster with oidc_refresh_token"
)


class TokenRenewal:
    """Renews access tokens with a refresh token, at its issuer's token endpoint. As oscar-cli:
    the issuer, client and scopes come from the refresh token itself."""

    def __init__(self, refresh_token: str, endpoint: str) -> None:
        claims = token_claims(refresh_token)
        self.url = str(claims.get("iss", "")).rstrip("/") + "/protocol/openid-connect/token"
        self.client_id = str(claims.get("azp", ""))
        self.scope = str(claims.get("scope", "openid"))
        self._data = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client_id,
            "scope": self.scope,
        }
        self._endpoint = endpoint  # the OSCAR cluster, for messages
        self._lock = threading.Lock()  # one renewal at a time (jobs' bookkeeping runs on a thread)

    def fresh(self, current: str) -> str | None:
        """A new access token if ``current`` has less than a minute (or half its life) left, else None."""
        with self._lock:
            left = lifetime(current)
            if left is not None and left[0] - time.time() > min(TOKEN_MARGIN, left[1] / 2):
                return None
            return self._renewed()

    def _renewed(self) -> str:
        """A new access token from the issuer's token endpoint, or an OSCARError saying why not."""
        import requests

        try:
            answer = requests.post(self.url, data=self._data, timeout=30)
        except requests.RequestException as exc:
            raise OSCARError(
                f"could not renew the OIDC access token for {self._endpoint}: cannot reach the issuer "
                f"at {self.url} ({connection_problem(exc)})"
            ) from None
        try:
            body: Any = answer.json()
        except ValueError:
            body = {}
        token = body.get("access_token") if answer.ok and isinstance(body, dict) else None
        if token:
            return str(token)
        said = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
        raise OSCARError(
            f"could not renew the OIDC access token for {self._endpoint} at {self.url} (answered "
            f"{answer.status_code}{f': {said}' if said else ''}): the refresh token may have expired "
            "or been revoked (`oscar-cli cluster add` a new one, or set OSCAR_REFRESH_TOKEN)"
        )


def expired_advice(token: str | None) -> str | None:
    """For a refused fixed token that has expired: when, and what to do; else None."""
    expired = lifetime(token) if token else None
    if expired is None or expired[0] > time.time():
        return None
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expired[0]))
    return f"OSCAR_TOKEN expired at {when} ({time.time() - expired[0]:.0f} s ago): {FRESH_TOKEN_ADVICE}"


def lifetime(token: str) -> tuple[float, float] | None:
    """(expiry, lifetime) in seconds of a JWT access token (its ``exp``, and ``exp - iat``); None
    if it names no expiry (not a JWT: renewed, or not explained, as unknown)."""
    try:
        claims = token_claims(token)
        expiry = float(claims["exp"])
        return expiry, expiry - float(claims.get("iat") or 0)
    except (ClusterConfigError, KeyError, TypeError, ValueError):
        return None
