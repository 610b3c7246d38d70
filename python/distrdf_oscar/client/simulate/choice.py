"""What ``reduction="auto"`` runs: the ranges per mapper call and the reduction plan the model
predicts fastest for a job (:func:`choose`)."""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...protocol import plan
from .costs import PlatformCosts, Workload
from .model import Reduction, simulate

# Mapper calls per function slot when the user does not say. A file-triggered call pays a pod,
# the supervisor, the imports and the JIT (seconds on OSCAR): one call per slot pays it once. A warm
# pool's call costs milliseconds: four per slot balance the load (a slot idles at most about a
# quarter of its work).
CALLS_PER_SLOT = 1
CALLS_PER_POOL_WORKER = 4


def choose_ranges_per_call(
    npartitions: int, concurrency: int, reduction: Reduction, requested: int | None = None, pool: bool = False
) -> int:
    """How many consecutive entry ranges one mapper call processes.

    ``requested`` (the user's setting) wins; otherwise ``ceil(N / (calls per slot x
    concurrency))`` (:data:`CALLS_PER_SLOT`, or :data:`CALLS_PER_POOL_WORKER` for a warm
    pool's job), except with an explicit coordinated plan, whose batch sizes count one partial
    per range."""
    if requested is not None:
        return plan.check_ranges_per_call(requested)
    if isinstance(reduction, plan.CoordinatedReduction) and reduction.batches is not None:
        return 1
    per_slot = CALLS_PER_POOL_WORKER if pool else CALLS_PER_SLOT
    return max(1, math.ceil(npartitions / (per_slot * max(1, concurrency))))


# -- choosing a reduction: reduction="auto" ---------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What ``reduction="auto"`` picked for a job, and why."""

    reduction: Reduction
    ranges_per_call: int
    predicted: float  # seconds from submission to the result, by the model
    basis: str  # whose costs: declared, measured from job records, or a preset
    evaluated: int  # candidates simulated (a cached one counts too)

    def describe(self) -> str:
        return (
            f"{self.reduction!r}, {self.ranges_per_call} range(s) per call: {self.predicted:.1f} s predicted "
            f"({self.basis})"
        )


# With no records and no declared workload, auto assumes this much serial work per slot: the
# choice between plans depends on it only through how long mappers run next to the fixed costs.
DEFAULT_WORK_PER_SLOT = 30.0


SCORE_SEEDS = 3  # draws per candidate when the model is random


def _ladder(limit: int) -> list[int]:
    """2, 4, 8, ... below ``limit``: the coarse grid of fan-ins and batch sizes."""
    out, size = [], 2
    while size < limit:
        out.append(size)
        size *= 2
    return out


def two_level_plans(calls: int) -> list[list[int]]:
    """Prototype-style hand plans, as ``[6, 3]`` is for 8 partials: a first batch of a share of
    the partials (1/2, 2/3, 3/4 or 7/8), then one of the rest with its result."""
    plans = []
    for share in (1 / 2, 2 / 3, 3 / 4, 7 / 8):
        first = max(2, round(share * calls))
        if calls - first + 1 >= 2 and [first, calls - first + 1] not in plans:
            plans.append([first, calls - first + 1])
    return plans


def _key(reduction: Reduction) -> tuple[Any, ...]:
    if isinstance(reduction, plan.TreeReduction):
        return ("tree", reduction.fan_in)
    return ("coordinated", tuple(reduction.batches or ()))


def _reduction(key: tuple[Any, ...]) -> Reduction:
    return plan.TreeReduction(key[1]) if key[0] == "tree" else plan.CoordinatedReduction(list(key[1]))


@functools.lru_cache(maxsize=16384)
def _score(costs: PlatformCosts, workload: Workload, calls: int, key: tuple[Any, ...]) -> float:
    # Plans depend only on the number of calls (tree groups and batches count the calls' partials),
    # so a job of ``calls`` one-range calls carrying the same work scores them. Uneven calls or
    # latencies: the mean of a few draws, so that no plan wins by the luck of one.
    seeds = range(SCORE_SEEDS if workload.imbalance or costs.invoke_spread else 1)
    return statistics.fmean(
        simulate(costs, calls, _reduction(key), workload, seed=seed).time_to_result for seed in seeds
    )


def _best(
    costs: PlatformCosts,
    workload: Workload,
    calls: int,
    keys: Iterable[tuple[Any, ...]],
    tried: dict[tuple[int, tuple[Any, ...]], float],
) -> tuple[Any, ...]:
    """The fastest of ``keys`` (the first listed wins a tie); every score lands in ``tried``."""
    best: tuple[Any, ...] | None = None
    for key in keys:
        if (calls, key) not in tried:
            tried[(calls, key)] = _score(costs, workload, calls, key)
        if best is None or tried[(calls, key)] < tried[(calls, best)] - 1e-9:
            best = key
    assert best is not None
    return best


def _refined(best: int, calls: int) -> list[int]:
    """The sizes between ``best``'s neighbours on the coarse grid (best * 3/4, best * 3/2)."""
    return sorted({s for s in (best * 3 // 4, best * 3 // 2) if 2 <= s < calls and s not in _ladder(calls)})


def _reductions(
    costs: PlatformCosts, workload: Workload, calls: int, tried: dict[tuple[int, tuple[Any, ...]], float]
) -> tuple[Any, ...]:
    """The best reduction for ``calls`` mapper calls: trees on a coarse grid of fan-ins refined
    around the best, coordinated plans of equal batches likewise, sqrt(N) batches and the two-level
    hand plans; O(log N) simulations."""
    if calls == 1:  # the only mapper writes the result: nothing to merge
        return _best(costs, workload, calls, [("tree", 2)], tried)
    whole = max(2, calls)  # a single group, a single batch
    tree = _best(
        costs,
        workload,
        calls,
        [("tree", 4)] + [("tree", k) for k in _ladder(calls) if k != 4] + [("tree", whole)],
        tried,
    )
    tree = _best(costs, workload, calls, [tree] + [("tree", k) for k in _refined(tree[1], calls)], tried)
    sizes = [*_ladder(calls), whole]
    coordinated = _best(
        costs,
        workload,
        calls,
        [("coordinated", tuple(plan.equal_batches(calls, b))) for b in sizes]
        + [("coordinated", tuple(plan.auto_batches(calls)))]
        + [("coordinated", tuple(p)) for p in two_level_plans(calls)],
        tried,
    )
    size = coordinated[1][0]
    coordinated = _best(
        costs,
        workload,
        calls,
        [coordinated] + [("coordinated", tuple(plan.equal_batches(calls, b))) for b in _refined(size, calls)],
        tried,
    )
    return _best(costs, workload, calls, [tree, coordinated], tried)


def choose(
    npartitions: int,
    costs: PlatformCosts,
    workload: Workload | None = None,
    *,
    ranges_per_call: int | None = None,
    basis: str = "declared costs",
) -> Choice:
    """The fastest reduction, and ranges per call unless given, for a job of ``npartitions`` on
    ``costs`` (its ``slots`` and ``pool`` included), by simulating a bounded set of candidates:

    - ranges per call: ``choose_ranges_per_call`` (one call per slot, four per pool
      worker), a half, a quarter ... a 32nd as many calls, and one per slot;
    - for the best of those (scored with ``TreeReduction(4)`` and sqrt(N) batches), tree fan-ins
      and equal coordinated batches on a coarse grid refined around the best, sqrt(N) batches and the
      two-level hand plans.

    Each plan is valid for the job (``check`` passes). Scores are cached per (costs, workload,
    calls, plan): repeated jobs choose in microseconds."""
    if npartitions < 1:
        raise plan.PlanError(f"a job needs at least one partition, got {npartitions}")
    workload = workload or Workload(work=DEFAULT_WORK_PER_SLOT * costs.slots)
    tried: dict[tuple[int, tuple[Any, ...]], float] = {}
    if ranges_per_call is not None:
        per_call = [plan.check_ranges_per_call(ranges_per_call)]
    else:
        default = choose_ranges_per_call(npartitions, costs.slots, plan.TreeReduction(), None, costs.pool)
        calls = math.ceil(npartitions / default)
        targets = {calls, costs.slots, *(calls // 2**k for k in range(1, 6))}
        per_call = sorted({math.ceil(npartitions / t) for t in targets if t >= 1}, reverse=True)
    # One range per call at most: ceil(N / t) for t > N is 1, the same calls as t = N.
    if len(per_call) > 1:

        def proxy(rpc: int) -> float:
            calls = math.ceil(npartitions / rpc)
            key = _best(
                costs, workload, calls, [("tree", 4), ("coordinated", tuple(plan.auto_batches(calls)))], tried
            )
            return tried[(calls, key)]

        per_call = sorted(per_call, key=proxy)[:1]
    options = []
    for rpc in per_call:
        calls = math.ceil(npartitions / rpc)
        key = _reductions(costs, workload, calls, tried)
        options.append((tried[(calls, key)], rpc, key))
    predicted, rpc, key = min(options, key=lambda o: o[0])
    reduction = _reduction(key)
    reduction.check(npartitions, rpc)
    return Choice(reduction, rpc, predicted, basis, len(tried))
