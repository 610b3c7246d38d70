"""Which S3 requests an account other than root may make: MinIO's actions and bucket policies.

Each request needs one action or two (:func:`required_actions`, as MinIO's router and handlers
name them); :class:`S3Permissions` grants them to an account made through MinIO's admin API by
its canned policies (``accounts.MinioIam``), and to an OIDC user's account by OSCAR's bucket
policies (``allowed``, all or nothing of a bucket). A bucket listing is filtered instead of
refused, as MinIO's ``ListBucketsHandler`` does. The storage front (gate.py) asks before
forwarding a request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote

from .http_framing import MessageHead, s3_target
from .listen_notifications import is_listen_request

if TYPE_CHECKING:
    from .accounts import MinioIam

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


def required_actions(head: MessageHead) -> list[tuple[str, str, str]]:
    """(action, bucket, key) a request needs: its own, and reading the source of a copy. A
    multi-object delete is checked on the bucket (MinIO checks each key: never kinder here, as a
    policy granting a whole bucket grants both). Unknown methods need an action nobody is given."""
    method, bucket, key, query = s3_target(head)
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


class S3Permissions:
    """Grants S3 requests to the accounts other than root (see the module's docstring)."""

    def __init__(self, iam: MinioIam, allowed: Callable[[str, str], bool] | None = None) -> None:
        self._iam = iam  # the accounts made through the admin API, and their canned policies
        self._allowed = allowed or (lambda access_key, bucket: True)  # for the other (OIDC) accounts

    def grants(self, head: MessageHead, access_key: str) -> bool:
        """Whether a non-root account may make this (non-admin) request."""
        needs = required_actions(head)
        if self._iam.is_user(access_key):
            return all(
                self._iam.allows(access_key, action, bucket, key)
                for action, bucket, key in needs
                if action != "s3:ListAllMyBuckets"
            )  # a bucket listing is filtered instead
        # An OIDC user's account: OSCAR's policies give it all or nothing of a bucket, and not
        # listening to a restricted service's (RESTRICTED_ACTIONS): never here, to be safe.
        return not is_listen_request(head) and all(
            self._allowed(access_key, bucket) for _, bucket, _ in needs if bucket
        )

    def may_list(self, access_key: str, bucket: str) -> bool:
        """Whether a bucket listing shows ``bucket`` to a non-root account (ListBucketsHandler:
        those it may ``s3:ListBucket`` or ``s3:GetBucketLocation``, without ListAllMyBuckets)."""
        if self._iam.is_user(access_key):
            return any(
                self._iam.allows(access_key, action, bucket)
                for action in ("s3:ListAllMyBuckets", "s3:ListBucket", "s3:GetBucketLocation")
            )
        return self._allowed(access_key, bucket)

    def visible_buckets(self, access_key: str, listing: bytes) -> bytes:
        """A ListBuckets answer's body with only the buckets the account may list."""

        def keep(match: re.Match[bytes]) -> bytes:
            name = re.search(rb"<Name>(.*?)</Name>", match.group(0))
            shown = name is not None and self.may_list(access_key, name.group(1).decode())
            return match.group(0) if shown else b""

        return re.sub(rb"<Bucket>.*?</Bucket>", keep, listing, flags=re.DOTALL)
