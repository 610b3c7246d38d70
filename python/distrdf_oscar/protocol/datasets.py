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

import contextlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from . import layout

if TYPE_CHECKING:
    from .dataset_objects import DatasetEndpoint
    from .storage import Storage

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# XRootD's client waits up to 5 x 120 s to reconnect and 1800 s for an answer by default: a
# server that went away would hold a function for an hour. Fail within a minute instead (the
# client's retry policy then decides); a user's own settings win.
XROOTD_ENV = {
    "XRD_CONNECTIONRETRY": "2",
    "XRD_CONNECTIONWINDOW": "10",
    "XRD_REQUESTTIMEOUT": "60",
    "XRD_STREAMTIMEOUT": "30",
}


def read_urls_remotely(ROOT: Any) -> None:
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

    def _rewrite_sample(self, ROOT: Any, sample: Any) -> Any:
        from ROOT._distrdf.Ranges import SerializableRSample

        state = sample.__getstate__()
        state["filenames"] = ROOT.std.vector["std::string"](self._renamed_all(state["filenames"]))
        rebuilt = SerializableRSample.__new__(SerializableRSample)
        rebuilt.__setstate__(state)
        return rebuilt

    def restore_names(self, task_result: Any) -> None:
        entries = getattr(task_result, "entries_in_trees", None)
        if entries is None or not self.originals:
            return
        entries.trees_with_entries = {
            self._original_tree(k): n for k, n in entries.trees_with_entries.items()
        }

    def _original_tree(self, key: str) -> str:
        # Keys are "<file>/<tree>", and a tree may sit in a folder of the file.
        cut = key.find("/", 1)
        while cut != -1:
            if key[:cut] in self.originals:
                return self.originals[key[:cut]] + key[cut:]
            cut = key.find("/", cut + 1)
        return key


class PathPolicy(Renaming):
    """On the client: local paths refused unless the functions can read them. An absolute path
    stays as it is; a relative one too, and :attr:`as_written` tells the functions where it points
    (they resolve it from a working directory of their own, so that what RDataFrame shows of a
    file, e.g. ``rdfsampleinfo_``, is the user's spelling, as with ROOT's other backends)."""

    def __init__(self, shared_paths: Sequence[str], cwd: str | None = None) -> None:
        super().__init__()
        self.shared = [
            os.path.join(os.path.normpath(p if os.path.isabs(p) else os.path.abspath(p)), "")
            for p in shared_paths
        ]
        self._cwd = cwd
        self.as_written: dict[str, str] = {}  # a relative path as the user wrote it -> the file

    def rename(self, name: str) -> str:
        if not is_local(name):
            return name
        url = head_node_url(name)
        if url is not None:  # staged for the client's head node: the functions read the object
            return url
        path = _local_path(name)
        if not os.path.isabs(path):
            # Only now: a job over absolute paths or URLs must not need a working directory.
            path = os.path.join(self._cwd or os.getcwd(), path)
        path = os.path.normpath(path)
        if not any(os.path.join(path, "").startswith(prefix) for prefix in self.shared):
            where = (
                f"shared_paths={[p.rstrip('/') or '/' for p in self.shared]}"
                if self.shared
                else "no shared_paths"
            )
            raise DatasetError(
                f"the dataset file {name!r} is a local path ({path}), which the functions on the cluster "
                f"cannot read ({where}). Upload it (`distrdf-oscar upload`, giving s3:// URLs), serve it "
                "over XRootD (root://host//path), or pass shared_paths=[...] to the executor for a file "
                "system the cluster mounts (e.g. /cvmfs)"
            )
        if name == _local_path(name) and not os.path.isabs(name):
            self.as_written[name] = path
            return name
        return path


S3_SCHEMES = ("s3://", "s3http://", "s3https://")
DEFAULT_CACHE_MAX_BYTES = 8 * 1024**3
CACHE_MAX_VARIABLE = "DRO_CACHE_MAX_BYTES"


def is_s3(name: str) -> bool:
    return name.startswith(S3_SCHEMES)


def split_s3_url(url: str) -> tuple[str | None, str, str]:
    """(endpoint, bucket, key) of an object-storage URL.

    ``s3://bucket/key`` is an object of the deployment's own storage (endpoint None).
    ``s3http://host[:port]/bucket/key`` and ``s3https://host[:port]/bucket/key`` are on another
    endpoint, as ROOT's ``TS3WebFile`` spells them (ROOT's own ``s3://host/bucket/key``, HTTPS,
    is ``s3https://`` here: ``s3://`` names the deployment's bucket)."""
    scheme, _, rest = url.partition("://")
    endpoint = None
    if scheme != "s3":
        host, _, rest = rest.partition("/")
        if not host:
            raise DatasetError(
                f"the dataset URL {url!r} names no host: use {scheme}://host[:port]/bucket/key"
            )
        endpoint = f"{'https' if scheme == 's3https' else 'http'}://{host}"
    bucket, _, key = rest.partition("/")
    if not bucket or not key:
        form = "s3://bucket/key" if endpoint is None else f"{scheme}://host[:port]/bucket/key"
        raise DatasetError(f"the dataset URL {url!r} names no object: use {form}")
    return endpoint, bucket, key


_endpoints: dict[tuple[str, str | None, str | None], DatasetEndpoint] = {}


def dataset_endpoint(endpoint: str) -> DatasetEndpoint:
    """The client of another S3 endpoint, with the keys the environment holds now (one per
    endpoint and keys, kept for the process)."""
    from .dataset_objects import DATASET_KEYS, DatasetEndpoint

    access, secret = (os.environ.get(name) for name in DATASET_KEYS)
    key = (endpoint, access, secret)
    if key not in _endpoints:
        _endpoints[key] = DatasetEndpoint(endpoint)
    return _endpoints[key]


class S3Staging(Renaming):
    """Object-storage files copied to a local cache, where ROOT can open them.

    The ROOT wheel reads neither HTTP nor S3 (no Davix; DESIGN.md), so each file a range opens
    is downloaded whole, once per process and object version: a warm worker serving many
    ranges of a file fetches it once. ``s3://bucket/key`` comes from ``storage`` (the
    deployment's), ``s3http(s)://host/bucket/key`` from that endpoint with the environment's
    keys. The files stay pinned in the cache (never evicted) until :meth:`release`."""

    def __init__(self, storage: Storage | None, purpose: str) -> None:
        super().__init__()
        self.storage = storage
        self.purpose = purpose  # of its process_cache, made only once something is staged
        self.pinned: list[str] = []

    def rename(self, name: str) -> str:
        if not is_s3(name):
            return name
        endpoint, bucket, key = split_s3_url(name)
        cache = process_cache(self.purpose)
        if endpoint is None:
            # None only in stage_for_head_node, which sets it before staging a file of the deployment.
            from .dataset_objects import fetch_from_deployment

            path = fetch_from_deployment(cast("Storage", self.storage), bucket, key, cache.folder)
        else:
            folder = os.path.join(cache.folder, "endpoints", re.sub(r"[^A-Za-z0-9.-]", "_", endpoint))
            path = dataset_endpoint(endpoint).fetch(name, bucket, key, folder)
        cache.admit(path, pinned=self.pinned)
        return path

    def release(self) -> None:
        """The range that opened these files is done: they may be evicted."""
        if self.pinned:
            process_cache(self.purpose).unpin(self.pinned)
            self.pinned = []


class DatasetCache:
    """A process's staged dataset files, at most ``max_bytes`` (``$DRO_CACHE_MAX_BYTES``, a
    Kubernetes quantity such as ``20Gi``; default 8 GiB): once a new file takes it over, the least
    recently used files are removed until it fits, except those a running range has open
    (pinned). A range whose own files exceed the bound keeps them all until it ends."""

    def __init__(self, folder: str, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._pins: dict[str, int] = {}

    def admit(self, path: str, pinned: list[str]) -> None:
        self._pins[path] = self._pins.get(path, 0) + 1
        pinned.append(path)
        self.evict()

    def unpin(self, paths: Iterable[str]) -> None:
        for path in paths:
            left = self._pins.get(path, 0) - 1
            if left > 0:
                self._pins[path] = left
            else:
                self._pins.pop(path, None)
        self.evict()

    def files(self) -> list[tuple[float, int, str]]:
        """(last use, size, path) of every cached file, least recently used first."""
        found = []
        for folder, _dirs, names in os.walk(self.folder):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                found.append((stat.st_mtime, stat.st_size, path))
        return sorted(found)

    def evict(self) -> None:
        files = self.files()
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= self.max_bytes:
                break
            if path in self._pins or path.endswith(".part"):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            total -= size


def cache_max_bytes() -> int:
    from .quantities import parse_quantity

    text = os.environ.get(CACHE_MAX_VARIABLE, "").strip()
    if not text:
        return DEFAULT_CACHE_MAX_BYTES
    try:
        return int(parse_quantity(text))
    except ValueError:
        raise DatasetError(
            f"{CACHE_MAX_VARIABLE} must be a size in bytes such as 4000000000 or 4Gi, got {text!r}"
        ) from None


_caches: dict[str, DatasetCache] = {}


def process_cache(purpose: str) -> DatasetCache:
    """The cache of staged dataset files, kept for this process's life.

    Under ``$DRO_CACHE_DIR`` when set (the embedded platform gives each warm worker one that
    outlives its calls), else under ``TMPDIR``: a cold function's, gone with its pod. Made anew
    if something removed it. Its bound is read again on every use."""
    cached = _caches.get(purpose)
    if cached is None or not os.path.isdir(cached.folder):
        import atexit
        import shutil
        import tempfile

        base = os.environ.get("DRO_CACHE_DIR") or None
        if base:
            os.makedirs(base, exist_ok=True)
        folder = tempfile.mkdtemp(prefix=f"dro-{purpose}-", dir=base)
        cached = _caches[purpose] = DatasetCache(folder, cache_max_bytes())
        atexit.register(shutil.rmtree, folder, True)
    cached.max_bytes = cache_max_bytes()
    return cached


_head_node_urls: dict[str, str] = {}  # a file the head node staged -> its URL
_head_node_chains: list[Any] = []  # chains built for head nodes, alive as long as their dataframes may be


def head_node_url(path: str) -> str | None:
    """The URL of a file this process staged for a head node (PathPolicy names it back)."""
    return _head_node_urls.get(path)


def _chain_files(chain: Any) -> tuple[list[str], list[str]]:
    import ROOT

    return (
        [str(f) for f in ROOT.Internal.TreeUtils.GetFileNamesFromTree(chain)],
        [str(t) for t in ROOT.Internal.TreeUtils.GetTreeFullPaths(chain)],
    )


def _staged_chain(
    ROOT: Any, name: str, files: list[str], trees: list[str], stage: Callable[[str], str]
) -> Any:
    """A chain of ``files`` (each with its tree), the first staged: the head node opens only it."""
    chain = ROOT.TChain(name)
    for index, (path, tree) in enumerate(zip(files, trees, strict=True)):
        chain.Add(f"{stage(path) if index == 0 else path}?#{tree}")
    return chain


def _stage_chain_with_friends(ROOT: Any, chain: Any, stage: Callable[[str], str]) -> Any:
    """The user's chain rebuilt with its friends, the first file of the chain and of each friend
    staged; the ranges name the URLs again (PathPolicy, through :func:`head_node_url`)."""
    files, trees = _chain_files(chain)
    info = ROOT.Internal.TreeUtils.GetFriendInfo(chain)
    rebuilt = _staged_chain(ROOT, str(chain.GetName()), files, trees, stage)
    keep = [rebuilt]
    for index, names in enumerate(info.fFriendNames):
        friend_files = [str(f) for f in info.fFriendFileNames[index]]
        subnames = [str(t) for t in info.fFriendChainSubNames[index]] or [str(names.first)] * len(
            friend_files
        )
        friend = _staged_chain(ROOT, str(names.first), friend_files, subnames, stage)
        rebuilt.AddFriend(friend, str(names.second))
        keep.append(friend)
    _head_node_chains.append(keep)
    return rebuilt


def stage_for_head_node(
    storage_of: Callable[[], Storage], args: tuple[Any, ...]
) -> tuple[tuple[Any, ...], dict[str, str]]:
    """The RDataFrame arguments with the first object-storage file staged locally: DistRDF's head
    node builds a local dataframe of the dataset (to compile the graph), which opens that file, and
    the first file of each friend tree. Returns the arguments and {local path: URL} of the main
    chain's files; ``storage_of()`` gives the deployment's storage (connects lazily)."""
    import ROOT

    staging = S3Staging(None, "head-node")

    def stage(name: str) -> str:
        if not is_s3(name):
            return name
        if staging.storage is None and split_s3_url(name)[0] is None:
            staging.storage = storage_of()
        path = staging._renamed(name)
        _head_node_urls[path] = name
        return path

    if args and isinstance(args[0], ROOT.TChain):
        chain = args[0]
        files, _trees = _chain_files(chain)
        if chain.GetListOfFriends():
            info = ROOT.Internal.TreeUtils.GetFriendInfo(chain)
            friend_files = [str(f) for names in info.fFriendFileNames for f in names]
            if not any(is_s3(f) for f in [*files, *friend_files]):
                return args, {}
            return (_stage_chain_with_friends(ROOT, chain, stage), *args[1:]), staging.originals
        if any(is_s3(f) for f in files):
            # A chain of objects (a Snapshot kept in storage): by tree name and files instead.
            args = (str(chain.GetName()), files, *args[1:])
    if len(args) < 2 or not isinstance(args[0], str):
        return args, {}
    files = [args[1]] if isinstance(args[1], str) else args[1]
    if not isinstance(files, (list, tuple)) or not files or not is_s3(str(files[0])):
        return args, {}
    first = stage(str(files[0]))
    staged = first if isinstance(args[1], str) else [first, *files[1:]]
    return (args[0], staged, *args[2:]), staging.originals


def upload(storage: Storage, paths: Sequence[str], folder: str = "", progress: bool = True) -> list[str]:
    """Upload local files to ``datasets/<folder>/`` of the deployment's base bucket, with a
    progress bar; returns their ``s3://`` URLs, in order, to give RDataFrame."""
    import tqdm

    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetError(f"cannot upload {missing[0]!r}: no such file")
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) != len(names):
        raise DatasetError(
            "cannot upload files of the same name to one folder: "
            f"{min(n for n in names if names.count(n) > 1)!r}"
        )
    total = sum(os.path.getsize(p) for p in paths)
    urls = []
    with tqdm.tqdm(total=total, unit="B", unit_scale=True, desc="upload", disable=not progress) as bar:
        for path, name in zip(paths, names, strict=True):
            key = layout.dataset_key(folder, name)
            urls.append(storage.upload_dataset(path, storage.bucket, key, progress=_Progress(bar)))
    return urls


class _Progress:
    """minio's progress protocol (``set_meta``, ``update``) onto a tqdm bar."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def set_meta(self, object_name: str, total_length: int) -> None:
        self.bar.set_postfix_str(object_name.rsplit("/", 1)[-1])

    def update(self, size: int) -> None:
        self.bar.update(size)
