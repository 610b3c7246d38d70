"""Waiting for a known set of objects: which of them exist yet, learnt by listing as little as
possible (the client's wait for a job's outputs, the coordinator's for its partials)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from .storage import Listed, Storage


class Arrivals:
    """Which of a known set of keys under one prefix exist yet, learnt by listing.

    A poll lists only past the longest run of expected keys (in key order) already
    seen. Partials are named by range and mostly arrive in about range order, so a
    poll costs what is in flight or out of order, not the whole folder: waiting for
    N objects stays O(N) requests and keys in all instead of O(N²).
    """

    def __init__(self, storage: Storage, prefix: str, expected: Iterable[str]) -> None:
        self._storage = storage
        self._prefix = prefix
        self._expected = sorted({key for key in expected if key.startswith(prefix)})
        self._wanted = set(self._expected)
        self.found: set[str] = set()
        self.objects: dict[
            str, Listed
        ] = {}  # each found key as first listed: when its upload ended, its size
        self._seen_run = 0  # expected[:seen_run] are all found

    @property
    def complete(self) -> bool:
        return self._seen_run == len(self._expected)

    def poll(self) -> builtins.list[str]:
        """The expected keys that appeared since the last poll, in key order."""
        if self.complete:
            return []
        after = self._expected[self._seen_run - 1] if self._seen_run else None
        listed = {entry.key: entry for entry in self._storage.listing(self._prefix, start_after=after)}
        new = [k for k in listed if k in self._wanted and k not in self.found]
        self.found.update(new)
        self.objects.update((k, listed[k]) for k in new)
        while self._seen_run < len(self._expected) and self._expected[self._seen_run] in self.found:
            self._seen_run += 1
        return new
