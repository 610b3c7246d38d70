"""Where a distributed Snapshot's files end up, once the job is done.

Each mapper writes ``<stem>_<range>.root`` and publishes it among the job's objects
(``layout.JobKeys.snapshot``), which the client removes with the job. Before that it delivers
them as the executor's ``snapshots`` option says:

- ``"download"`` (default): each file where the user asked, as with ROOT's Dask backend;
- ``"merge"``: one file, ``<stem>.root`` where the user asked, the parts' trees concatenated
  in range order by the native core (``_core.merge_files``, as ``rootmerge`` does);
- ``"storage"``: the files stay in object storage, copied (server side) to
  ``datasets/snapshots/<job>/``; the dataframe Snapshot returns reads their ``s3://`` URLs, so
  nothing crosses to the client (for a real cluster, whose functions cannot read its disk).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import TYPE_CHECKING, Any

from ..protocol import layout

if TYPE_CHECKING:
    from ..protocol.storage import Storage

MODES = ("download", "merge", "storage")
_PART = re.compile(r"^(.*)_(\d+)\.root$")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"snapshots must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    return mode


def deliver(storage: Storage, keys: layout.JobKeys, task_result: Any, mode: str) -> None:
    """Put every Snapshot result's files where ``mode`` says; rewrites their file names."""
    from ROOT._distrdf.PythonMergeables import SnapshotResult

    results = [m for m in task_result.mergeables or [] if isinstance(m, SnapshotResult)]
    if not results:
        return
    uploaded = {keys.snapshot_name(k): k for k in storage.list(keys.snapshots)}
    for result in results:
        parts = sorted(result.filenames, key=_range_of)  # range order: the merged file's entry order
        objects = [uploaded[os.path.basename(path)] for path in parts]
        if mode == "storage":
            result.filenames = [
                storage.keep_dataset(key, layout.kept_snapshot_key(keys.job_id, os.path.basename(path)))
                for key, path in zip(objects, parts, strict=True)
            ]
        elif mode == "merge":
            result.filenames = [_merge(storage, objects, parts)]
        else:
            for key, path in zip(objects, parts, strict=True):
                _make_folder(path)
                storage.get_file(key, path)


def _range_of(path: str) -> int:
    match = _PART.match(os.path.basename(path))
    return int(match.group(2)) if match else 0


def _make_folder(path: str) -> None:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)


def _merge(storage: Storage, objects: list[str], parts: list[str]) -> str:
    from .. import _core

    match = _PART.match(parts[0])
    target = f"{match.group(1)}.root" if match else parts[0]
    _make_folder(target)
    with tempfile.TemporaryDirectory(prefix="dro-snapshot-") as workdir:
        local = []
        for index, key in enumerate(objects):
            local.append(os.path.join(workdir, f"{index:06d}.root"))
            storage.get_file(key, local[-1])
        _core.merge_files(target, local, overwrite=True)
    return target
