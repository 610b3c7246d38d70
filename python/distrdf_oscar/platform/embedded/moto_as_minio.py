"""Run moto's S3 server answering as MinIO does where the project relies on it (a script, run by
path so that starting it does not import the distrdf_oscar package).

- Listings give each object's last-modified time to the millisecond, as MinIO's do
  (``iso8601TimeFormat`` in MinIO's cmd/api-response.go); moto's give whole seconds. The
  client reads when a partial's upload ended from them (timeline.py).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys


def _milliseconds(when: _dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def main() -> None:
    # Run by path, this folder leads sys.path: its modules must not shadow what moto imports.
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    from moto.core.serialize import TimestampSerializer
    from moto.s3.models import FakeKey
    from moto.server import main as serve

    # The key's time as text, then the response serializer's S3 format: both drop the milliseconds.
    FakeKey.last_modified_ISO8601 = property(lambda key: _milliseconds(key.last_modified))  # type: ignore[method-assign,assignment]
    TimestampSerializer._timestamp_iso8601_zeroed = lambda self, value: _milliseconds(value)  # type: ignore[method-assign]
    serve(sys.argv[1:])


if __name__ == "__main__":
    main()
