"""Where the functions read a job's dataset from: local paths, XRootD and object storage.

A function runs in a fresh working directory on another machine: it cannot see the client's
disk. DistRDF's ranges carry every file a mapper opens (the chain's files, friend trees' files,
the samples of a ``FromSpec`` dataset), so before a job is submitted each local path in them is
made absolute against the client's working directory, and must lie under one of the executor's
``shared_paths`` (file systems that the functions mount too: everything for ``LocalCluster``,
which runs on this machine; nothing by default on a real cluster). URLs pass unchanged;
``s3://`` files are staged by the mappers (and the client's first file, for the head node).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from . import layout

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# XRootD's client waits up to 5 x 120 s to reconnect and 1800 s for an answer by default: a
# server that went away would hold a function for an hour. Fail within a minute instead (the
# client's retry policy then decides); a user's own settings win.
XROOTD_ENV = {"XRD_CONNECTIONRETRY": "2", "XRD_CONNECTIONWINDOW": "10", "XRD_REQUESTTIMEOUT": "60",
              "XRD_STREAMTIMEOUT": "30"}


def read_urls_remotely(ROOT) -> None:
    """Read every ``root://`` URL through XRootD, in the client and in the functions.

    ``TFile::Open`` treats a ``root://`` URL whose host is this machine as a local path unless
    the mode is exactly "READ" (``TFile::GetType``); TChain and RDataFrame open with
    "READ_WITHOUT_GLOBALREGISTRATION", so ``root://localhost//f.root`` became the missing
    local file ``/f.root``. ``TFile.ForceRemote`` turns that shortcut off.
    """
    for name, value in XROOTD_ENV.items():
        os.environ.setdefault(name, value)
    ROOT.gEnv.SetValue("TFile.ForceRemote", 1)


class DatasetError(ValueError):
    """A file of the dataset cannot be read by the functions."""


def is_local(name: str) -> bool:
    return not _URL.match(name) or name.startswith("file://")


def _local_path(name: str) -> str:
    return name.removeprefix("file://")


class Renaming:
    """Renames, in place, every file DistRDF's ranges make a mapper open, and names the processed
    trees back as the user wrote them (DistRDF checks them against its input files)."""

    def __init__(self) -> None:
        self.originals: dict[str, str] = {}  # new name -> as the user wrote it

    def rename(self, name: str) -> str:
        raise NotImplementedError

    def _renamed(self, name: str) -> str:
        new = self.rename(name)
        if new != name:
            self.originals[new] = name
        return new

    def _renamed_all(self, names: Iterable[str]) -> list[str]:
        return [self._renamed(str(n)) for n in names]

    def rewrite_ranges(self, ranges: list[Any]) -> None:
        import ROOT

        for current in ranges:
            if hasattr(current, "filenames"):
                current.filenames = self._renamed_all(current.filenames)
            friends = getattr(current, "friendinfo", None)
            if friends is not None:
                for files in friends.fFriendFileNames:
                    for index in range(files.size()):
                        files[index] = self._renamed(str(files[index]))
            samples = getattr(current, "samples", None)
            if samples:
                current.samples = [self._rewrite_sample(ROOT, s) for s in samples]

    def _rewrite_sample(self, ROOT, sample):
        from ROOT._distrdf.Ranges import SerializableRSample

        state = sample.__getstate__()
        state["filenames"] = ROOT.std.vector["std::string"](self._renamed_all(state["filenames"]))
        rebuilt = SerializableRSample.__new__(SerializableRSample)
        rebuilt.__setstate__(state)
        return rebuilt

    def restore_names(self, task_result) -> None:
        entries = getattr(task_result, "entries_in_trees", None)
        if entries is None or not self.originals:
            return
        entries.trees_with_entries = {self._original_tree(k): n for k, n in entries.trees_with_entries.items()}

    def _original_tree(self, key: str) -> str:
        # Keys are "<file>/<tree>", and a tree may sit in a folder of the file.
        cut = key.find("/", 1)
        while cut != -1:
            if key[:cut] in self.originals:
                return self.originals[key[:cut]] + key[cut:]
            cut = key.find("/", cut + 1)
        return key


class PathPolicy(Renaming):
    """On the client: local paths made absolute, refused unless the functions can read them."""

    def __init__(self, shared_paths: Sequence[str], cwd: str | None = None) -> None:
        super().__init__()
        self.shared = [os.path.join(os.path.normpath(p if os.path.isabs(p) else os.path.abspath(p)), "")
                       for p in shared_paths]
        self._cwd = cwd

    def rename(self, name: str) -> str:
        if not is_local(name):
            return name
        path = _local_path(name)
        if not os.path.isabs(path):
            # Only now: a job over absolute paths or URLs must not need a working directory.
            path = os.path.join(self._cwd or os.getcwd(), path)
        path = os.path.normpath(path)
        if not any(os.path.join(path, "").startswith(prefix) for prefix in self.shared):
            where = f"shared_paths={[p.rstrip('/') or '/' for p in self.shared]}" if self.shared else \
                "no shared_paths"
            raise DatasetError(
                f"the dataset file {name!r} is a local path ({path}), which the functions on the cluster "
                f"cannot read ({where}). Upload it (`distrdf-oscar upload`, giving s3:// URLs), serve it "
                "over XRootD (root://host//path), or pass shared_paths=[...] to the executor for a file "
                "system the cluster mounts (e.g. /cvmfs)")
        return path


class S3Staging(Renaming):
    """``s3://bucket/key`` files copied to a local cache, where ROOT can open them.

    The ROOT wheel reads neither HTTP nor S3 (no Davix; DESIGN.md), so each file a range opens
    is downloaded whole, once per process and object version: a warm worker serving many
    ranges of a file fetches it once."""

    def __init__(self, storage, purpose: str) -> None:
        super().__init__()
        self.storage = storage
        self.purpose = purpose  # of its process_cache, made only once something is staged

    def rename(self, name: str) -> str:
        if not name.startswith("s3://"):
            return name
        bucket, _, key = name[len("s3://"):].partition("/")
        if not bucket or not key:
            raise DatasetError(f"the dataset URL {name!r} names no object: use s3://bucket/key")
        return self.storage.fetch_dataset(bucket, key, process_cache(self.purpose))


_caches: dict[str, str] = {}


def process_cache(purpose: str) -> str:
    """A folder for staged dataset files, kept for this process's life.

    Under ``$DRO_CACHE_DIR`` when set (the embedded platform gives each warm worker one that
    outlives its calls), else under ``TMPDIR``: a cold function's, gone with its pod. Made anew
    if something removed it."""
    cached = _caches.get(purpose)
    if cached is None or not os.path.isdir(cached):
        import atexit
        import shutil
        import tempfile

        base = os.environ.get("DRO_CACHE_DIR") or None
        if base:
            os.makedirs(base, exist_ok=True)
        cached = _caches[purpose] = tempfile.mkdtemp(prefix=f"dro-{purpose}-", dir=base)
        atexit.register(shutil.rmtree, cached, True)
    return cached


def stage_for_head_node(storage_of, args: tuple) -> tuple[tuple, dict[str, str]]:
    """The RDataFrame arguments with the first ``s3://`` file staged locally: DistRDF's head node
    builds a local dataframe of the dataset (to compile the graph), which opens that file. Returns
    the arguments and {local path: URL}; ``storage_of()`` gives the storage (connects lazily)."""
    import ROOT

    if args and isinstance(args[0], ROOT.TChain) and not args[0].GetListOfFriends():
        # A chain of objects (a Snapshot kept in storage): by tree name and files instead.
        chain = args[0]
        files = [str(f) for f in ROOT.Internal.TreeUtils.GetFileNamesFromTree(chain)]
        if any(f.startswith("s3://") for f in files):
            args = (str(chain.GetName()), files, *args[1:])
    if len(args) < 2 or not isinstance(args[0], str):
        return args, {}
    files = [args[1]] if isinstance(args[1], str) else args[1]
    if not isinstance(files, (list, tuple)) or not files or not str(files[0]).startswith("s3://"):
        return args, {}
    staging = S3Staging(storage_of(), "head-node")
    first = staging._renamed(str(files[0]))
    staged = first if isinstance(args[1], str) else [first, *files[1:]]
    return (args[0], staged, *args[2:]), staging.originals


def upload(storage, paths: Sequence[str], folder: str = "", progress: bool = True) -> list[str]:
    """Upload local files to ``datasets/<folder>/`` of the deployment's base bucket, with a
    progress bar; returns their ``s3://`` URLs, in order, to give RDataFrame."""
    import tqdm

    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetError(f"cannot upload {missing[0]!r}: no such file")
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) != len(names):
        raise DatasetError("cannot upload files of the same name to one folder: "
                           f"{min(n for n in names if names.count(n) > 1)!r}")
    total = sum(os.path.getsize(p) for p in paths)
    urls = []
    with tqdm.tqdm(total=total, unit="B", unit_scale=True, desc="upload", disable=not progress) as bar:
        for path, name in zip(paths, names, strict=True):
            key = layout.dataset_key(folder, name)
            urls.append(storage.upload_dataset(path, storage.bucket, key, progress=_Progress(bar)))
    return urls


class _Progress:
    """minio's progress protocol (``set_meta``, ``update``) onto a tqdm bar."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def set_meta(self, object_name: str, total_length: int) -> None:
        self.bar.set_postfix_str(object_name.rsplit("/", 1)[-1])

    def update(self, size: int) -> None:
        self.bar.update(size)
