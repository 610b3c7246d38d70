"""A discrete-event model of a job as the protocol runs it: where its time goes, and what a
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

Everything is deterministic given the seed. :func:`calibrate` derives the costs from job records
(``timeline.JobRecord``), and :func:`choose` is what ``reduction="auto"`` runs.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import math
import os
import random
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import plan
from .timeline import CallRecord, JobRecord

Reduction = plan.TreeReduction | plan.CoordinatedReduction


@dataclass(frozen=True)
class PlatformCosts:
    """What a platform charges a job, in seconds (bytes where it says so)."""

    name: str = "custom"
    slots: int = 8  # functions that run at once (one CPU each); a pool's workers
    pool: bool = False  # a warm pool serves the calls (no pod, no start-up, JIT once per worker)
    launch_stagger: float = 0.0  # between two launches from one queue
    stagger_scope: str = "service"  # "service": a launch queue per service; "platform": one for all
    invoke_latency: float = 0.0  # object written -> its invocation queued for launch (mean)
    invoke_spread: float = 0.0  # standard deviation of that latency
    pod_start: float = 0.0  # slot taken -> process started
    mapper_start: float = 0.0  # process started -> ready: interpreter, ROOT, payload
    reducer_start: float = 0.0  # the same for a reducer, batch reducer or coordinator (no PyROOT)
    jit: float = 0.0  # a graph's JIT in a process that has not run it yet
    compute_scale: float = 1.0  # a function's seconds per serial second of the workload
    # Mapper calls beside a coordinator run this much longer (a pool runs it in a worker's thread,
    # and on one machine it shares the cores); on OSCAR file-triggered it has a CPU of its own: 0.
    coordinator_load: float = 0.0
    put: float = 0.0  # one object written (latency)
    get: float = 0.0  # one object read, listed or looked up (latency)
    transfer_per_byte: float = 0.0  # seconds per byte up- or downloaded
    merge_per_partial: float = 0.0  # the n-way merge, per input
    exit: float = 0.0  # output uploaded -> slot free again
    submit: float = 0.0  # the client's uploads before the first trigger (payload, manifest, plan)
    client_poll: float = 0.2  # between the client's looks for the job's objects
    coordinator_poll: float = 0.1  # between the coordinator's listings
    queue_poll: float = 0.1  # between an idle pool worker's listings of the queue
    # The protocol's, not the platform's: a file-triggered coordinator merges its last batch itself
    # (this project); False: every batch is a batch reducer function (the prototype).
    coordinator_merges_last: bool = True

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"a platform needs at least one slot, got {self.slots}")
        if self.stagger_scope not in ("service", "platform"):
            raise ValueError(f"stagger_scope is 'service' or 'platform', got {self.stagger_scope!r}")
        if any(v < 0 for v in dataclasses.astuple(self)[2:] if isinstance(v, float)):
            raise ValueError("costs cannot be negative")
        for period in ("client_poll", "coordinator_poll", "queue_poll"):
            if getattr(self, period) <= 0:
                raise ValueError(f"{period} must be positive")


@dataclass(frozen=True)
class Workload:
    """The job, independently of the platform."""

    work: float = 60.0  # serial seconds of the event loop over all ranges (one core, no start-up)
    partial_bytes: int = 100_000  # one partial (a merged one too: histograms do not grow)
    imbalance: float = 0.0  # relative standard deviation of a mapper call's compute


# -- presets ------------------------------------------------------------------------------------
# The original OSCAR prototype (DESIGN.md §5 and issue 11): 80 mappers of 1 vCPU on a 9020 s
# CPU-bound workload; launches about 0.3 s apart; each tree level 4-5 s; 200.8 s with its
# coordinated plan, 238.9 s with the binary tree; tails 8-11 s and 34-48 s. Pod start, start-up
# and JIT are typical Kubernetes/ROOT figures chosen so that a reducer level costs 4.5 s;
# compute_scale (a function's slower core and its remote reads) is fitted to the 200.8 s.
# ``benchmarks/simulate.py`` checks the reproduction.
PROTOTYPE = PlatformCosts(
    name="prototype", slots=80, launch_stagger=0.3, stagger_scope="service", invoke_latency=0.8,
    invoke_spread=0.1, pod_start=2.0, mapper_start=3.0, reducer_start=1.8, jit=2.0, compute_scale=1.41,
    put=0.05, get=0.02, transfer_per_byte=1 / 100e6, merge_per_partial=0.05, exit=1.0, submit=1.0,
    client_poll=1.0, coordinator_poll=1.0, queue_poll=0.5, coordinator_merges_last=False)
PROTOTYPE_WORKLOAD = Workload(work=9020.0, partial_bytes=1_000_000)

# The same cluster serving the calls from a warm pool (an exposed service): no pod, no start-up,
# one JIT per worker and job; the queue is polled every half second.
OSCAR_POOL = dataclasses.replace(PROTOTYPE, name="oscar-pool", pool=True, launch_stagger=0.0, invoke_latency=0.0,
                                 invoke_spread=0.0, pod_start=0.0, mapper_start=0.0, reducer_start=0.0)

# This machine's embedded platform (LocalCluster(workers=2), modes "cold" and "warm", the latter
# its warm pool; 2 s of emulated pod start), calibrated from the job records of a run of
# benchmarks/simulate.py on a busy 2-core machine (docs/simulator.md).
# The JIT of a cold process cannot be told from its work when every call is cold and of one share:
# the 1 s here is DESIGN.md's order of magnitude, the pool's the first call's excess in its records.
EMBEDDED_COLD = PlatformCosts(
    name="embedded-cold", slots=2, launch_stagger=0.0, stagger_scope="platform", invoke_latency=0.02,
    invoke_spread=0.01, pod_start=2.0, mapper_start=1.5, reducer_start=0.27, jit=1.0, put=0.004, get=0.004,
    transfer_per_byte=1 / 200e6, merge_per_partial=0.02, exit=0.05, submit=0.02, client_poll=0.21,
    coordinator_poll=0.11, queue_poll=0.1, coordinator_load=0.15)
EMBEDDED_POOL = dataclasses.replace(EMBEDDED_COLD, name="embedded-pool", pool=True, invoke_latency=0.0,
                                    invoke_spread=0.0, pod_start=0.0, mapper_start=0.01, reducer_start=0.0,
                                    jit=0.6, put=0.008, merge_per_partial=0.003, submit=0.03, coordinator_load=0.3)


# -- the result ---------------------------------------------------------------------------------


@dataclass
class SimCall:
    """One function call of the simulated job. ``phases`` as in ``timeline.PHASES``, plus
    ``written`` (its output exists) and ``end`` (its slot is free again); ``slot`` is the function
    slot or pool worker (None: the coordinator, which holds no slot)."""

    role: str  # mapper, reducer (a tree merge), batch, coordinator
    task: str  # what it produced: "<lo>_<hi>" (a partial or tree node), "batch_<i>", "" if nothing
    slot: int | None
    phases: dict[str, float]
    merged: bool = True  # False: a tree reducer that found its group incomplete or taken
    inputs: int = 0  # partials a merge downloaded


@dataclass
class SimResult:
    npartitions: int
    ranges_per_call: int
    mapper_calls: int
    reduction: str  # its repr
    mode: str  # tree or coordinated
    pool: bool
    time_to_result: float  # from submission to the client seeing the result
    last_mapper: float  # the last mapper's partial written
    last_mapper_seen: float  # ... and seen by the client
    result_written: float
    calls: list[SimCall] = field(default_factory=list)
    partial_bytes: int = 0

    @property
    def tail(self) -> float:
        """Last mapper partial written -> result seen by the client."""
        return self.time_to_result - self.last_mapper

    def record(self, job: str = "simulated") -> JobRecord:
        """The schedule as a job record (``report.gantt`` draws it): the calls that produced an
        output, as a real job's record holds them."""
        def task(call: SimCall) -> str:  # named as a real record names them: the result by its key
            if call.phases.get("written") == self.result_written and call.role != "coordinator":
                return "results/simulated/result.root"
            return f"partials/simulated/{call.task}.root"

        functions = [CallRecord(role=c.role, worker=f"slot-{c.slot}", task=task(c), cpu_seconds=0.0, peak_rss=0,
                                bytes_read=c.inputs * self.partial_bytes, bytes_written=0,
                                phases={k: v for k, v in c.phases.items() if k not in ("written", "end")})
                     for c in self.calls if c.merged and c.role != "coordinator"]
        client = {"submitted": 0.0, "last_mapper": self.last_mapper_seen, "result_seen": self.time_to_result}
        return JobRecord(job=job, mode=self.mode, npartitions=self.npartitions, calls=self.mapper_calls,
                         pool=self.pool, client=client, functions=functions)


# -- the model ------------------------------------------------------------------------------------

_RESULT = ("result",)
_Resume = tuple[int, list[tuple[Any, ...]], int]  # a pool worker, its listing, where it is in it


def _stem(interval: tuple[int, int]) -> str:
    return f"{interval[0]:06d}_{interval[1]:06d}"


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
            self.job.at(tick + max(0, math.ceil((now - tick) / self.period - 1e-9)) * self.period, self.look,
                        *self.args)


class _Job:
    """One simulated job: an event heap and the state the protocol keeps in object storage."""

    def __init__(self, costs: PlatformCosts, workload: Workload, npartitions: int, reduction: Reduction,
                 ranges_per_call: int, seed: int) -> None:
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
        self.compute = [max(0.05, spread.gauss(1.0, workload.imbalance)) * per_range * (hi - lo)
                        if workload.imbalance else per_range * (hi - lo) for lo, hi in self.tasks]
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
            call = SimCall("batch", f"batch_{key[1]}", None, {"invoked": self.now, "started": self.now + self.c.put})
            self.calls.append(call)
            self.at(call.phases["started"], self.batch, call, key[1], False)
        elif self.c.pool:
            if kind == "batchfile":  # a pool's coordinator queues its batch files
                self.offer(("batch", key[1]))
        elif self.tree and not self.inline and kind in ("m", "node"):
            self.invoke("reducer", self.reducer, SimCall("reducer", "", None, {"invoked": self.now}, merged=False),
                        key[1])
        elif kind == "batchfile":
            self.invoke("batch", self.batch, SimCall("batch", f"batch_{key[1]}", None, {"invoked": self.now}), key[1])
        elif kind == "plan":
            self.invoke("coordinator", self.coordinator, SimCall("coordinator", "", None, {"invoked": self.now}),
                        slot=False)

    # -- file-triggered invocations
    def invoke(self, service: str, body: Callable[..., None], call: SimCall, *args: Any, slot: bool = True) -> None:
        latency = self.c.invoke_latency
        if self.c.invoke_spread:
            latency = max(0.0, self.rng.gauss(latency, self.c.invoke_spread))
        self.at(self.now + latency, self.arrive, service, body, call, args, slot)

    def arrive(self, service: str, body: Callable[..., None], call: SimCall, args: tuple[Any, ...],
               slot: bool) -> None:
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

    def begin(self, body: Callable[..., None], call: SimCall, args: tuple[Any, ...], slot: int | None) -> None:
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
            ("m", m) in self.written or ("node", m) in self.written for m in self.groups[group])

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
        call.merged, call.task, call.inputs = True, _stem(interval), len(members)
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
        self.coordinator_watch = _Poller(self, 2 * self.c.get + self.c.coordinator_poll, self.coordinator_poll)
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
            self.at(time, self.offer if self.c.pool else self.write, ("coordinator",) if self.c.pool else ("plan",))
        for index in range(len(self.tasks)):
            time += self.c.put
            if self.c.pool:
                self.at(time, self.offer, ("call", index))
            else:
                self.at(time, self.write_trigger, index)
        self.at(time, self.client_poll)

    def write_trigger(self, index: int) -> None:
        self.invoke("mapper", self.mapper, SimCall("mapper", _stem(self.tasks[index]), None,
                                                   {"invoked": self.now}), index)

    # -- a warm pool
    def pool_start(self) -> None:
        # The queue in a listing's order: the coordinator first, then key order, mapper calls
        # (<lo>_<hi>) before batch_<i>. Each kind is offered in its own key order.
        self.queue: dict[str, list[tuple[Any, ...]]] = {"coordinator": [], "call": [], "batch": []}
        self.passed = dict.fromkeys(self.queue, 0)  # leading items of each kind all taken
        self.taken: set[tuple[Any, ...]] = set()
        self.open_items = 0  # offered, not yet claimed
        self.jitted: set[int] = set()
        self.idle = [_Poller(self, self.c.queue_poll, self.pool_list, worker) for worker in range(self.c.slots)]
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
            listing += items[self.passed[kind]:]
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
        claimed = self.now + self.c.put + (self.c.put if item[0] != "batch" else 0.0)  # claim, delete the offer
        if item[0] == "coordinator":
            call = SimCall("coordinator", "", None, {"invoked": claimed, "started": claimed})
            self.calls.append(call)
            self.at(claimed, self.coordinator, call)
            self.at(claimed, self.pool_next, worker, listing, position + 1, took)
            return
        resume = (worker, listing, position + 1)
        if item[0] == "call":
            index = item[1]
            call = SimCall("mapper", _stem(self.tasks[index]), worker, {"invoked": claimed, "started": claimed})
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
            call = SimCall("batch", f"batch_{index}", worker, {"invoked": claimed, "started": claimed})
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

    def merge_up(self, slot: int | None, node: tuple[int, int], staged: bool, done: Callable[..., None],
                 args: tuple[Any, ...]) -> None:
        """Inline tree: the writer of ``node`` (in ``slot``) merges the group it completes, and so on
        upwards; then ``done(*args)``. ``staged``: ``node`` is still on its disk, no download."""
        group = self.parent.get(node)
        if group is None:
            done(*args)
            return
        # A HEAD per other member and one for the group's output, then the claim.
        self.at(self.now + self.c.get * len(self.groups[group]), self.merge_check, slot, group, staged, done, args)

    def merge_check(self, slot: int | None, group: int, staged: bool, done: Callable[..., None],
                    args: tuple[Any, ...]) -> None:
        if not self.complete(group):
            done(*args)
            return
        self.claimed.add(group)
        members = self.groups[group]
        interval = (members[0][0], members[-1][1])
        call = SimCall("reducer", _stem(interval), slot, {"started": self.now, "ready": self.now},
                       inputs=len(members))
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


def simulate(costs: PlatformCosts, npartitions: int, reduction: Reduction, workload: Workload | None = None, *,
             ranges_per_call: int = 1, seed: int = 0) -> SimResult:
    """Simulate one job of ``npartitions`` ranges, ``ranges_per_call`` per mapper call."""
    if npartitions < 1:
        raise ValueError(f"a job needs at least one partition, got {npartitions}")
    plan.check_ranges_per_call(ranges_per_call)
    reduction.check(npartitions, ranges_per_call)
    job = _Job(costs, workload or Workload(), npartitions, reduction, ranges_per_call, seed)
    job.start()
    job.run()
    return SimResult(npartitions=npartitions, ranges_per_call=ranges_per_call, mapper_calls=len(job.tasks),
                     reduction=repr(reduction), mode="tree" if job.tree else "coordinated", pool=costs.pool,
                     time_to_result=job.result_seen, last_mapper=job.last_mapper,
                     last_mapper_seen=job.last_mapper_seen, result_written=job.result_written,
                     calls=sorted(job.calls, key=lambda c: (c.phases.get("started", math.inf), c.role)),
                     partial_bytes=job.bytes)


# -- calibration from job records -------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    costs: PlatformCosts
    workload: Workload  # the records' job (meaningful if they all ran one analysis on one dataset)
    jobs: int  # records used


def _interval(task: str) -> tuple[int, int] | None:
    stem = task.rsplit("/", 1)[-1].split(".", 1)[0]
    lo, _, hi = stem.partition("_")
    return (int(lo), int(hi)) if lo.isdigit() and hi.isdigit() else None


def _median(values: Sequence[float], default: float) -> float:
    return statistics.median(values) if values else default


def _load(record: JobRecord | str) -> JobRecord:
    if isinstance(record, JobRecord):
        return record
    with open(record) as f:
        return JobRecord.from_json(f.read())


def _overlap(calls: list[CallRecord]) -> int:
    """The most calls of one job running at once (started -> computed)."""
    edges = sorted([(c.phases["started"], 1) for c in calls] + [(c.phases["computed"], -1) for c in calls
                                                               if "computed" in c.phases])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def _merge_inputs(record: JobRecord, call: CallRecord, partial_bytes: float | None) -> int | None:
    """How many partials a merge read: its tree node's children in the record, or its bytes read
    over a partial's size."""
    interval = _interval(call.task) if call.role == "reducer" else None
    if call.task.endswith("result.root") and call.role == "reducer":
        interval = (0, record.npartitions)
    if interval is not None:
        inside = [iv for f in record.functions if f is not call and (iv := _interval(f.task)) is not None
                  and interval[0] <= iv[0] and iv[1] <= interval[1] and iv != interval]
        # Children: the nodes inside that no other node inside covers.
        children = [iv for iv in inside if not any(o != iv and o[0] <= iv[0] and iv[1] <= o[1] for o in inside)]
        if len(children) >= 2:
            return len(children)
    if partial_bytes:
        return max(1, round(call.bytes_read / partial_bytes))
    return None


def _fit_compute(jobs: list[list[tuple[float, float, float]]], default_jit: float,
                 measured_jit: float | None = None) -> tuple[float, list[float]]:
    """The JIT and each job's serial work from its mapper calls' rows (first graph in the process
    0/1, share of the dataset, compute seconds): least squares of compute = jit * first + work_j *
    share, each job its own work. A ``measured_jit`` (the calls' own JIT phases) is taken as it
    is. If no job's rows can tell the JIT from the work (every call cold and of the same share),
    the JIT is the smaller of ``default_jit`` and the fastest call; if the first calls are not
    slower beyond the noise (a pool whose workers ran the graph before), none."""
    if measured_jit is not None:
        return measured_jit, _works(jobs, measured_jit)
    num = den = 0.0
    partialled = []
    for rows in jobs:
        svv = sum(v * v for _, v, _ in rows)
        if svv <= 0:
            continue
        suv, svy = sum(u * v for u, v, _ in rows), sum(v * y for _, v, y in rows)
        for u, v, y in rows:  # the JIT indicator and compute with the job's own work partialled out
            uu, yy = u - v * suv / svv, y - v * svy / svv
            partialled.append((uu, yy))
            num += uu * yy
            den += uu * uu
    if den > 1e-9:
        jit = num / den
        dof = max(1, len(partialled) - len(jobs) - 1)
        error = math.sqrt(sum((yy - jit * uu) ** 2 for uu, yy in partialled) / dof / den)
        jit = jit if jit > 2 * error else 0.0
    else:
        jit = min([default_jit] + [y for rows in jobs for _, _, y in rows])
    return jit, _works(jobs, jit)


def _works(jobs: list[list[tuple[float, float, float]]], jit: float) -> list[float]:
    return [max(1e-6, sum(v * (y - u * jit) for u, v, y in rows) / max(1e-12, sum(v * v for _, v, _ in rows)))
            for rows in jobs]


def calibrate(records: Iterable[JobRecord | str], base: PlatformCosts | None = None,
              one_workload: bool = False) -> Calibration:
    """A platform's costs (and the records' workload) from job records of one mode (all on a warm
    pool or all file-triggered): JobRecord objects or paths of their JSON files.

    Measured: slots (the most calls at once; a pool's workers), the latency from an object to its
    function's process and its spread, each role's start-up, the JIT and the serial work (a least-
    squares fit of each mapper call's compute against the share of the dataset it ran and whether
    its process had run the graph yet), the download and merge cost per input, the trigger cadence
    (put), the client's submission time and the partials' size. Everything else (the polling
    periods, the launch stagger when the records cannot show it, get, exit) comes from ``base``
    (default: this machine's embedded preset of the records' mode). With ``one_workload`` (every
    record ran the same analysis on the same data, tree and coordinated jobs among them), the
    coordinator's load on the mapper calls is measured too: the work of coordinated jobs over that
    of tree jobs."""
    # The model's calls; the coordinator's own record (its watching) is not one of them.
    loaded = [dataclasses.replace(r, functions=[c for c in r.functions if c.role != "coordinator"])
              for r in map(_load, records)]
    if not loaded:
        raise ValueError("calibrating needs at least one job record")
    pools = {r.pool for r in loaded}
    if len(pools) > 1:
        raise ValueError("calibrate the records of pool jobs and of file-triggered jobs separately")
    pool = pools.pop()
    base = base or (EMBEDDED_POOL if pool else EMBEDDED_COLD)
    costs: dict[str, Any] = {"name": f"calibrated ({len(loaded)} jobs)", "pool": pool, "compute_scale": 1.0}
    mappers = [(r, c) for r in loaded for c in r.functions if c.role == "mapper" and "computed" in c.phases]
    merges = [(r, c) for r in loaded for c in r.functions if c.role in ("reducer", "batch") and "inputs" in c.phases]
    if pool:
        slots = max((len({c.worker for c in r.functions}) for r in loaded), default=base.slots)
    else:
        slots = max((_overlap(r.functions) for r in loaded), default=base.slots)
    costs["slots"] = max(1, slots)

    # Start-up of each role; the wait from the event to the process, for calls that found a slot.
    costs["mapper_start"] = _median([c.phases["ready"] - c.phases["started"] for _, c in mappers
                                     if "ready" in c.phases], base.mapper_start)
    costs["reducer_start"] = 0.0 if pool else _median(
        [c.phases["ready"] - c.phases["started"] for _, c in merges
         if "ready" in c.phases and c.phases.get("invoked", c.phases["started"]) < c.phases["started"]],
        base.reducer_start)
    if not pool:
        waits = []
        for r in loaded:
            for c in r.functions:
                # Inline merges (in their writer's process: started as invoked) start no function.
                if c.phases.get("invoked", c.phases["started"]) >= c.phases["started"]:
                    continue
                busy = sum(1 for o in r.functions if o is not c and o.phases["started"] <= c.phases["invoked"]
                           < o.phases.get("computed", o.phases["started"]))
                if busy < slots:
                    waits.append(c.phases["started"] - c.phases["invoked"])
        if waits:
            costs["pod_start"] = max(0.0, min(waits))
            costs["invoke_latency"] = max(0.0, statistics.median(waits) - costs["pod_start"])
            costs["invoke_spread"] = statistics.pstdev(waits)
        cadence = []
        for r in loaded:
            times = sorted(c.phases["invoked"] for c in r.functions if c.role == "mapper" and "invoked" in c.phases)
            cadence += [b - a for a, b in itertools.pairwise(times)]
        costs["put"] = _median(cadence, base.put)
    put = costs.get("put", base.put)
    submits = []
    for r in loaded:
        first = min((c.phases.get("invoked", c.phases["started"]) for c in r.functions if c.role == "mapper"),
                    default=None)
        if first is not None and "submitted" in r.client:
            # Before the first trigger: the coordinator's start (coordinated jobs); pool calls wait
            # half a queue poll on average before a worker sees them.
            ahead = put * (2 if r.mode == "coordinated" else 1) + (base.queue_poll / 2 if pool else 0.0)
            submits.append(max(0.0, first - r.client["submitted"] - ahead))
    costs["submit"] = _median(submits, base.submit)

    # Compute: jit * (first graph in the process) + the job's work * (its share of the dataset).
    jobs, modes = [], []
    graph_jit: dict[float, list[float]] = {1.0: [], 0.0: []}  # measured ready -> jitted, by first graph or not
    for r in loaded:
        rows = []
        seen_workers: set[str] = set()
        for c in sorted((c for c in r.functions if c.role == "mapper" and "computed" in c.phases),
                        key=lambda c: c.phases["started"]):
            interval = _interval(c.task) or (0, 1)
            if c.task.endswith("result.root"):
                interval = (0, r.npartitions)
            first = 1.0 if not pool or c.worker not in seen_workers else 0.0
            seen_workers.add(c.worker)
            share = (interval[1] - interval[0]) / r.npartitions
            rows.append((first, share, c.phases["computed"] - c.phases.get("ready", c.phases["started"])))
            if "jitted" in c.phases and "ready" in c.phases:
                graph_jit[first].append(c.phases["jitted"] - c.phases["ready"])
        if rows:
            jobs.append(rows)
            modes.append(r.mode)
    # The calls' own JIT phases (graph built and jitted), less what a process that ran the graph
    # before still spends there, when the records have them.
    measured_jit = (max(0.0, statistics.median(graph_jit[1.0]) - _median(graph_jit[0.0], 0.0))
                    if graph_jit[1.0] else None)
    jit, works = _fit_compute(jobs, base.jit, measured_jit)
    costs["jit"] = jit
    # How uneven a job's mapper calls are: the spread of their compute around the fit's (calls of
    # a tenth of a second or less are all overhead, and left out).
    spreads = []
    for rows, w in zip(jobs, works, strict=True):
        ratios = [y / (u * jit + v * w) for u, v, y in rows if u * jit + v * w > 0.1]
        if len(ratios) > 1:
            spreads.append(statistics.pstdev(ratios))
    imbalance = _median(spreads, 0.0)
    coordinated = [w for mode, w in zip(modes, works, strict=True) if mode == "coordinated"]
    trees = [w for mode, w in zip(modes, works, strict=True) if mode == "tree"]
    if one_workload and coordinated and trees:
        costs["coordinator_load"] = max(0.0, statistics.median(coordinated) / statistics.median(trees) - 1)
        work = statistics.median(trees)
    else:
        work = _median(works, Workload().work)

    # Merges: per input, its download and its share of the n-way merge.
    sizes = [c.bytes_read / n for r, c in merges if (n := _merge_inputs(r, c, None))]
    partial_bytes = max(1.0, _median(sizes, 100_000.0))
    downloads, merging = [], []
    for r, c in merges:
        n = _merge_inputs(r, c, partial_bytes) or 2
        downloads.append((c.phases["inputs"] - c.phases.get("ready", c.phases["started"])) / n)
        merging.append((c.phases["computed"] - c.phases["inputs"]) / n)
    per_input = _median(downloads, base.get + partial_bytes * base.transfer_per_byte)
    costs["transfer_per_byte"] = max(0.0, per_input - base.get) / partial_bytes
    costs["merge_per_partial"] = _median(merging, base.merge_per_partial)
    measured = dataclasses.replace(base, **costs)
    return Calibration(measured, Workload(work=work, partial_bytes=int(partial_bytes), imbalance=round(imbalance, 3)),
                       len(loaded))


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
        return (f"{self.reduction!r}, {self.ranges_per_call} range(s) per call: {self.predicted:.1f} s predicted "
                f"({self.basis})")


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
    return statistics.fmean(simulate(costs, calls, _reduction(key), workload, seed=seed).time_to_result
                            for seed in seeds)


def _best(costs: PlatformCosts, workload: Workload, calls: int, keys: Iterable[tuple[Any, ...]],
          tried: dict[tuple[int, tuple[Any, ...]], float]) -> tuple[Any, ...]:
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


def _reductions(costs: PlatformCosts, workload: Workload, calls: int,
                tried: dict[tuple[int, tuple[Any, ...]], float]) -> tuple[Any, ...]:
    """The best reduction for ``calls`` mapper calls: trees on a coarse grid of fan-ins refined
    around the best, coordinated plans of equal batches likewise, sqrt(N) batches and the two-level
    hand plans; O(log N) simulations."""
    if calls == 1:  # the only mapper writes the result: nothing to merge
        return _best(costs, workload, calls, [("tree", 2)], tried)
    whole = max(2, calls)  # a single group, a single batch
    tree = _best(costs, workload, calls, [("tree", 4)] + [("tree", k) for k in _ladder(calls) if k != 4]
                 + [("tree", whole)], tried)
    tree = _best(costs, workload, calls, [tree] + [("tree", k) for k in _refined(tree[1], calls)], tried)
    sizes = [*_ladder(calls), whole]
    coordinated = _best(costs, workload, calls, [("coordinated", tuple(plan.equal_batches(calls, b))) for b in sizes]
                        + [("coordinated", tuple(plan.auto_batches(calls)))]
                        + [("coordinated", tuple(p)) for p in two_level_plans(calls)], tried)
    size = coordinated[1][0]
    coordinated = _best(costs, workload, calls, [coordinated] + [("coordinated", tuple(plan.equal_batches(calls, b)))
                                                                for b in _refined(size, calls)], tried)
    return _best(costs, workload, calls, [tree, coordinated], tried)


def choose(npartitions: int, costs: PlatformCosts, workload: Workload | None = None, *,
           ranges_per_call: int | None = None, basis: str = "declared costs") -> Choice:
    """The fastest reduction, and ranges per call unless given, for a job of ``npartitions`` on
    ``costs`` (its ``slots`` and ``pool`` included), by simulating a bounded set of candidates:

    - ranges per call: ``plan.ranges_per_call``'s default (one call per slot, four per pool
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
        default = plan.ranges_per_call(npartitions, costs.slots, plan.TreeReduction(), None, costs.pool)
        calls = math.ceil(npartitions / default)
        targets = {calls, costs.slots, *(calls // 2**k for k in range(1, 6))}
        per_call = sorted({math.ceil(npartitions / t) for t in targets if t >= 1}, reverse=True)
    # One range per call at most: ceil(N / t) for t > N is 1, the same calls as t = N.
    if len(per_call) > 1:
        def proxy(rpc: int) -> float:
            calls = math.ceil(npartitions / rpc)
            key = _best(costs, workload, calls, [("tree", 4), ("coordinated", tuple(plan.auto_batches(calls)))],
                        tried)
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


# -- the costs of the platform a job runs on ------------------------------------------------------

RECENT_RECORDS = 20  # auto calibrates from the newest job records of the job's mode ...
MIN_RECORDS = 5  # ... when there are at least this many (of jobs with two mapper calls or more)
_SCANNED_RECORDS = 100  # newest record files looked at to find them


@functools.lru_cache(maxsize=1024)
def _read_record(path: str, mtime_ns: int, size: int) -> JobRecord | None:
    try:
        return _load(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # a record being written, or of an older format: not evidence


_Version = tuple[str, int, int]  # a file's path, modification time (ns) and size


@functools.lru_cache(maxsize=64)
def _calibrated(versions: tuple[_Version, ...], pool: bool) -> Calibration | None:
    records = [r for v in versions if (r := _read_record(*v)) is not None]
    try:
        return calibrate(records, base=OSCAR_POOL if pool else PROTOTYPE)
    except (ArithmeticError, LookupError, ValueError):
        return None  # records this calibration cannot read (a hand-made or partial one): the preset


def _version(path: str) -> _Version:
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def recent_records(folder: str, pool: bool) -> list[_Version]:
    """The newest job records in ``folder`` of jobs of this mode (pool or file-triggered) with two
    mapper calls or more, at most :data:`RECENT_RECORDS`; job ids sort by creation time."""
    try:
        names = sorted((n for n in os.listdir(folder) if n.endswith(".json")), reverse=True)[:_SCANNED_RECORDS]
    except OSError:
        return []
    chosen = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            version = _version(path)
        except OSError:
            continue  # removed meanwhile (the client keeps the newest 500)
        record = _read_record(*version)
        if record is not None and record.pool == pool and record.calls >= 2:
            chosen.append(version)
            if len(chosen) == RECENT_RECORDS:
                break
    return chosen


def job_costs(pool: bool, slots: int, declared: PlatformCosts | None = None, workload: Workload | None = None,
              measured: bool = True, folder: str | None = None) -> tuple[PlatformCosts, Workload | None, str]:
    """The costs ``reduction="auto"`` plans a job with: ``declared`` if given; else measured from
    the newest job records of the job's mode in ``folder`` (default ``timeline.records_dir()``)
    when there are :data:`MIN_RECORDS`; else the preset of the mode (:data:`OSCAR_POOL` or
    :data:`PROTOTYPE`). ``slots`` (the executor's concurrency) and ``pool`` are the job's."""
    from .timeline import records_dir

    found_workload = workload
    if declared is not None:
        costs, basis = declared, f"declared costs {declared.name!r}"
    else:
        versions = recent_records(folder or records_dir(), pool) if measured else []
        calibration = _calibrated(tuple(versions), pool) if len(versions) >= MIN_RECORDS else None
        if calibration is not None:
            costs, basis = calibration.costs, f"measured from {len(versions)} job records"
            found_workload = workload or calibration.workload
        else:
            costs = OSCAR_POOL if pool else PROTOTYPE
            basis = f"preset {costs.name!r}" + (f" ({len(versions)} usable job records)" if measured else "")
    return dataclasses.replace(costs, slots=slots, pool=pool), found_workload, basis
