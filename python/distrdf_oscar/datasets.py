"""Where the functions read a job's dataset from: local paths made absolute, or refused.

A function runs in a fresh working directory on another machine: it cannot see the client's
disk. DistRDF's ranges carry every file a mapper opens (the chain's files, friend trees' files,
the samples of a ``FromSpec`` dataset), so before a job is submitted each local path in them is
made absolute against the client's working directory, and must lie under one of the executor's
``shared_paths`` (file systems that the functions mount too: everything for ``LocalCluster``,
which runs on this machine; nothing by default on a real cluster). URLs (``root://``, ``s3://``,
``https://`` …) pass unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

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


class PathPolicy:
    """Resolves the local paths of a job's dataset, refusing those the functions cannot read."""

    def __init__(self, shared_paths: Sequence[str], cwd: str | None = None) -> None:
        self.shared = [os.path.join(os.path.abspath(p), "") for p in shared_paths]
        self.cwd = cwd or os.getcwd()
        self.originals: dict[str, str] = {}  # resolved -> as the user wrote it

    def resolve(self, name: str) -> str:
        if not is_local(name):
            return name
        path = os.path.normpath(os.path.join(self.cwd, _local_path(name)))
        if not any(os.path.join(path, "").startswith(prefix) for prefix in self.shared):
            where = f"shared_paths={[p.rstrip('/') or '/' for p in self.shared]}" if self.shared else \
                "no shared_paths"
            raise DatasetError(
                f"the dataset file {name!r} is a local path ({path}), which the functions on the cluster "
                f"cannot read ({where}). Serve it over XRootD (root://host//path), or pass "
                "shared_paths=[...] to the executor for a file system the cluster mounts (e.g. /cvmfs)")
        self.originals[path] = name
        return path

    def restore_names(self, task_result) -> None:
        """Name the processed trees as the user did: DistRDF checks them against its input files."""
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

    def resolve_all(self, names: Iterable[str]) -> list[str]:
        return [self.resolve(str(n)) for n in names]

    def rewrite_ranges(self, ranges: list[Any]) -> None:
        """Resolve, in place, every file a mapper of these DistRDF ranges will open."""
        import ROOT

        for current in ranges:
            if hasattr(current, "filenames"):
                current.filenames = self.resolve_all(current.filenames)
            friends = getattr(current, "friendinfo", None)
            if friends is not None:
                for files in friends.fFriendFileNames:
                    for index in range(files.size()):
                        files[index] = self.resolve(str(files[index]))
            samples = getattr(current, "samples", None)
            if samples:
                current.samples = [self._rewrite_sample(ROOT, s) for s in samples]

    def _rewrite_sample(self, ROOT, sample):
        from ROOT._distrdf.Ranges import SerializableRSample

        state = sample.__getstate__()
        state["filenames"] = ROOT.std.vector["std::string"](self.resolve_all(state["filenames"]))
        rebuilt = SerializableRSample.__new__(SerializableRSample)
        rebuilt.__setstate__(state)
        return rebuilt
