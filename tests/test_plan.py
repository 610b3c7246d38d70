"""Reduction plans: validation of user input, and the shape of the trees and batches."""

from __future__ import annotations

import itertools

import pytest

from distrdf_oscar import CoordinatedReduction, PlanError, TreeReduction
from distrdf_oscar.plan import auto_batches, resolve, tree_groups, tree_parent


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
    assert len(batches) <= max(1, int(n ** 0.5) + 2)


@pytest.mark.parametrize(("n", "fan_in"), [(1, 2), (2, 2), (3, 2), (7, 2), (7, 4), (16, 4), (17, 4), (100, 3)])
def test_tree_merges_every_range_exactly_once(n, fan_in):
    groups = tree_groups(n, fan_in)
    plan = {"npartitions": n, "fan_in": fan_in}
    # Walk up from every leaf: each reaches the root, and the root covers everything.
    for leaf in range(n):
        node = (leaf, leaf + 1)
        while (group := tree_parent(plan, node)) is not None:
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
    assert resolve(None) == TreeReduction(fan_in=4)
