"""HMAC signatures on every object the functions or the client deserialize.

Functions unpickle what they download (the mapper's graph, pickled results
inside partials), so anyone able to write into the bucket could otherwise run
code in them. Each object carries ``HMAC-SHA256(key, object key || SHA-256(content))``
in its ``x-amz-meta-dro-signature`` header; binding the object key means a
signed object cannot be replayed under another name (another job, another
range). The key belongs to the deployment: an OSCAR secret in the services
(``DRO_SIGNING_KEY``) and a setting of the client, never written to storage.
"""

from __future__ import annotations

import hashlib
import hmac
import os

METADATA = "x-amz-meta-dro-signature"
from .contract import SIGNING_KEY_VARIABLE as ENV_VAR

MIN_KEY_LENGTH = 16


class SignatureError(RuntimeError):
    """An object is unsigned or its signature does not match: it is refused, never deserialized."""


class Signer:
    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"the signing key must be a string of at least {MIN_KEY_LENGTH} characters")
        self._key = key.encode()

    def __repr__(self) -> str:  # never show the key
        return "Signer(<key hidden>)"

    def _mac(self, object_key: str, digest: bytes) -> str:
        return hmac.new(self._key, object_key.encode() + b"\0" + digest, hashlib.sha256).hexdigest()

    def sign(self, object_key: str, data: bytes) -> str:
        return self._mac(object_key, hashlib.sha256(data).digest())

    def sign_file(self, object_key: str, path: str) -> str:
        return self._mac(object_key, _file_digest(path))

    def verify(self, object_key: str, data: bytes, signature: str | None) -> None:
        self._check(object_key, self.sign(object_key, data), signature)

    def verify_file(self, object_key: str, path: str, signature: str | None) -> None:
        self._check(object_key, self.sign_file(object_key, path), signature)

    @staticmethod
    def _check(object_key: str, expected: str, signature: str | None) -> None:
        if not signature:
            raise SignatureError(f"refusing unsigned object {object_key!r}")
        if not hmac.compare_digest(expected, signature):
            raise SignatureError(
                f"refusing object {object_key!r}: its signature does not match (tampered, "
                "or signed with another deployment's key)"
            )


def key_id(key: str) -> str:
    """A public fingerprint of a key: tells which key services hold without revealing it."""
    return hmac.new(key.encode(), b"distrdf-oscar key id", hashlib.sha256).hexdigest()[:16]


def _file_digest(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def from_environment() -> Signer:
    """The deployment key a function was given as an OSCAR secret."""
    key = os.environ.get(ENV_VAR)
    if not key or len(key) < MIN_KEY_LENGTH:
        raise SignatureError(
            f"this function's {ENV_VAR} secret is {'missing' if not key else 'too short (a placeholder?)'}"
            ": it cannot verify its input and refuses to run"
        )
    return Signer(key)
