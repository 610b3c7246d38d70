"""Soak: 50 consecutive jobs with random faults on one cluster, every result exact, nothing leaked.

Run by default (CI runs it); deselect with ``-m "not soak"``. The faults are
drawn from a seeded generator, so a failure can be replayed.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

import pytest

import ROOT
import distrdf_oscar as dro
from distrdf_oscar.job import find_jobs
from distrdf_oscar.platform.local import Fault
from test_faults import assert_exact, book, finish_faults, trigger, wait_idle

JOBS = 50
SEED = 20261124
REDUCTIONS = [dro.TreeReduction(fan_in=2), dro.TreeReduction(fan_in=4), dro.CoordinatedReduction()]


def random_faults(rng: random.Random, npartitions: int) -> list[Fault]:
    target = trigger(rng.randrange(npartitions))
    return rng.choice([
        [],
        [Fault.drop_trigger("mapper", key=target)],
        [Fault.duplicate_trigger("mapper", key=target), Fault.duplicate_trigger(rng.choice(["reducer", "batch"]))],
        [Fault.kill("mapper", rng.choice(["before-write", "after-write"]), key=target)],
        [Fault.kill(rng.choice(["reducer", "batch", "coordinator"]), rng.choice(["before-write", "after-write"]))],
        [Fault.delay("mapper", seconds=rng.uniform(1.0, 4.0), key=target)],
        [Fault.storage_outage(seconds=rng.uniform(0.5, 2.0), mode=rng.choice(["503", "refuse"]), after=0.0)],
    ])


def process_tree(pid: int) -> set[int]:
    """The pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        tree.add(current)
        todo.extend(children.get(current, []))
    return tree


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def our_tempdirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith(("dro-", "distrdf-oscar-"))}


@pytest.mark.soak
def test_fifty_jobs_with_random_faults(warm_cluster, dimuon_files):
    reference = [r.GetValue() for r in book(ROOT.RDataFrame("Events", dimuon_files))]
    rng = random.Random(SEED)
    platform = warm_cluster.platform
    executors = [warm_cluster.executor(reduction=r, progress=False, retry_after=3.0, retry_factor=1.5)
                 for r in REDUCTIONS]
    storage = executors[0].storage

    def census() -> tuple[int, int, int, set[str]]:
        wait_idle(warm_cluster)
        return (len(process_tree(platform.pid)), open_fds(platform.pid), open_fds(os.getpid()), our_tempdirs())

    # A first job warms every path (connection pools, caches), so the census compares like with like.
    ROOT.RDataFrame("Events", dimuon_files, executor=executors[0], npartitions=3).Count().GetValue()
    before = census()
    fired = 0
    for _ in range(JOBS):
        npartitions = rng.choice([2, 3, 4])
        executor = rng.choice(executors)
        faults = random_faults(rng, npartitions)
        platform.inject(*faults)
        since = time.monotonic()
        try:
            df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=npartitions)
            result = [r.GetValue() for r in book(df)]
        finally:
            fired += sum(rule.fired for rule in finish_faults(warm_cluster, faults, since))
        assert_exact(result, reference)
    after = census()
    assert fired >= JOBS // 2, f"only {fired} faults fired in {JOBS} jobs"
    assert find_jobs(storage) == {}, "job objects left in the bucket"
    assert after[0] == before[0], f"processes: {before[0]} before, {after[0]} after"
    assert after[1] <= before[1], f"platform file descriptors: {before[1]} before, {after[1]} after"
    assert after[2] <= before[2], f"client file descriptors: {before[2]} before, {after[2]} after"
    assert after[3] == before[3], f"temporary directories left: {after[3] - before[3]}"
    assert os.listdir(os.path.join(platform.tmpdir, "jobs")) == [], "invocation directories left"
