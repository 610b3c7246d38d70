"""The discrete-event model of a job as the protocol runs it: where its time goes, and what a
reduction plan would cost before the job runs.

The model follows the code, not an idealisation of it (``docs/simulator.md`` lists every
assumption):

- the client uploads the payload and plan (``submit``), then writes one trigger per mapper call
  (``ranges_per_call`` ranges each, ``plan.task_intervals``), one ``put`` after the other, then
  polls for the job's objects every ``client_poll`` seconds;
- file-triggered functions: an object written under a service's input path reaches its service
  after ``invoke_latency`` (normally distributed with ``invoke_spread``); the platform launches a
  queue's invocations one at a time, ``launch_stagger`` apart (a queue per service, as MinIO sends
  each webhook target's events in order, or one for the platform); an invocation then waits for a
  free function slot (``slots``, first come first served), its pod starts (``pod_start``) and its
  process gets ready (``mapper_start``/``reducer_start``: interpreter, imports, payload). A
  mapper then JITs its graph (``jit``, every cold process) and runs its ranges (the workload's
  serial seconds over all ranges, times ``compute_scale``), uploads its partial and exits;
- tree reduction (``TreeReduction``), inline (its default): the writer of a node looks up its
  group (``plan.tree_groups``: a lone trailing member is carried up), checks that its members exist
  (a HEAD each) and, if it is the first to see the group complete, claims it, downloads the other
  members, merges them n-way and writes the group's node, and so on up, before it exits. With
  ``inline=False`` every partial but the root triggers a reducer function instead, which does the
  same for one group; every reducer, merging or not, holds a slot while it runs;
- coordinated reduction (``CoordinatedReduction``): the coordinator (no slot: it requests a
  fraction of a CPU) polls the partials every ``coordinator_poll`` seconds and launches batch
  ``i`` with the first ``batches[i]`` unconsumed items in arrival order, mapper partials and
  earlier batch results alike; each batch file triggers a batch reducer, but the last, which the
  coordinator claims and merges itself;
- a warm pool (``pool=True``): ``slots`` long-lived workers list the queue (every ``queue_poll``
  seconds when idle), claim each item in turn (mapper calls first, then batch files), pay no pod
  or start-up, JIT once per job per worker, always merge a tree inline and run a coordinator in a
  thread (``coordinator_load``: the calls beside it slow down).

Everything is deterministic given the seed. ``calibration.py`` derives the costs from job records
(``timeline.JobRecord``), and ``choice.py`` is what ``reduction="auto"`` runs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Any

from ...protocol import layout, plan
from .costs import PlatformCosts, Workload
from .results import _KEYS, SimCall, SimResult

Reduction = plan.TreeReduction | plan.CoordinatedReduction


# -- the model ------------------------------------------------------------------------------------

_RESULT = ("result",)
_Resume = tuple[int, list[tuple[Any, ...]], int]  # a pool worker, its listing, where it is in it


def _node(
    role: str, interval: tuple[int, int], slot: int | None, phases: dict[str, float], **more: Any
) -> SimCall:
    """A call that writes the partial (or tree node) of ``interval``."""
    return SimCall(
        role, layout.interval_stem(*interval), slot, phases, output=_KEYS.partial(*interval), **more
    )


def _batch(index: int, slot: int | None, phases: dict[str, float]) -> SimCall:
    return SimCall("batch", f"batch_{index}", slot, phases, output=_KEYS.batch_result(index))


class _Poller:
    """Something that looks every ``period`` seconds (the client, the coordinator, an idle pool
    worker). While nothing it waits for has changed it sleeps instead of looking, and a change
    wakes it at its next look on the same grid of times: the same schedule, far fewer events."""

    def __init__(self, job: _Job, period: float, look: Callable[..., None], *args: Any) -> None:
        self.job, self.period, self.look, self.args = job, period, look, args
        self.tick: float | None = None  # asleep: when its next look would have been

    def sleep(self, tick: float) -> None:
        self.tick = tick

    def wake(self) -> None:
        if self.tick is not None:
            now, tick = self.job.now, self.tick
            self.tick = None
            self.job.at(
                tick + max(0, math.ceil((now - tick) / self.period - 1e-9)) * self.period,
                self.look,
                *self.args,
            )


class _Job:
    """One simulated job: an event heap and the state the protocol keeps in object storage."""

    def __init__(
        self,
        costs: PlatformCosts,
        workload: Workload,
        npartitions: int,
        reduction: Reduction,
        ranges_per_call: int,
        seed: int,
    ) -> None:
        self.c = costs
        self.rng = random.Random(seed)
        self.heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.now = 0.0
        self.done = False
        self.calls: list[SimCall] = []
        self.written: dict[tuple[Any, ...], float] = {}  # object -> when it appeared
        self.tasks = plan.task_intervals(npartitions, ranges_per_call)
        self.npartitions = npartitions
        self.bytes = workload.partial_bytes
        per_range = workload.work * costs.compute_scale / npartitions
        self.tree = isinstance(reduction, plan.TreeReduction)
        if not self.tree:  # the coordinator runs from before the first call to after the last
            per_range *= 1 + costs.coordinator_load
        spread = random.Random(seed + 1)  # its own stream: the compute does not depend on event order
        self.compute = [
            max(0.05, spread.gauss(1.0, workload.imbalance)) * per_range * (hi - lo)
            if workload.imbalance
            else per_range * (hi - lo)
            for lo, hi in self.tasks
        ]
        if self.tree:
            assert isinstance(reduction, plan.TreeReduction)
            self.groups = plan.tree_groups(npartitions, reduction.fan_in, ranges_per_call)
            # Inline (TreeReduction's default; every pool job): a node's writer merges the group it
            # completes, up the tree. Otherwise each node triggers a reducer function.
            self.inline = reduction.inline or costs.pool
            self.parent = {member: g for g, group in enumerate(self.groups) for member in group}
            self.claimed: set[int] = set()
        else:
            assert isinstance(reduction, plan.CoordinatedReduction)
            batches = reduction.plan_for(len(self.tasks))
            self.sizes = list(batches) or [1]
        # platform: launch queues, slots (first come first served)
        self.launcher_free: dict[str, float] = {}
        self.free_slots = list(range(costs.slots))
        self.waiting: deque[tuple[Callable[..., None], SimCall, tuple[Any, ...]]] = deque()
        self.batch_inputs: dict[int, int] = {}  # batch -> how many items it merges
        self.mappers_written = 0
        self.client = _Poller(self, costs.client_poll, self.client_poll)
        self.coordinator_watch: _Poller | None = None
        self.item_log: list[tuple[Any, ...]] = []  # items written since the coordinator started
        self.last_mapper = math.inf
        self.last_mapper_seen = math.inf
        self.result_written = math.inf
        self.result_seen = math.inf

    # -- engine
    def at(self, time: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self.heap, (time, self.seq, action, args))
        self.seq += 1

    def run(self) -> None:
        heap = self.heap
        while heap and not self.done:
            self.now, _, action, args = heapq.heappop(heap)
            action(*args)

    def transfer(self) -> float:
        return self.c.get + self.bytes * self.c.transfer_per_byte

    def upload(self) -> float:
        return self.c.put + self.bytes * self.c.transfer_per_byte

    # -- objects
    def write(self, key: tuple[Any, ...]) -> None:
        """An object appears now; file-triggered services watching its folder are invoked."""
        self.written[key] = self.now
        kind = key[0]
        if key == _RESULT:
            self.result_written = self.now
            self.client.wake()
        elif kind == "m":
            self.mappers_written += 1
            if self.mappers_written == len(self.tasks):
                self.last_mapper = self.now
                self.client.wake()
        if kind in ("m", "b") and self.coordinator_watch is not None:
            self.item_log.append(key)
            self.coordinator_watch.wake()
        if kind == "batchfile" and key[1] == len(self.sizes) - 1 and self.c.coordinator_merges_last:
            # The coordinator merges the last batch itself, once it has claimed it: no pod, no
            # start-up, no slot, no wait for a pool worker (plan.CoordinatedPlan.merged_by_coordinator).
            call = _batch(key[1], None, {"invoked": self.now, "started": self.now + self.c.put})
            self.calls.append(call)
            self.at(call.phases["started"], self.batch, call, key[1], False)
        elif self.c.pool:
            if kind == "batchfile":  # a pool's coordinator queues its batch files
                self.offer(("batch", key[1]))
        elif self.tree and not self.inline and kind in ("m", "node"):
            self.invoke(
                "reducer",
                self.reducer,
                SimCall("reducer", "", None, {"invoked": self.now}, merged=False),
                key[1],
            )
        elif kind == "batchfile":
            self.invoke("batch", self.batch, _batch(key[1], None, {"invoked": self.now}), key[1])
        elif kind == "plan":
            self.invoke(
                "coordinator",
                self.coordinator,
                SimCall("coordinator", "", None, {"invoked": self.now}),
                slot=False,
            )

    # -- file-triggered invocations
    def invoke(
        self, service: str, body: Callable[..., None], call: SimCall, *args: Any, slot: bool = True
    ) -> None:
        latency = self.c.invoke_latency
        if self.c.invoke_spread:
            latency = max(0.0, self.rng.gauss(latency, self.c.invoke_spread))
        self.at(self.now + latency, self.arrive, service, body, call, args, slot)

    def arrive(
        self, service: str, body: Callable[..., None], call: SimCall, args: tuple[Any, ...], slot: bool
    ) -> None:
        queue = service if self.c.stagger_scope == "service" else "platform"
        launch = max(self.now, self.launcher_free.get(queue, 0.0))
        self.launcher_free[queue] = launch + self.c.launch_stagger
        self.at(launch, self.launched, body, call, args, slot)

    def launched(self, body: Callable[..., None], call: SimCall, args: tuple[Any, ...], slot: bool) -> None:
        self.calls.append(call)
        if not slot:
            self.at(self.now + self.c.pod_start, self.begin, body, call, args, None)
        elif self.free_slots and not self.waiting:
            self.at(self.now + self.c.pod_start, self.begin, body, call, args, heapq.heappop(self.free_slots))
        else:
            self.waiting.append((body, call, args))

    def begin(
        self, body: Callable[..., None], call: SimCall, args: tuple[Any, ...], slot: int | None
    ) -> None:
        call.slot = slot
        call.phases["started"] = self.now
        body(call, *args)

    def release(self, slot: int | None) -> None:
        if slot is None:
            return
        if self.waiting:
            body, call, args = self.waiting.popleft()
            self.at(self.now + self.c.pod_start, self.begin, body, call, args, slot)
        else:
            heapq.heappush(self.free_slots, slot)

    def finish(self, call: SimCall, key: tuple[Any, ...] | None, written: float) -> None:
        """The call's output appears at ``written``; its slot frees ``exit`` later."""
        call.phases["written"] = written
        call.phases["end"] = written + self.c.exit
        if key is not None:
            self.at(written, self.write, key)
        self.at(written + self.c.exit, self.release, call.slot)

    # -- the functions
    def mapper(self, call: SimCall, index: int) -> None:
        p = call.phases
        p["ready"] = self.now + self.c.mapper_start
        p["jitted"] = p["ready"] + self.c.jit
        p["computed"] = p["jitted"] + self.compute[index]
        key = self.mapper_key(index)
        if not (self.tree and self.inline) or key == _RESULT:
            self.finish(call, key, p["computed"] + self.upload())
            return
        # An inline tree's mapper merges what its partial completes before it exits.
        p["written"] = p["computed"] + self.upload()
        self.at(p["written"], self.write, key)
        self.at(p["written"], self.merge_up, call.slot, key[1], True, self.exit_after_merges, (call,))

    def exit_after_merges(self, call: SimCall) -> None:
        call.phases["end"] = self.now + self.c.exit
        self.at(call.phases["end"], self.release, call.slot)

    def mapper_key(self, index: int) -> tuple[Any, ...]:
        if len(self.tasks) == 1 and self.tree:
            return _RESULT
        return ("m", self.tasks[index])

    def node_key(self, interval: tuple[int, int]) -> tuple[Any, ...]:
        return _RESULT if interval == (0, self.npartitions) else ("node", interval)

    def reducer(self, call: SimCall, member: tuple[int, int]) -> None:
        call.phases["ready"] = self.now + self.c.reducer_start
        group = self.parent[member]
        # A HEAD per other member and one for the output, then the claim.
        self.at(call.phases["ready"] + self.c.get * len(self.groups[group]), self.check_group, call, group)

    def complete(self, group: int) -> bool:
        return group not in self.claimed and all(
            ("m", m) in self.written or ("node", m) in self.written for m in self.groups[group]
        )

    def check_group(self, call: SimCall, group: int) -> None:
        if not self.complete(group):
            call.phases["end"] = self.now + self.c.exit
            self.at(self.now + self.c.exit, self.release, call.slot)
            return
        self.claimed.add(group)
        self.merge(call, group)

    def merge(self, call: SimCall, group: int) -> None:
        members = self.groups[group]
        interval = (members[0][0], members[-1][1])
        call.merged, call.task, call.inputs = True, layout.interval_stem(*interval), len(members)
        call.output = _KEYS.partial(*interval)
        p = call.phases
        # The member that triggered it is on disk already (OSCAR's supervisor fetched it).
        p["inputs"] = self.now + self.c.put + (len(members) - 1) * self.transfer()
        p["computed"] = p["inputs"] + len(members) * self.c.merge_per_partial
        self.finish(call, self.node_key(interval), p["computed"] + self.upload())

    def coordinator(self, call: SimCall) -> None:
        call.phases["ready"] = self.now + self.c.reducer_start
        self.arrived: list[tuple[Any, ...]] = []
        self.launched_batches = 0
        # What was written before it started, it finds at its first listing.
        self.item_log = [k for k in self.written if k[0] in ("m", "b")]
        self.coordinator_watch = _Poller(
            self, 2 * self.c.get + self.c.coordinator_poll, self.coordinator_poll
        )
        self.at(call.phases["ready"] + self.c.get, self.coordinator_poll)

    def coordinator_poll(self) -> None:
        # A listing returns what is new, in key order: mapper partials (<lo>_<hi>), then batch_<i>.
        new = sorted(self.item_log, key=lambda k: (k[0] == "b", k[1]))
        self.item_log = []
        self.arrived.extend(new)
        time = self.now
        while self.launched_batches < len(self.sizes):
            size = self.sizes[self.launched_batches]
            if len(self.arrived) < size:
                break
            self.arrived = self.arrived[size:]
            self.batch_inputs[self.launched_batches] = size
            time += self.c.put
            self.at(time, self.write, ("batchfile", self.launched_batches))
            self.launched_batches += 1
        if self.launched_batches < len(self.sizes):
            # Then a HEAD of the manifest (is the job alive?), the sleep, a listing.
            assert self.coordinator_watch is not None
            self.coordinator_watch.sleep(time + 2 * self.c.get + self.c.coordinator_poll)

    def batch(self, call: SimCall, index: int, fresh_process: bool = True) -> None:
        p = call.phases
        p["ready"] = self.now + (self.c.reducer_start if fresh_process else 0.0)
        inputs = call.inputs = self.batch_inputs[index]
        p["inputs"] = p["ready"] + self.c.get + inputs * self.transfer()
        p["computed"] = p["inputs"] + inputs * self.c.merge_per_partial
        key = _RESULT if index == len(self.sizes) - 1 else ("b", index)
        self.finish(call, key, p["computed"] + self.upload())

    # -- the client
    def client_poll(self) -> None:
        if self.last_mapper_seen == math.inf and self.mappers_written == len(self.tasks):
            self.last_mapper_seen = self.now
        if _RESULT in self.written:
            self.result_seen = self.now
            self.done = True
            return
        self.client.sleep(self.now + self.c.client_poll)

    def start(self) -> None:
        time = self.c.submit
        if self.c.pool:
            self.pool_start()
        if not self.tree:
            # First the coordinator's start: its plan file, or its item in a pool's queue.
            time += self.c.put
            self.at(
                time,
                self.offer if self.c.pool else self.write,
                ("coordinator",) if self.c.pool else ("plan",),
            )
        for index in range(len(self.tasks)):
            time += self.c.put
            if self.c.pool:
                self.at(time, self.offer, ("call", index))
            else:
                self.at(time, self.write_trigger, index)
        self.at(time, self.client_poll)

    def write_trigger(self, index: int) -> None:
        self.invoke(
            "mapper", self.mapper, _node("mapper", self.tasks[index], None, {"invoked": self.now}), index
        )

    # -- a warm pool
    def pool_start(self) -> None:
        # The queue in a listing's order: the coordinator first, then key order, mapper calls
        # (<lo>_<hi>) before batch_<i>. Each kind is offered in its own key order.
        self.queue: dict[str, list[tuple[Any, ...]]] = {"coordinator": [], "call": [], "batch": []}
        self.passed = dict.fromkeys(self.queue, 0)  # leading items of each kind all taken
        self.taken: set[tuple[Any, ...]] = set()
        self.open_items = 0  # offered, not yet claimed
        self.jitted: set[int] = set()
        self.idle = [
            _Poller(self, self.c.queue_poll, self.pool_list, worker) for worker in range(self.c.slots)
        ]
        self.sleeping: set[int] = set()
        for worker in range(self.c.slots):
            # Idle workers list the queue at evenly spread phases of their period.
            self.at((worker + 0.5) * self.c.queue_poll / self.c.slots, self.pool_list, worker)

    def offer(self, item: tuple[Any, ...]) -> None:
        self.queue[item[0]].append(item)
        self.open_items += 1
        for worker in sorted(self.sleeping):
            self.idle[worker].wake()
        self.sleeping.clear()

    def pool_list(self, worker: int) -> None:
        listing: list[tuple[Any, ...]] = []
        for kind, items in self.queue.items():
            # Taken calls and coordinators are deleted: a listing no longer shows them.
            while self.passed[kind] < len(items) and items[self.passed[kind]] in self.taken:
                self.passed[kind] += 1
            listing += items[self.passed[kind] :]
        self.at(self.now + self.c.get, self.pool_next, worker, listing, 0, False)

    def pool_next(self, worker: int, listing: list[tuple[Any, ...]], position: int, took: bool) -> None:
        """The worker reads the next listed item (one GET each) and claims it if nobody has."""
        time = self.now
        while position < len(listing) and listing[position] in self.taken:
            position += 1  # gone: its read fails (one GET)
            time += self.c.get
        if position == len(listing):
            if took:
                self.at(time, self.pool_list, worker)
            elif self.open_items:
                self.at(time + self.c.queue_poll, self.pool_list, worker)
            else:
                self.idle[worker].sleep(time + self.c.queue_poll)
                self.sleeping.add(worker)
            return
        self.at(time + self.c.get, self.pool_claim, worker, listing, position, took)

    def pool_claim(self, worker: int, listing: list[tuple[Any, ...]], position: int, took: bool) -> None:
        item = listing[position]
        if item in self.taken:
            self.pool_next(worker, listing, position + 1, took)
            return
        self.taken.add(item)
        self.open_items -= 1
        claimed = (
            self.now + self.c.put + (self.c.put if item[0] != "batch" else 0.0)
        )  # claim, delete the offer
        if item[0] == "coordinator":
            call = SimCall("coordinator", "", None, {"invoked": claimed, "started": claimed})
            self.calls.append(call)
            self.at(claimed, self.coordinator, call)
            self.at(claimed, self.pool_next, worker, listing, position + 1, took)
            return
        resume = (worker, listing, position + 1)
        if item[0] == "call":
            index = item[1]
            call = _node("mapper", self.tasks[index], worker, {"invoked": claimed, "started": claimed})
            self.calls.append(call)
            p = call.phases
            p["ready"] = claimed + self.c.get  # the payload
            p["jitted"] = p["ready"] + (self.c.jit if worker not in self.jitted else 0.0)
            self.jitted.add(worker)
            p["computed"] = p["jitted"] + self.compute[index]
            p["written"] = p["end"] = p["computed"] + self.upload()
            key = self.mapper_key(index)
            self.at(p["written"], self.write, key)
            if self.tree and key != _RESULT:
                self.at(p["written"], self.merge_up, worker, key[1], True, self.pool_resume, (resume,))
            else:
                self.at(p["written"], self.pool_resume, resume)
        else:
            index = item[1]
            call = _batch(index, worker, {"invoked": claimed, "started": claimed})
            self.calls.append(call)
            p = call.phases
            p["ready"] = claimed
            inputs = call.inputs = self.batch_inputs[index]
            p["inputs"] = p["ready"] + inputs * self.transfer()
            p["computed"] = p["inputs"] + inputs * self.c.merge_per_partial
            p["written"] = p["end"] = p["computed"] + self.upload()
            self.at(p["written"], self.write, _RESULT if index == len(self.sizes) - 1 else ("b", index))
            self.at(p["written"], self.pool_resume, resume)

    def pool_resume(self, resume: _Resume) -> None:
        """Back to the rest of the worker's listing, having taken something."""
        self.pool_next(*resume, True)

    def merge_up(
        self,
        slot: int | None,
        node: tuple[int, int],
        staged: bool,
        done: Callable[..., None],
        args: tuple[Any, ...],
    ) -> None:
        """Inline tree: the writer of ``node`` (in ``slot``) merges the group it completes, and so on
        upwards; then ``done(*args)``. ``staged``: ``node`` is still on its disk, no download."""
        group = self.parent.get(node)
        if group is None:
            done(*args)
            return
        # A HEAD per other member and one for the group's output, then the claim.
        self.at(
            self.now + self.c.get * len(self.groups[group]), self.merge_check, slot, group, staged, done, args
        )

    def merge_check(
        self, slot: int | None, group: int, staged: bool, done: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        if not self.complete(group):
            done(*args)
            return
        self.claimed.add(group)
        members = self.groups[group]
        interval = (members[0][0], members[-1][1])
        call = _node("reducer", interval, slot, {"started": self.now, "ready": self.now}, inputs=len(members))
        self.calls.append(call)
        p = call.phases
        p["inputs"] = self.now + self.c.put + (len(members) - staged) * self.transfer()
        p["computed"] = p["inputs"] + len(members) * self.c.merge_per_partial
        p["written"] = p["end"] = p["computed"] + self.upload()
        key = self.node_key(interval)
        self.at(p["written"], self.write, key)
        if key == _RESULT:
            self.at(p["written"], done, *args)
        else:
            self.at(p["written"], self.merge_up, slot, interval, False, done, args)


def simulate(
    costs: PlatformCosts,
    npartitions: int,
    reduction: Reduction,
    workload: Workload | None = None,
    *,
    ranges_per_call: int = 1,
    seed: int = 0,
) -> SimResult:
    """Simulate one job of ``npartitions`` ranges, ``ranges_per_call`` per mapper call."""
    if npartitions < 1:
        raise ValueError(f"a job needs at least one partition, got {npartitions}")
    plan.check_ranges_per_call(ranges_per_call)
    reduction.check(npartitions, ranges_per_call)
    job = _Job(costs, workload or Workload(), npartitions, reduction, ranges_per_call, seed)
    job.start()
    job.run()
    return SimResult(
        npartitions=npartitions,
        ranges_per_call=ranges_per_call,
        mapper_calls=len(job.tasks),
        reduction=repr(reduction),
        mode="tree" if job.tree else "coordinated",
        pool=costs.pool,
        time_to_result=job.result_seen,
        last_mapper=job.last_mapper,
        last_mapper_seen=job.last_mapper_seen,
        result_written=job.result_written,
        calls=sorted(job.calls, key=lambda c: (c.phases.get("started", math.inf), c.role)),
        partial_bytes=job.bytes,
    )
