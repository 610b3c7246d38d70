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

``AutoReduction`` (``reduction="auto"``, client/reductions.py) picks one of the two for each job
on the client; the job plan the functions read is that concrete reduction's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from . import layout
from .messages import BatchRetry, Message, MessageError, TreeRetry

Interval = tuple[int, int]


class PlanError(ValueError):
    """A reduction plan that cannot merge the job's partials exactly once."""


@dataclass(frozen=True)
class TreeReduction:
    """Event-driven tree merging up to ``fan_in`` siblings n-way per node.

    ``inline`` (the default): whoever writes a node (a mapper, or a merge) merges the group it
    completes, up the tree, so no function is started for a merge and the tail after the last
    mapper is its merges alone; the reducer service runs only for the client's retries.
    ``inline=False``: every partial triggers a reducer function, which merges its group once
    complete (a pod, a process start, a download per merge on OSCAR)."""

    fan_in: int = 2
    inline: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.fan_in, bool) or not isinstance(self.fan_in, int) or self.fan_in < 2:
            raise PlanError(f"TreeReduction fan_in must be an integer >= 2, got {self.fan_in!r}")
        if not isinstance(self.inline, bool):
            raise PlanError(f"TreeReduction inline must be True or False, got {self.inline!r}")

    def __repr__(self) -> str:
        return f"TreeReduction(fan_in={self.fan_in}{'' if self.inline else ', inline=False'})"

    def check(self, npartitions: int, ranges_per_call: int = 1) -> None:
        check_npartitions(npartitions)

    def describe(
        self,
        npartitions: int,
        job: str,
        coordinator_timeout: float = 3600.0,
        ranges_per_call: int = 1,
        pool: bool = False,
    ) -> TreePlan:
        self.check(npartitions)
        # A pool's nodes are always inline: its queue is watched by no webhook that could start a reducer.
        return TreePlan(
            job=job,
            npartitions=npartitions,
            fan_in=self.fan_in,
            ranges_per_call=ranges_per_call,
            inline=self.inline or pool,
        )


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
                raise PlanError(
                    f"every batch of a coordinated plan must be an integer >= 2, got {list(self.batches)}"
                )
        object.__setattr__(self, "_batches", tuple(self.batches))

    def plan_for(self, npartitions: int) -> list[int]:
        check_npartitions(npartitions)
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

    def check(self, npartitions: int, ranges_per_call: int = 1) -> None:
        """A plan counts the mappers' partials: one per call of ``ranges_per_call`` ranges."""
        check_npartitions(npartitions)
        self.plan_for(len(task_intervals(npartitions, ranges_per_call)))

    def describe(
        self,
        npartitions: int,
        job: str,
        coordinator_timeout: float = 3600.0,
        ranges_per_call: int = 1,
        pool: bool = False,
    ) -> CoordinatedPlan:
        """(``pool``: the batch files go to the warm pool's queue.)"""
        self.check(npartitions, ranges_per_call)
        batches = self.plan_for(len(task_intervals(npartitions, ranges_per_call)))
        return CoordinatedPlan(
            job=job,
            npartitions=npartitions,
            batches=tuple(batches),
            coordinator_timeout=coordinator_timeout,
            ranges_per_call=ranges_per_call,
            pool=pool,
        )


Reduction = TreeReduction | CoordinatedReduction


def check_npartitions(npartitions: int) -> None:
    if npartitions < 1:
        raise PlanError(f"a job needs at least one partition, got {npartitions}")


def check_ranges_per_call(requested: int) -> int:
    """The user's ``ranges_per_call``, or PlanError naming what is wrong with it."""
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise PlanError(f"ranges_per_call must be an integer of at least 1, got {requested!r}")
    return requested


def task_intervals(npartitions: int, ranges_per_call: int) -> list[Interval]:
    """The range intervals ``[lo, hi)`` of the mapper calls, in order."""
    return [(lo, min(lo + ranges_per_call, npartitions)) for lo in range(0, npartitions, ranges_per_call)]


def auto_batches(npartitions: int) -> list[int]:
    """Batches of about sqrt(N) items: two levels of merging, each n-way."""
    return equal_batches(npartitions, max(2, math.ceil(math.sqrt(npartitions))))


def equal_batches(items: int, size: int) -> list[int]:
    """A coordinated plan of batches of ``size`` items (the last may be smaller): first come, first
    served, each batch after the first takes earlier results along with new partials."""
    batches, remaining = [], items
    while remaining > 1:
        take = min(size, remaining)
        batches.append(take)
        remaining -= take - 1
    return batches


def tree_groups(npartitions: int, fan_in: int, ranges_per_call: int = 1) -> list[list[Interval]]:
    """All reduction groups of a tree over the mapper calls' partials, bottom level first; the
    last group is the root."""
    level: list[Interval] = task_intervals(npartitions, ranges_per_call)
    groups: list[list[Interval]] = []
    while len(level) > 1:
        upper: list[Interval] = []
        for start in range(0, len(level), fan_in):
            chunk = level[start : start + fan_in]
            if len(chunk) > 1:
                groups.append(chunk)
            upper.append((chunk[0][0], chunk[-1][1]))
        level = upper
    return groups


# -- the job plan: what reducers and the client read (jobs/<job>/plan.json) ---------------------


@dataclass(frozen=True)
class Expectation:
    """An output a plan's reductions must produce: due once ``need`` of ``inputs`` exist; a retry
    object (``retry_body`` named ``retry_name``) in ``retry_folder`` makes its service run again."""

    output: str
    inputs: tuple[str, ...]
    need: int
    retry_folder: str
    retry_name: str
    retry_body: bytes
    label: str  # for messages, e.g. "batch reduction 2"
    kind: str = "merge"  # "merge" (a reduction's output) or "launch" (a coordinator's batch file)


@dataclass(frozen=True)
class TreePlan(Message):
    """Event-driven tree: each new node's writer, or the reducer it triggers, merges the group it
    completes.

    ``inline`` (TreeReduction's default, and every pool job): the nodes live in ``partials/``,
    which no webhook watches, and whoever writes a node merges the group it completes, up the tree
    (a mapper, a pool worker, a reducer); a tree reducer runs only for a retry the client writes.
    Otherwise nodes land in ``tree-partials/`` and each triggers a reducer."""

    mode: ClassVar[str] = "tree"
    job: str
    npartitions: int
    fan_in: int
    ranges_per_call: int = 1
    inline: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **super().to_dict()}

    @property
    def watched_folders(self) -> tuple[str, ...]:
        return (layout.PARTIALS if self.inline else layout.TREE_PARTIALS, layout.RESULTS)

    @property
    def tasks(self) -> list[Interval]:
        """The mapper calls' range intervals."""
        return task_intervals(self.npartitions, self.ranges_per_call)

    def node(self, interval: Interval) -> str:
        """Where the tree node covering ``interval`` lands: the root is the job's result."""
        keys = layout.JobKeys(self.job)
        if tuple(interval) == (0, self.npartitions):
            return keys.result
        return keys.partial(*interval) if self.inline else keys.tree_partial(*interval)

    def mapper_output(self, task: Interval) -> str:
        return self.node(task)

    def groups(self) -> list[list[Interval]]:
        return tree_groups(self.npartitions, self.fan_in, self.ranges_per_call)

    def steps(self) -> int:
        return len(self.groups())

    def parent(self, member: Interval) -> list[Interval] | None:
        """The group ``member`` belongs to, or None if it is the root."""
        return next((group for group in self.groups() if tuple(member) in group), None)

    def group_covering(self, interval: Interval) -> list[Interval] | None:
        return next((g for g in self.groups() if (g[0][0], g[-1][1]) == tuple(interval)), None)

    def output(self, group: list[Interval]) -> str:
        return self.node((group[0][0], group[-1][1]))

    def expectations(self) -> list[Expectation]:
        out = []
        for group in self.groups():
            lo, hi = group[0][0], group[-1][1]
            members = tuple(self.node(m) for m in group)
            out.append(
                Expectation(
                    self.output(group),
                    members,
                    len(members),
                    layout.TREE_PARTIALS,
                    layout.interval_stem(lo, hi),
                    TreeRetry(self.job, (lo, hi)).to_json(),
                    f"tree reduction of ranges {lo}-{hi - 1}",
                )
            )
        return out


@dataclass(frozen=True)
class CoordinatedPlan(Message):
    """A coordinator launches batch ``i`` once ``batches[i]`` unconsumed items exist."""

    mode: ClassVar[str] = "coordinated"
    job: str
    npartitions: int
    batches: tuple[int, ...]
    coordinator_timeout: float = 3600.0
    ranges_per_call: int = 1
    pool: bool = False  # batch files go to the queue, for the warm pool's workers

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **super().to_dict()}

    @property
    def sizes(self) -> list[int]:
        """The batches to run: a single partial (an empty plan) still passes through one batch,
        so that the final result always comes from a batch."""
        return list(self.batches) or [1]

    @property
    def watched_folders(self) -> tuple[str, ...]:
        if self.pool:
            return (layout.PARTIALS, layout.QUEUE, layout.RESULTS)
        return (layout.PARTIALS, layout.BATCHES, layout.QUEUE, layout.RESULTS)

    def merged_by_coordinator(self, index: int) -> bool:
        """The last batch: the coordinator, already running, merges it itself as soon as it is
        launched (a batch reducer would first pay a pod's start, a pool worker would first finish
        its call or its idle poll: both on the job's critical path)."""
        return index == len(self.sizes) - 1

    def batch_file(self, index: int) -> str:
        """Where the coordinator defines batch ``index``: the queue (a pool's workers, or the
        coordinator itself, claim it there: no webhook watches it), or the batch service's input."""
        keys = layout.JobKeys(self.job)
        return (
            keys.queued_batch(index) if self.pool or self.merged_by_coordinator(index) else keys.batch(index)
        )

    @property
    def tasks(self) -> list[Interval]:
        """The mapper calls' range intervals."""
        return task_intervals(self.npartitions, self.ranges_per_call)

    def mapper_output(self, task: Interval) -> str:
        return layout.JobKeys(self.job).partial(*task)

    def steps(self) -> int:
        return len(self.sizes)

    def batch_output(self, index: int) -> str:
        return layout.JobKeys(self.job).batch_output(index, len(self.sizes))

    def items(self) -> tuple[str, ...]:
        """Every item the coordinator batches: the mappers' partials, then the batches' results
        (all but the last batch's, which is the job's result)."""
        keys = layout.JobKeys(self.job)
        return tuple(self.mapper_output(task) for task in self.tasks) + tuple(
            keys.batch_result(i) for i in range(len(self.sizes) - 1)
        )

    def expectations(self) -> list[Expectation]:
        keys = layout.JobKeys(self.job)
        mappers = tuple(self.mapper_output(task) for task in self.tasks)
        sizes, out, restart = self.sizes, [], self.to_json()
        for index, size in enumerate(sizes):
            items = mappers + tuple(keys.batch_result(i) for i in range(index))
            # The coordinator launches the batch file once enough items arrived; a retry restarts it.
            out.append(
                Expectation(
                    self.batch_file(index),
                    items,
                    sum(sizes[:index]) + size,
                    layout.PLANS,
                    "coordinator",
                    restart,
                    "coordinator",
                    kind="launch",
                )
            )
            queued = self.pool or self.merged_by_coordinator(index)
            retry = BatchRetry(self.job, index, self.batch_file(index) if queued else "")
            out.append(
                Expectation(
                    self.batch_output(index),
                    (self.batch_file(index),),
                    1,
                    layout.BATCHES,
                    keys.batch_name(index),
                    retry.to_json(),
                    f"batch reduction {index}",
                )
            )
        return out


JobPlan = TreePlan | CoordinatedPlan
PlanT = TypeVar("PlanT", TreePlan, CoordinatedPlan)


def plan_from_json(data: bytes | str) -> JobPlan:
    """A job plan as a reducer, the coordinator or the client reads it back."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise MessageError(f"job plan: not JSON ({exc})") from None
    kinds: dict[str, type[TreePlan | CoordinatedPlan]] = {
        TreePlan.mode: TreePlan,
        CoordinatedPlan.mode: CoordinatedPlan,
    }
    mode = raw.get("mode") if isinstance(raw, dict) else None
    if mode not in kinds:
        raise MessageError(f"job plan: unknown mode {mode!r}")
    return kinds[mode].from_dict(raw)


def expect_plan(data: bytes | str, kind: type[PlanT], reader: str) -> PlanT:
    """The job plan in ``data``, which ``reader`` (a service, with its trigger) can serve only in
    ``kind``'s mode."""
    job_plan = plan_from_json(data)
    if not isinstance(job_plan, kind):
        raise MessageError(f"{reader} got a {job_plan.mode} plan")
    return job_plan
