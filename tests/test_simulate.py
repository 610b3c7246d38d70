"""The simulator (distrdf_oscar.client.simulate): hand-computed schedules, the prototype's orderings, the
calibration from job records, and reduction="auto"'s choice. Pure Python: no platform runs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from distrdf_oscar.client import reductions, simulate
from distrdf_oscar.client.simulate import PlatformCosts, Workload
from distrdf_oscar.protocol import plan
from distrdf_oscar.protocol.plan import CoordinatedReduction, TreeReduction

# Round figures, so that every time below can be worked out by hand.
HAND = PlatformCosts(
    name="hand",
    slots=2,
    launch_stagger=1.0,
    stagger_scope="service",
    invoke_latency=0.5,
    pod_start=2.0,
    mapper_start=3.0,
    reducer_start=1.0,
    jit=4.0,
    put=0.5,
    get=0.25,
    merge_per_partial=1.0,
    exit=0.25,
    submit=1.0,
    client_poll=2.0,
    coordinator_poll=1.0,
    queue_poll=1.0,
)


def phases(result, role, task=None):
    return [c.phases for c in result.calls if c.role == role and (task is None or c.task == task)]


def test_tree_of_two_cold_mappers_and_reducer_functions_matches_the_hand_computed_schedule():
    result = simulate.simulate(HAND, 2, TreeReduction(2, inline=False), Workload(work=20.0, partial_bytes=0))
    # Triggers at 1.5 and 2.0; events reach the mapper service 0.5 later; its launches are 1 s apart.
    assert phases(result, "mapper", "000000_000001") == [
        {
            "invoked": 1.5,
            "started": 4.0,
            "ready": 7.0,
            "jitted": 11.0,
            "computed": 21.0,
            "written": 21.5,
            "end": 21.75,
        }
    ]
    assert phases(result, "mapper", "000001_000002") == [
        {
            "invoked": 2.0,
            "started": 5.0,
            "ready": 8.0,
            "jitted": 12.0,
            "computed": 22.0,
            "written": 22.5,
            "end": 22.75,
        }
    ]
    # Both partials trigger a reducer. The first one's looks up its group at 25.5 (two HEADs after
    # it is ready), finds both members, claims (a PUT) and merges, downloading the other member (its
    # own is on disk): it writes the result. The second one's finds the group claimed and exits.
    reducers = sorted(result.calls, key=lambda c: c.phases["invoked"])[2:]
    assert [c.role for c in reducers] == ["reducer", "reducer"]
    assert reducers[0].merged
    assert reducers[0].task == "000000_000002"
    assert reducers[0].phases == {
        "invoked": 21.5,
        "started": 24.0,
        "ready": 25.0,
        "inputs": 26.25,
        "computed": 28.25,
        "written": 28.75,
        "end": 29.0,
    }
    assert not reducers[1].merged
    assert reducers[1].phases == {"invoked": 22.5, "started": 25.0, "ready": 26.0, "end": 26.75}
    # The client polls every 2 s from its last trigger (2.0): it sees the result at 30.
    assert (result.last_mapper, result.last_mapper_seen, result.result_written, result.time_to_result) == (
        22.5,
        24.0,
        28.75,
        30.0,
    )
    assert result.tail == 7.5


def test_inline_tree_of_two_cold_mappers_matches_the_hand_computed_schedule():
    result = simulate.simulate(HAND, 2, TreeReduction(2), Workload(work=20.0, partial_bytes=0))
    # As above up to the partials (21.5, 22.5). Mapper 0 then looks its group up (22.0), finds it
    # incomplete and exits; mapper 1 finds it complete at 23.0, claims it, downloads partial 0,
    # merges and writes the result; no reducer function runs.
    assert phases(result, "mapper") == [
        {
            "invoked": 1.5,
            "started": 4.0,
            "ready": 7.0,
            "jitted": 11.0,
            "computed": 21.0,
            "written": 21.5,
            "end": 22.25,
        },
        {
            "invoked": 2.0,
            "started": 5.0,
            "ready": 8.0,
            "jitted": 12.0,
            "computed": 22.0,
            "written": 22.5,
            "end": 26.5,
        },
    ]
    assert phases(result, "reducer") == [
        {"started": 23.0, "ready": 23.0, "inputs": 23.75, "computed": 25.75, "written": 26.25, "end": 26.25}
    ]
    assert [c.slot for c in result.calls] == [0, 1, 1]
    assert (result.last_mapper_seen, result.time_to_result, result.tail) == (24.0, 28.0, 5.5)


def test_coordinated_plan_on_one_slot_matches_the_hand_computed_schedule():
    costs = dataclasses.replace(HAND, slots=1)
    result = simulate.simulate(costs, 3, CoordinatedReduction([2, 2]), Workload(work=30.0, partial_bytes=0))
    # One slot, first come first served: the mappers run one after the other; batch 0 queues
    # behind the third mapper, which was launched long before it.
    mappers = phases(result, "mapper")
    assert [(p["invoked"], p["started"], p["written"]) for p in mappers] == [
        (2.0, 4.5, 22.0),
        (2.5, 24.25, 41.75),
        (3.0, 44.0, 61.5),
    ]
    # The coordinator (no slot) lists at 5.25 and every 1.5 s after: it sees partials 0 and 1 at
    # 42.75 and writes batch 0's file; partial 2 alone (62.75) is not enough for batch 1, which
    # takes it with batch 0's result at 68.75. The last batch the coordinator merges itself: a
    # claim (0.5), no pod, no start-up, then two downloads, two merges and the upload.
    (coordinator,) = phases(result, "coordinator")
    assert coordinator == {"invoked": 1.5, "started": 4.0, "ready": 5.0}
    assert phases(result, "batch", "batch_0") == [
        {
            "invoked": 43.25,
            "started": 63.75,
            "ready": 64.75,
            "inputs": 65.5,
            "computed": 67.5,
            "written": 68.0,
            "end": 68.25,
        }
    ]
    assert phases(result, "batch", "batch_1") == [
        {
            "invoked": 69.25,
            "started": 69.75,
            "ready": 69.75,
            "inputs": 70.5,
            "computed": 72.5,
            "written": 73.0,
            "end": 73.25,
        }
    ]
    assert (result.last_mapper, result.last_mapper_seen, result.time_to_result) == (61.5, 63.0, 73.0)


def test_warm_pool_worker_merges_the_tree_inline_as_the_hand_computed_schedule():
    costs = dataclasses.replace(HAND, slots=1, pool=True)
    result = simulate.simulate(costs, 2, TreeReduction(2), Workload(work=20.0, partial_bytes=0))
    # The worker's first listing (0.5) finds nothing; the first offer (1.5) wakes it at its next
    # look, 1.75. It reads and claims call 0 (a GET, two PUTs), JITs it, and after writing its
    # partial finds the group incomplete; it lists again, takes call 1 (no JIT now), and being
    # the writer of the group's last member merges the group into the result.
    assert phases(result, "mapper") == [
        {
            "invoked": 3.25,
            "started": 3.25,
            "ready": 3.5,
            "jitted": 7.5,
            "computed": 17.5,
            "written": 18.0,
            "end": 18.0,
        },
        {
            "invoked": 20.0,
            "started": 20.0,
            "ready": 20.25,
            "jitted": 20.25,
            "computed": 30.25,
            "written": 30.75,
            "end": 30.75,
        },
    ]
    assert phases(result, "reducer") == [
        {"started": 31.25, "ready": 31.25, "inputs": 32.0, "computed": 34.0, "written": 34.5, "end": 34.5}
    ]
    assert {c.slot for c in result.calls} == {0}
    assert (result.last_mapper_seen, result.time_to_result) == (32.0, 36.0)


def test_prototype_coordinated_beats_the_binary_tree_at_80_mappers_with_its_tails():
    # The prototype's binary tree: a reducer function per partial.
    tree = simulate.simulate(
        simulate.PROTOTYPE, 80, TreeReduction(2, inline=False), simulate.PROTOTYPE_WORKLOAD
    )
    best = min(
        (
            simulate.simulate(simulate.PROTOTYPE, 80, CoordinatedReduction(p), simulate.PROTOTYPE_WORKLOAD)
            for p in simulate.two_level_plans(80)
        ),
        key=lambda r: r.time_to_result,
    )
    assert best.time_to_result < tree.time_to_result
    # The prototype: 200.8 s vs 238.9 s; tails 8-11 s vs 34-48 s.
    assert 8 <= best.tail <= 11
    assert 34 <= tree.tail <= 48
    assert best.time_to_result == pytest.approx(200.8, rel=0.05)
    assert tree.time_to_result == pytest.approx(238.9, rel=0.1)


def test_same_seed_same_schedule_and_spread_moves_it():
    costs = dataclasses.replace(simulate.PROTOTYPE, invoke_spread=1.0)
    work = Workload(work=900.0, imbalance=0.2)
    first, again = (simulate.simulate(costs, 40, TreeReduction(4), work, seed=7) for _ in range(2))
    assert first == again
    assert simulate.simulate(costs, 40, TreeReduction(4), work, seed=8).time_to_result != first.time_to_result


def test_every_partial_is_merged_exactly_once():
    for costs in (simulate.PROTOTYPE, simulate.OSCAR_POOL):
        for reduction in (TreeReduction(3), CoordinatedReduction(plan.equal_batches(23, 5))):
            result = simulate.simulate(costs, 23, reduction, Workload(work=100.0))
            merges = [c for c in result.calls if c.role in ("reducer", "batch") and c.merged]
            # n partials need merges whose inputs exceed their count by n - 1 in all.
            assert sum(c.inputs for c in merges) - len(merges) == 23 - 1
            assert result.result_written <= result.time_to_result


def test_calibration_recovers_the_costs_of_simulated_records():
    true = dataclasses.replace(simulate.EMBEDDED_POOL, slots=3, jit=1.5, merge_per_partial=0.02)
    workload = Workload(work=48.0, partial_bytes=50_000)
    records = [
        simulate.simulate(true, n, TreeReduction(4), workload, ranges_per_call=r).record(f"j{n}")
        for n, r in ((12, 1), (24, 2), (36, 3))
    ]
    calibration = simulate.calibrate(records)
    assert calibration.jobs == 3
    assert calibration.costs.pool
    assert calibration.costs.slots == 3
    assert calibration.costs.jit == pytest.approx(1.5, rel=0.01)
    # Records without the calls' own JIT phase (older ones): the fit tells it from the work.
    for record in records:
        for call in record.functions:
            call.phases.pop("jitted", None)
    assert simulate.calibrate(records).costs.jit == pytest.approx(1.5, rel=0.01)
    assert calibration.workload.work == pytest.approx(48.0, rel=0.01)
    assert calibration.workload.partial_bytes == 50_000
    assert calibration.costs.merge_per_partial == pytest.approx(0.02, rel=0.01)
    # And the calibrated model predicts the jobs it came from.
    for n, r in ((12, 1), (24, 2)):
        predicted = simulate.simulate(
            calibration.costs, n, TreeReduction(4), calibration.workload, ranges_per_call=r
        ).time_to_result
        assert predicted == pytest.approx(
            simulate.simulate(true, n, TreeReduction(4), workload, ranges_per_call=r).time_to_result, rel=0.02
        )


def test_calibration_refuses_mixed_modes():
    cold = simulate.simulate(simulate.EMBEDDED_COLD, 4, TreeReduction(2)).record("a")
    pool = simulate.simulate(simulate.EMBEDDED_POOL, 4, TreeReduction(2)).record("b")
    with pytest.raises(ValueError, match="separately"):
        simulate.calibrate([cold, pool])


@pytest.mark.parametrize("costs", [simulate.EMBEDDED_COLD, simulate.OSCAR_POOL], ids=lambda c: c.name)
def test_auto_choice_is_a_valid_plan_for_every_size_up_to_5000(costs):
    costs = dataclasses.replace(costs, slots=4)
    for npartitions in range(1, 5001):
        choice = simulate.choose(npartitions, costs)
        choice.reduction.check(npartitions, choice.ranges_per_call)
        job_plan = choice.reduction.describe(
            npartitions, "j20261202120000-0123abcd", ranges_per_call=choice.ranges_per_call, pool=costs.pool
        )
        assert job_plan.tasks[-1][1] == npartitions


def test_auto_respects_the_users_ranges_per_call_and_beats_the_fixed_plans_it_tried():
    costs = dataclasses.replace(simulate.PROTOTYPE, slots=64)
    choice = simulate.choose(640, costs, Workload(work=6400.0), ranges_per_call=10)
    assert choice.ranges_per_call == 10
    for fixed in (TreeReduction(2), TreeReduction(4), CoordinatedReduction(plan.auto_batches(64))):
        fixed_time = simulate.simulate(
            costs, 640, fixed, Workload(work=6400.0), ranges_per_call=10
        ).time_to_result
        assert choice.predicted <= fixed_time + 1e-6


def test_auto_at_1000_prototype_mappers_is_30_percent_faster_than_binary_tree_and_hand_plans():
    costs = dataclasses.replace(simulate.PROTOTYPE, slots=1000)  # a slot per mapper, as the prototype's 80
    work = simulate.PROTOTYPE_WORKLOAD
    choice = simulate.choose(1000, costs, work)
    auto = simulate.simulate(costs, 1000, choice.reduction, work, ranges_per_call=choice.ranges_per_call)
    assert auto.time_to_result == pytest.approx(choice.predicted, rel=0.02)  # (a mean of three draws)
    binary = simulate.simulate(costs, 1000, TreeReduction(2, inline=False), work).time_to_result
    hand = min(
        simulate.simulate(costs, 1000, CoordinatedReduction(p), work).time_to_result
        for p in simulate.two_level_plans(1000)
    )
    assert auto.time_to_result <= 0.7 * binary
    assert auto.time_to_result <= 0.7 * hand


def test_job_costs_measured_from_enough_records_of_the_jobs_mode(tmp_path):
    for i in range(simulate.MIN_RECORDS):
        record = simulate.simulate(
            simulate.EMBEDDED_COLD, 8, TreeReduction(4), Workload(work=20.0), ranges_per_call=4
        ).record(f"j2026120212000{i}-0000000{i}")
        (tmp_path / f"{record.job}.json").write_text(record.to_json())
    costs, workload, basis = simulate.job_costs(pool=False, slots=6, folder=str(tmp_path))
    assert basis == f"measured from {simulate.MIN_RECORDS} job records"
    assert costs.slots == 6
    assert not costs.pool
    # Every call cold and of the same share: the records cannot tell the JIT from the work, but a
    # call of that share is predicted as it ran (JIT 1 s + 10 s of work).
    assert workload is not None
    assert costs.jit + workload.work / 2 == pytest.approx(simulate.EMBEDDED_COLD.jit + 10.0, rel=0.01)
    # No pool records there: the pool preset.
    costs, workload, basis = simulate.job_costs(pool=True, slots=6, folder=str(tmp_path))
    assert basis.startswith("preset 'oscar-pool'")
    assert costs.pool
    assert workload is None
    declared = simulate.EMBEDDED_COLD
    assert (
        simulate.job_costs(False, 3, declared=declared, folder=str(tmp_path))[2]
        == "declared costs 'embedded-cold'"
    )
    # A record no calibration can read (no phases at all) makes the measurement fall back, never fail a job.
    for path in tmp_path.iterdir():
        raw = json.loads(path.read_text())
        raw["functions"] = [dict(f, phases={}) for f in raw["functions"]]
        path.write_text(json.dumps(raw))
    assert simulate.job_costs(pool=False, slots=6, folder=str(tmp_path))[2].startswith("preset 'prototype'")


@pytest.mark.usefixtures("secret_scan")  # conftest.py: the job's objects and logs are searched for secrets
def test_executor_runs_an_auto_job_with_the_plan_it_chose(cold_cluster, dimuon_files):
    """The one test here that runs a job: reduction="auto" on the embedded platform picks a concrete
    plan for the job, runs it, and says what it picked."""
    import ROOT

    costs = dataclasses.replace(simulate.EMBEDDED_COLD, jit=0.5)
    executor = cold_cluster.executor(
        reduction=reductions.AutoReduction(costs=costs, workload=Workload(work=2.0)), progress=False
    )
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=6)
    assert df.Count().GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    choice = executor.last_choice
    assert choice == simulate.choose(
        6, dataclasses.replace(costs, slots=2), Workload(work=2.0), basis="declared costs 'embedded-cold'"
    )
    assert executor.last_job.reduction == choice.reduction
    assert executor.last_job.record.calls == -(-6 // choice.ranges_per_call)
    # The string form and the executor's default resolve to the same kind of choice.
    assert isinstance(
        cold_cluster.executor(reduction="auto", progress=False).reduction, reductions.AutoReduction
    )
