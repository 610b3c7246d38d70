"""Which MinIO release the embedded platform's storage behaves as.

OSCAR installs MinIO itself (``deploy/kind-deploy.sh``): the chart 4.0.7, which ships
``RELEASE.2022-05-08T23-50-31Z``, from v3.5.3 to v4.0.0, and the chart 5.4.0
(``RELEASE.2024-12-18T13-15-44Z``) from v4.1.0. Only what the project depends on differs
between them here: whether a PUT honours ``If-None-Match: *``. The 2022 release has no
precondition check in ``PutObjectHandler`` (cmd/object-handlers.go) and overwrites the object;
``RELEASE.2024-05-07T06-41-25Z`` is the first that refuses it with 412 when the key exists.
"""

from __future__ import annotations

import re

OLD = "RELEASE.2022-05-08T23-50-31Z"  # OSCAR 3.5 to 4.0's MinIO chart 4.0.7
NEW = "RELEASE.2024-12-18T13-15-44Z"  # OSCAR 4.1's chart 5.4.0
CONDITIONAL_WRITES_SINCE = "RELEASE.2024-05-07T06-41-25Z"

_PATTERN = re.compile(r"RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z")


def checked(release: str) -> str:
    """``release`` if it names a MinIO release as MinIO spells them, else a ValueError."""
    if not _PATTERN.fullmatch(release):
        raise ValueError(f"minio_release must look like {NEW!r}, got {release!r}")
    return release


def installed_by(oscar_release: tuple[int, int, int]) -> str:
    """The MinIO release OSCAR's own deployment script installs with ``oscar_release``."""
    return NEW if oscar_release >= (4, 1, 0) else OLD


def honours_if_none_match(release: str) -> bool:
    """Whether a PUT with ``If-None-Match: *`` is refused when the key exists (the names sort by date)."""
    return release >= CONDITIONAL_WRITES_SINCE
