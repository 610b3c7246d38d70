"""What went wrong talking to OSCAR, said so that a user can act on it: the error, and the
causes of a failed TLS handshake or connection found among the exception's causes."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class OSCARError(RuntimeError):
    """The OSCAR cluster refused or could not be reached; the message says which, ``status`` the
    HTTP status of a refusal (401: the credentials)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def without_userinfo(endpoint: str) -> str:
    # Never repeat credentials someone put into the URL itself.
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and what urllib3 wraps in ``args``/``reason``."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        yield item
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])


def tls_problem(exc: BaseException) -> str:
    for item in _chain(exc):
        if isinstance(item, ssl.SSLCertVerificationError):
            return (
                f"its certificate is not trusted ({item.verify_message or item.reason}). Install the cluster's "
                "CA (REQUESTS_CA_BUNDLE=/path/to/ca.pem) or fix the certificate; set OSCAR_SSL_VERIFY=false "
                "only for a cluster you trust"
            )
        if isinstance(item, ssl.SSLError):
            return (
                f"the TLS handshake failed ({item.reason or item.__class__.__name__}): check that the "
                "endpoint serves HTTPS (a plain HTTP endpoint needs an http:// URL)"
            )
    return "the TLS handshake failed"


def connection_problem(exc: BaseException) -> str:
    import socket

    for item in _chain(exc):
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror):
            return "host name not found"
    return "no connection"
