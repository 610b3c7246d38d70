"""What a platform charges a job (``PlatformCosts``), the job's own work (``Workload``), and the
presets the simulator starts from: the prototype's OSCAR cluster, OSCAR with a warm pool, and the
embedded platform cold and warm (docs/simulator.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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
    name="prototype",
    slots=80,
    launch_stagger=0.3,
    stagger_scope="service",
    invoke_latency=0.8,
    invoke_spread=0.1,
    pod_start=2.0,
    mapper_start=3.0,
    reducer_start=1.8,
    jit=2.0,
    compute_scale=1.41,
    put=0.05,
    get=0.02,
    transfer_per_byte=1 / 100e6,
    merge_per_partial=0.05,
    exit=1.0,
    submit=1.0,
    client_poll=1.0,
    coordinator_poll=1.0,
    queue_poll=0.5,
    coordinator_merges_last=False,
)
PROTOTYPE_WORKLOAD = Workload(work=9020.0, partial_bytes=1_000_000)

# The same cluster serving the calls from a warm pool (an exposed service): no pod, no start-up,
# one JIT per worker and job; the queue is polled every half second.
OSCAR_POOL = dataclasses.replace(
    PROTOTYPE,
    name="oscar-pool",
    pool=True,
    launch_stagger=0.0,
    invoke_latency=0.0,
    invoke_spread=0.0,
    pod_start=0.0,
    mapper_start=0.0,
    reducer_start=0.0,
)

# This machine's embedded platform (LocalCluster(workers=2), modes "cold" and "warm", the latter
# its warm pool; 2 s of emulated pod start), calibrated from the job records of a run of
# benchmarks/simulate.py on a busy 2-core machine (docs/simulator.md).
# The JIT of a cold process cannot be told from its work when every call is cold and of one share:
# the 1 s here is DESIGN.md's order of magnitude, the pool's the first call's excess in its records.
EMBEDDED_COLD = PlatformCosts(
    name="embedded-cold",
    slots=2,
    launch_stagger=0.0,
    stagger_scope="platform",
    invoke_latency=0.02,
    invoke_spread=0.01,
    pod_start=2.0,
    mapper_start=1.5,
    reducer_start=0.27,
    jit=1.0,
    put=0.004,
    get=0.004,
    transfer_per_byte=1 / 200e6,
    merge_per_partial=0.02,
    exit=0.05,
    submit=0.02,
    client_poll=0.21,
    coordinator_poll=0.11,
    queue_poll=0.1,
    coordinator_load=0.15,
)
EMBEDDED_POOL = dataclasses.replace(
    EMBEDDED_COLD,
    name="embedded-pool",
    pool=True,
    invoke_latency=0.0,
    invoke_spread=0.0,
    pod_start=0.0,
    mapper_start=0.01,
    reducer_start=0.0,
    jit=0.6,
    put=0.008,
    merge_per_partial=0.003,
    submit=0.03,
    coordinator_load=0.3,
)
