"""What users may pass as ``reduction=``: a fixed plan (``protocol/plan.py``) or ``"auto"``, which
the simulator resolves per job on the client (the functions never import it)."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.plan import CoordinatedReduction, JobPlan, PlanError, TreeReduction, check_npartitions
from . import simulate


@dataclass(frozen=True)
class AutoReduction:
    """Chooses, for each job, a tree fan-in or a coordinated plan and the ranges per mapper call
    that the simulator predicts fastest on this platform (``simulate.choose``; docs/simulator.md).

    The platform's costs: ``costs`` if declared (a ``simulate.PlatformCosts``, e.g. a preset);
    else, with ``measured``, calibrated from the newest job records of the job's mode (warm pool
    or file-triggered) in ``timeline.records_dir()`` when there are enough; else the mode's preset.
    ``workload`` declares the job's serial work (else the records' median, or a default)."""

    costs: simulate.PlatformCosts | None = None
    workload: simulate.Workload | None = None
    measured: bool = True

    def check(self, npartitions: int, ranges_per_call: int = 1) -> None:
        check_npartitions(npartitions)

    def choose(
        self, npartitions: int, concurrency: int, pool: bool = False, ranges_per_call: int | None = None
    ) -> simulate.Choice:
        """The concrete reduction (and ranges per call, unless the user set them) for a job of
        ``npartitions`` on ``concurrency`` function slots (pool workers for a pool's job)."""
        check_npartitions(npartitions)
        costs, workload, basis = simulate.job_costs(
            pool, max(1, concurrency), self.costs, self.workload, self.measured
        )
        return simulate.choose(npartitions, costs, workload, ranges_per_call=ranges_per_call, basis=basis)


ReductionChoice = TreeReduction | CoordinatedReduction | AutoReduction  # what users may pass
# The simulator's choice per job: never slower than the fixed plans in the benchmarks, and far
# faster at scale (docs/benchmarks.md, docs/simulator.md).
DEFAULT_REDUCTION = AutoReduction()


@dataclass(frozen=True)
class Strategy:
    """How one job runs, decided once before anything is written: the concrete reduction, the
    ranges per mapper call, whether its work goes to the warm pool, and what ``"auto"`` weighed
    (``choice``, None for a fixed reduction). A :class:`~distrdf_oscar.client.job.Job` takes
    nothing else about its shape."""

    reduction: TreeReduction | CoordinatedReduction
    ranges_per_call: int
    pool: bool
    choice: simulate.Choice | None = None

    def describe(self, npartitions: int, job: str, coordinator_timeout: float) -> JobPlan:
        """The job plan the functions read."""
        return self.reduction.describe(
            npartitions, job, coordinator_timeout, ranges_per_call=self.ranges_per_call, pool=self.pool
        )


def strategy(
    requested: ReductionChoice, npartitions: int, concurrency: int, ranges_per_call: int | None, pool: bool
) -> Strategy:
    """The job's :class:`Strategy`: ``requested`` as the user gave it (resolved), on ``concurrency``
    slots (pool workers for a pool's job), ``ranges_per_call`` if the user set it. Raises
    PlanError, before anything is written, if the reduction cannot merge the job's partials."""
    if isinstance(requested, AutoReduction):
        choice = requested.choose(npartitions, concurrency, pool, ranges_per_call)
        chosen = Strategy(choice.reduction, choice.ranges_per_call, pool, choice)
    else:
        chosen = Strategy(
            requested,
            simulate.choose_ranges_per_call(npartitions, concurrency, requested, ranges_per_call, pool),
            pool,
        )
    chosen.reduction.check(npartitions, chosen.ranges_per_call)
    return chosen


def resolve(reduction: ReductionChoice | str | None) -> ReductionChoice:
    """The user's reduction: None is :data:`DEFAULT_REDUCTION`, ``"auto"`` an :class:`AutoReduction`."""
    if reduction is None:
        return DEFAULT_REDUCTION
    if reduction == "auto":
        return AutoReduction()
    if not isinstance(reduction, (TreeReduction, CoordinatedReduction, AutoReduction)):
        raise PlanError(
            f"unknown reduction {reduction!r}: use distrdf_oscar.TreeReduction(fan_in=k), "
            'distrdf_oscar.CoordinatedReduction([...]) or "auto"'
        )
    return reduction
