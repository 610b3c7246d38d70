"""Reduction plans: how partial results are merged, and their validation.

Two strategies, as in DESIGN.md §3:

- ``TreeReduction(fan_in=k)``: uncoordinated. Every new partial triggers a
  reducer; the plan tells it which siblings form its group. Groups are
  consecutive range intervals, so a tree node is named by the interval it
  covers. A lone trailing member of a level is carried up unmerged.
- ``CoordinatedReduction([6, 3])``: a coordinator merges arriving items in
  batches of the given sizes, first come first served; an item is a mapper
  partial or an earlier batch's result. Valid for N partials iff every batch
  is at least 2 and ``sum(plan) == N + len(plan) - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Interval = tuple[int, int]


class PlanError(ValueError):
    """A reduction plan that cannot merge the job's partials exactly once."""


@dataclass(frozen=True)
class TreeReduction:
    """Event-driven tree of reducers, each merging up to ``fan_in`` siblings n-way."""

    fan_in: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.fan_in, bool) or not isinstance(self.fan_in, int) or self.fan_in < 2:
            raise PlanError(f"TreeReduction fan_in must be an integer >= 2, got {self.fan_in!r}")

    def describe(self, npartitions: int) -> dict[str, Any]:
        _check_npartitions(npartitions)
        return {"mode": "tree", "fan_in": self.fan_in, "npartitions": npartitions}


@dataclass(frozen=True)
class CoordinatedReduction:
    """A coordinator merging batches of the given sizes; ``None`` picks a plan for N."""

    batches: Sequence[int] | None = None
    _batches: tuple[int, ...] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.batches is None:
            return
        if isinstance(self.batches, (str, bytes)) or not isinstance(self.batches, Sequence):
            raise PlanError(f"CoordinatedReduction takes a list of batch sizes, got {self.batches!r}")
        for size in self.batches:
            if isinstance(size, bool) or not isinstance(size, int) or size < 2:
                raise PlanError(f"every batch of a coordinated plan must be an integer >= 2, got {list(self.batches)}")
        object.__setattr__(self, "_batches", tuple(self.batches))

    def plan_for(self, npartitions: int) -> list[int]:
        _check_npartitions(npartitions)
        if self._batches is None:
            return auto_batches(npartitions)
        batches = list(self._batches)
        if sum(batches) != npartitions + len(batches) - 1:
            raise PlanError(
                f"coordinated plan {batches} does not merge {npartitions} partials exactly once: "
                f"its batches must sum to npartitions + len(plan) - 1 = {npartitions + len(batches) - 1}, "
                f"not {sum(batches)}"
            )
        return batches

    def describe(self, npartitions: int) -> dict[str, Any]:
        return {"mode": "coordinated", "batches": self.plan_for(npartitions), "npartitions": npartitions}


Reduction = TreeReduction | CoordinatedReduction
DEFAULT_REDUCTION = TreeReduction(fan_in=4)


def _check_npartitions(npartitions: int) -> None:
    if npartitions < 1:
        raise PlanError(f"a job needs at least one partition, got {npartitions}")


def auto_batches(npartitions: int) -> list[int]:
    """Batches of about sqrt(N) items: two levels of merging, each n-way."""
    size = max(2, math.ceil(math.sqrt(npartitions)))
    batches, remaining = [], npartitions
    while remaining > 1:
        take = min(size, remaining)
        batches.append(take)
        remaining -= take - 1
    return batches


def tree_groups(npartitions: int, fan_in: int) -> list[list[Interval]]:
    """All reduction groups of a tree, bottom level first; the last group is the root."""
    level: list[Interval] = [(i, i + 1) for i in range(npartitions)]
    groups: list[list[Interval]] = []
    while len(level) > 1:
        upper: list[Interval] = []
        for start in range(0, len(level), fan_in):
            chunk = level[start:start + fan_in]
            if len(chunk) > 1:
                groups.append(chunk)
            upper.append((chunk[0][0], chunk[-1][1]))
        level = upper
    return groups


def tree_parent(plan: dict[str, Any], member: Interval) -> list[Interval] | None:
    """The group ``member`` belongs to in a tree plan, or None if it is the root."""
    for group in tree_groups(plan["npartitions"], plan["fan_in"]):
        if tuple(member) in group:
            return group
    return None


def count_steps(plan: dict[str, Any]) -> int:
    """Number of reduction steps a plan performs (for progress reporting)."""
    if plan["mode"] == "tree":
        return len(tree_groups(plan["npartitions"], plan["fan_in"]))
    return len(plan["batches"]) or 1  # one partial still passes through a batch reducer


def resolve(reduction: Reduction | None) -> Reduction:
    if reduction is None:
        return DEFAULT_REDUCTION
    if not isinstance(reduction, (TreeReduction, CoordinatedReduction)):
        raise PlanError(
            f"unknown reduction {reduction!r}: use distrdf_oscar.TreeReduction(fan_in=k) "
            "or distrdf_oscar.CoordinatedReduction([...])"
        )
    return reduction
