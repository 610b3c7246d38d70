"""The storage account of a deployment's warm pool: a MinIO user whose policy reaches only the
deployment's buckets, made through MinIO's admin API, so that the workers (which run any
submitter's code) never hold the operator's keys."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ...protocol.storage import StorageConfig
from ..deployment import POOL, Deployment
from .errors import OSCARError

if TYPE_CHECKING:
    from minio import MinioAdmin


def make(deployment: Deployment, storage: StorageConfig) -> tuple[tuple[str, str], str | None]:
    """Storage keys for the deployment's pool that reach only the deployment's buckets: a MinIO
    account (access key = the pool service's name) with a canned policy of the same name,
    made (or given a new secret) through MinIO's admin API with ``storage``'s keys. Returns
    (access key, secret key) and None, or, when those keys cannot administer MinIO (an OIDC
    user's account, a server without the admin API), ``storage``'s own keys and why.

    Uses ``add-canned-policy``, ``add-user`` and ``set-user-or-group-policy``, which both
    RELEASE.2022-05-08 and RELEASE.2024-12-18 serve (``idp/builtin/policy/attach`` is
    2024's only). The secret is derived from the administering secret and the account's name
    (an HMAC): every ``pool start`` sets the same one, so running workers keep working through a
    resize or restart. A new one would reach no running pod: an update leaves an exposed
    service's Deployment as it is when only its Secret changes, and pods read it at start."""
    import base64
    import hashlib
    import hmac

    import urllib3
    from minio.error import MinioAdminException

    name = deployment.service_name(POOL)
    derived = hmac.new(
        storage.secret_key.encode(), f"distrdf-oscar pool account {name}".encode(), hashlib.sha256
    )
    secret = base64.urlsafe_b64encode(derived.digest()).decode().rstrip("=")
    admin = _minio_admin(storage)
    try:
        admin.policy_add(name, policy=pool_policy(deployment))
        admin.user_add(name, secret)
        admin.policy_set(name, user=name)
    except MinioAdminException as exc:
        status = getattr(exc, "_code", "")
        if status.startswith("5"):
            raise OSCARError(
                f"MinIO at {storage.endpoint} failed ({status}) to make the pool's storage account: retry"
            ) from None
        return (storage.access_key, storage.secret_key), (
            f"the pool's workers hold your own storage keys: they cannot administer MinIO (its admin API "
            f"answered {status}), so no account limited to the deployment's buckets could be made"
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise OSCARError(
            f"cannot reach MinIO at {storage.endpoint} to make the pool's storage account: "
            f"{type(exc).__name__}"
        ) from None
    return (name, secret), None


def remove(deployment: Deployment, storage: StorageConfig) -> bool:
    """Remove the pool's MinIO account and policy (undeploy); False if there was none or the
    keys cannot administer MinIO. The user goes first: MinIO (2024) keeps a policy in use."""
    from minio.error import MinioAdminException

    name = deployment.service_name(POOL)
    admin = _minio_admin(storage)
    try:
        admin.user_remove(name)
    except MinioAdminException:
        return False  # none, or not ours to remove
    with contextlib.suppress(MinioAdminException):
        admin.policy_remove(name)
    return True


POOL_ACTIONS = (
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
    "s3:ListenBucketNotification",
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)


def pool_policy(deployment: Deployment) -> dict[str, Any]:
    """The pool account's canned policy: :data:`POOL_ACTIONS` on the deployment's buckets only
    (no bucket settings: notifications, policies, creation or removal stay OSCAR's)."""
    resources = [
        arn for bucket in deployment.buckets for arn in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*")
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(POOL_ACTIONS), "Resource": resources}],
    }


def _minio_admin(storage: StorageConfig) -> MinioAdmin:
    """minio-py's ``MinioAdmin`` for ``storage``'s endpoint and keys: a few seconds' patience,
    not its default five minutes."""
    import urllib3
    from minio import MinioAdmin
    from minio.credentials.providers import StaticProvider

    from ...protocol.storage import split_endpoint

    host, secure = split_endpoint(storage.endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=30),
        maxsize=2,
        cert_reqs="CERT_REQUIRED" if storage.verify else "CERT_NONE",
        retries=urllib3.Retry(total=2, backoff_factor=0.5, status_forcelist=[502, 503, 504]),
    )
    return MinioAdmin(
        endpoint=host,
        credentials=StaticProvider(storage.access_key, storage.secret_key),
        region=storage.region,
        secure=secure,
        cert_check=storage.verify,
        http_client=http,
    )
