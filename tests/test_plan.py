"""Reduction plans: validation of user input, and the shape of the trees and batches."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from distrdf_oscar import DEFAULT_REDUCTION, CoordinatedReduction, PlanError, TreeReduction
from distrdf_oscar.client.reductions import AutoReduction, resolve
from distrdf_oscar.client.simulate import EMBEDDED_COLD, choose_ranges_per_call
from distrdf_oscar.protocol import layout
from distrdf_oscar.protocol.messages import MessageError
from distrdf_oscar.protocol.plan import auto_batches, plan_from_json, tree_groups


@pytest.mark.parametrize("fan_in", [0, 1, -3, 2.5, "2", True])
def test_fan_in_below_two_or_not_an_integer_is_rejected(fan_in):
    with pytest.raises(PlanError, match="fan_in must be an integer >= 2"):
        TreeReduction(fan_in=fan_in)


@pytest.mark.parametrize("batches", [[0], [-1, 3], [1, 5], [2, "3"], "63", 6])
def test_malformed_coordinated_plans_are_rejected(batches):
    with pytest.raises(PlanError):
        CoordinatedReduction(batches)


@pytest.mark.parametrize(("batches", "n"), [([6, 3], 7), ([6, 3], 9), ([], 2), ([8], 7), ([4, 4], 8)])
def test_plan_that_does_not_consume_every_partial_once_is_rejected(batches, n):
    with pytest.raises(PlanError, match=f"does not merge {n} partials exactly once"):
        CoordinatedReduction(batches).plan_for(n)


@pytest.mark.parametrize(("batches", "n"), [([6, 3], 8), ([], 1), ([2], 2), ([4, 4, 3], 9), ([16], 16)])
def test_valid_coordinated_plans(batches, n):
    assert CoordinatedReduction(batches).plan_for(n) == batches


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 16, 80, 1000])
def test_auto_plan_is_valid_and_two_levels(n):
    batches = auto_batches(n)
    assert CoordinatedReduction(batches).plan_for(n) == batches
    assert all(b >= 2 for b in batches)
    assert len(batches) <= max(1, int(n**0.5) + 2)


@pytest.mark.parametrize(
    ("n", "fan_in"), [(1, 2), (2, 2), (3, 2), (7, 2), (7, 4), (16, 4), (17, 4), (100, 3)]
)
def test_tree_merges_every_range_exactly_once(n, fan_in):
    groups = tree_groups(n, fan_in)
    plan = TreeReduction(fan_in).describe(n, "j20261124120000-0123abcd")
    assert plan.groups() == groups
    # Walk up from every leaf: each reaches the root, and the root covers everything.
    for leaf in range(n):
        node = (leaf, leaf + 1)
        while (group := plan.parent(node)) is not None:
            assert node in group
            node = (group[0][0], group[-1][1])
        assert node == (0, n)
    for group in groups:
        assert 2 <= len(group) <= fan_in
        assert all(a[1] == b[0] for a, b in itertools.pairwise(group)), "groups are contiguous"
    assert len(groups) == 0 if n == 1 else groups[-1][0][0] == 0 and groups[-1][-1][1] == n


def test_unknown_reduction_is_rejected():
    with pytest.raises(PlanError, match="unknown reduction"):
        resolve("binary-tree")
    assert resolve(None) == DEFAULT_REDUCTION


def test_auto_resolves_and_chooses_a_concrete_plan_that_fits():
    assert resolve("auto") == AutoReduction()
    auto = AutoReduction(costs=EMBEDDED_COLD)
    assert resolve(auto) is auto
    with pytest.raises(PlanError, match="at least one partition"):
        auto.check(0)
    choice = auto.choose(100, concurrency=4)
    assert isinstance(choice.reduction, (TreeReduction, CoordinatedReduction))
    job_plan = choice.reduction.describe(100, JOB_ID, ranges_per_call=choice.ranges_per_call)
    # The plan's calls cover every range once, in order.
    assert [lo for lo, _ in job_plan.tasks] == list(range(0, 100, choice.ranges_per_call))
    assert job_plan.tasks[-1][1] == 100
    # A user's ranges per call stands; an explicit coordinated plan still means one range per call.
    assert auto.choose(100, concurrency=4, ranges_per_call=5).ranges_per_call == 5
    assert choose_ranges_per_call(8, 2, CoordinatedReduction([6, 3])) == 1


JOB_ID = "j20261124120000-0123abcd"


@pytest.mark.parametrize(
    "reduction", [TreeReduction(fan_in=3), CoordinatedReduction([4, 3]), CoordinatedReduction()]
)
def test_job_plans_travel_as_json_unchanged(reduction):
    plan = reduction.describe(6, JOB_ID, coordinator_timeout=120.0)
    assert plan_from_json(plan.to_json()) == plan
    assert json.loads(plan.to_json())["mode"] == plan.mode


def test_mapper_outputs_and_steps_follow_the_mode():
    keys = layout.JobKeys(JOB_ID)
    # Inline (the default): nodes in partials/, where no webhook starts a reducer; with reducer
    # functions, in tree-partials/, whose every object triggers one.
    tree = TreeReduction(fan_in=2).describe(4, JOB_ID)
    assert [tree.mapper_output((r, r + 1)) for r in range(4)] == [keys.partial(r, r + 1) for r in range(4)]
    functions = TreeReduction(fan_in=2, inline=False).describe(4, JOB_ID)
    assert [functions.mapper_output((r, r + 1)) for r in range(4)] == [
        keys.tree_partial(r, r + 1) for r in range(4)
    ]
    assert tree.steps() == functions.steps() == 3
    assert TreeReduction(fan_in=2).describe(1, JOB_ID).mapper_output((0, 1)) == keys.result
    coordinated = CoordinatedReduction([3, 2]).describe(4, JOB_ID)
    assert coordinated.mapper_output((2, 3)) == keys.partial(2, 3)
    assert coordinated.steps() == 2
    # A single partial still passes through one batch reducer, which writes the result.
    single = CoordinatedReduction().describe(1, JOB_ID)
    assert single.batches == ()
    assert single.sizes == [1]
    assert single.steps() == 1
    assert single.batch_output(0) == keys.result


def test_calls_of_several_ranges_make_the_leaves_and_the_items():
    keys = layout.JobKeys(JOB_ID)
    tree = TreeReduction(fan_in=2).describe(7, JOB_ID, ranges_per_call=3)
    assert tree.tasks == [(0, 3), (3, 6), (6, 7)]
    assert tree.groups() == [[(0, 3), (3, 6)], [(0, 6), (6, 7)]]
    assert tree.mapper_output((3, 6)) == keys.partial(3, 6)
    # A plan counts the calls' partials: 3 calls make 3 items, and [6, 3] is refused naming 3.
    coordinated = CoordinatedReduction([2, 2]).describe(7, JOB_ID, ranges_per_call=3)
    assert coordinated.items() == (
        keys.partial(0, 3),
        keys.partial(3, 6),
        keys.partial(6, 7),
        keys.batch_result(0),
    )
    with pytest.raises(PlanError, match=r"does not merge 3 partials exactly once"):
        CoordinatedReduction([6, 3]).describe(8, JOB_ID, ranges_per_call=3)


@pytest.mark.parametrize(
    ("npartitions", "concurrency", "reduction", "requested", "pool", "expected"),
    [
        (8, 2, TreeReduction(4), None, False, 4),  # file-triggered: one call per slot
        (8, 2, TreeReduction(4), None, True, 1),  # a warm pool: four calls per worker already
        (1000, 2, TreeReduction(4), None, True, 125),  # 8 calls: four per worker
        (1000, 80, CoordinatedReduction(), None, False, 13),
        (8, 2, CoordinatedReduction([6, 3]), None, False, 1),  # an explicit plan counts ranges
        (1000, 2, TreeReduction(4), 10, True, 10),  # the user's setting wins
    ],
)
def test_ranges_per_call_default_amortises_calls(
    npartitions, concurrency, reduction, requested, pool, expected
):
    assert choose_ranges_per_call(npartitions, concurrency, reduction, requested, pool) == expected


def test_ranges_per_call_refuses_nonsense():
    for bad in (0, -1, True, 2.5):
        with pytest.raises(PlanError, match="ranges_per_call must be an integer of at least 1"):
            choose_ranges_per_call(8, 2, TreeReduction(4), bad)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b'{"mode": "spiral", "job": "j"}', "unknown mode 'spiral'"),
        (b'{"mode": "tree", "job": "j", "npartitions": 4}', "TreePlan lacks the field 'fan_in'"),
        (
            b'{"mode": "tree", "job": "j", "npartitions": "4", "fan_in": 2}',
            "TreePlan.npartitions must be int",
        ),
        (
            b'{"mode": "coordinated", "job": "j", "npartitions": 4, "batches": [3, true]}',
            "CoordinatedPlan.batches must be int",
        ),
    ],
)
def test_malformed_plans_are_refused_naming_the_field(body, message):
    with pytest.raises(MessageError, match=re.escape(message)):
        plan_from_json(body)
