"""One ``ProcessAndMerge`` call: upload, trigger, wait, fetch, clean up.

The job never talks to the platform: it writes objects (payload, plan,
triggers) whose appearance invokes the long-lived services, and it learns
about progress and failures only from objects the services write, because
OSCAR reports a crashed script as a succeeded job.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import columns, layout, leases, partial, plan, timeline
from ..protocol.arrivals import Arrivals
from ..protocol.heartbeats import live_workers
from ..protocol.messages import ErrorMarker, Manifest, MapperPayload, MapperTrigger
from ..protocol.signing import SignatureError
from ..protocol.storage import Listed, Storage, StorageError
from . import snapshots
from .recovery import JobRemoved, RemoteError, RetryPolicy, Tracker
from .reductions import Strategy

log = logging.getLogger(__name__)

QUICK_SECONDS = 2.0  # a job's first seconds, when the client looks for its objects every QUICK_POLL
QUICK_POLL = 0.05


@dataclass
class JobOptions:
    poll_interval: float = 0.2  # seconds between looks for the job's new objects
    progress: bool = True  # show a progress bar (terminal or notebook)
    coordinator_timeout: float = 3600.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # see recovery.py
    storage_patience: float = 120.0  # seconds of failing storage calls the wait loop rides out
    lease_ttl: float = leases.DEFAULT_TTL  # seconds without renewal after which cleanup may remove the job
    alive_check: float = 1.0  # seconds between checks that the job's objects were not removed
    # seconds between looks at what only the retries' bookkeeping needs: the batch files, the
    # error markers, a pool's claims (each look is a LIST the object store serves while the job
    # computes; the mappers' partials and the result are looked for every poll_interval)
    bookkeeping_poll: float = 1.0
    snapshots: str = "download"  # where Snapshot files go: snapshots.MODES
    # seconds a mapper call offered to a warm pool may wait unclaimed before the file-triggered
    # mapper is invoked for it too (the two claim it: one computes it)
    pool_overflow_after: float = 30.0
    # seconds without any output, claim or error after which the user is told what may be wrong
    nothing_started_after: float = 60.0


@dataclass
class JobFiles:
    """Files the user distributed with DistributeHeaders/SharedLibs/Files."""

    headers: Sequence[str] = ()
    shared_libraries: Sequence[str] = ()
    pcms: Sequence[str] = ()
    files: Sequence[str] = ()
    # Dataset files named by a relative path: as written -> where they are (datasets.PathPolicy).
    relative_inputs: Mapping[str, str] = field(default_factory=dict)

    def named(self) -> dict[str, list[tuple[str, str]]]:
        """Per kind, (object name, local path); names must be unique per job."""
        seen: dict[str, str] = {}
        out: dict[str, list[tuple[str, str]]] = {}
        for kind in ("headers", "shared_libraries", "pcms", "files"):
            out[kind] = []
            for path in sorted(getattr(self, kind)):
                name = os.path.basename(path)
                if seen.setdefault(name, path) != path:
                    raise ValueError(
                        f"two distributed files share the name {name!r}: {seen[name]} and {path}"
                    )
                out[kind].append((name, path))
        return out


class Job:
    def __init__(
        self,
        storage: Storage,
        strategy: Strategy,
        options: JobOptions,
        idle: Callable[[str, float], bool] | None = None,
        requests: Mapping[str, timeline.Request] | None = None,
    ) -> None:
        self.storage = storage
        self.idle = idle  # see Tracker.overdue
        self.requests = dict(requests or {})  # per role, what its pods reserve: for the job record
        self.strategy = strategy
        self.options = options
        self.keys = layout.JobKeys(layout.new_job_id())
        # Wall-clock observations (epoch seconds) for the benchmarks' tail measurements: when the
        # client saw the last mapper's output and the result (one poll interval apart at best).
        self.timeline: dict[str, float] = {}
        self.tracker: Tracker | None = None  # what the job expected, and what it retried
        self.functions: dict[str, list[str]] = {}  # role -> OSCAR jobs that served this job
        self.record: timeline.JobRecord | None = None  # once the result is in: where the time went
        self._outputs: dict[str, Listed] = {}  # the job's outputs as the client's listings showed them
        # A pool job's lease is short: pool workers drop a job whose client is gone within seconds.
        ttl = min(options.lease_ttl, leases.POOL_TTL) if strategy.pool else options.lease_ttl
        self.lease = leases.Holder(storage, self.keys, ttl=ttl, owner=_owner())
        # pool jobs: range interval -> body of each call offered to the pool, not yet overflowed
        self._offered: dict[tuple[int, int], bytes] = {}
        self._claimed_at = 0.0  # when a pool worker was last seen claiming one of them (monotonic)
        self._pool_calls: dict[tuple[int, int], bytes] = {}  # every call offered to the pool
        self._holders: dict[str, str] = {}  # claim key -> the pool worker that holds it
        self._coordinator_offer: bytes | None = None  # a coordinated pool job's queued coordinator
        self._looked: dict[
            int | str, float
        ] = {}  # watch index or "errors", "claims" -> last listing (monotonic)

    @property
    def job_id(self) -> str:
        return self.keys.job_id

    @property
    def reduction(self) -> plan.Reduction:
        return self.strategy.reduction

    @property
    def pool(self) -> bool:
        """Whether a warm pool is offered the mapper calls."""
        return self.strategy.pool

    # -- submission -------------------------------------------------------
    def _submit(
        self, ranges: Sequence[Any], mapper: Callable[[Any], Any], files: JobFiles, job_plan: plan.JobPlan
    ) -> dict[int, bytes]:
        """Upload everything and write the triggers; returns each range's trigger (for retries)."""
        import cloudpickle

        named = files.named()
        self.lease.renew(time.monotonic())  # first: uploads can take long, and cleanup must see us
        for kind in named.values():
            for name, path in kind:
                self.storage.put_file(self.keys.job_file(name), path)
        payload = MapperPayload(
            mapper,
            **{kind: tuple(name for name, _ in entries) for kind, entries in named.items()},
            relative_inputs=tuple(sorted(files.relative_inputs.items())),
        )
        manifest = Manifest(job=self.job_id, created=time.time(), plan=job_plan.to_dict())
        self.storage.put_bytes(self.keys.manifest, manifest.to_json())
        self.storage.put_bytes(self.keys.mapper_payload, cloudpickle.dumps(payload))
        self.storage.put_bytes(self.keys.plan, job_plan.to_json())
        if isinstance(job_plan, plan.CoordinatedPlan):
            # Start the coordinator first, so it is watching when the first partials land; a pool
            # runs it in a worker, beside the calls, instead of a cold OSCAR job.
            self.storage.put_bytes(
                self.keys.queued_coordinator if self.pool else self.keys.coordinator_trigger,
                job_plan.to_json(),
            )
            if self.pool:
                self._coordinator_offer = job_plan.to_json()
        environment = _environment(mapper, named)
        inline = isinstance(job_plan, plan.TreePlan) and job_plan.inline
        by_id = {current_range.id: current_range for current_range in ranges}
        triggers = {}
        for lo, hi in job_plan.tasks:
            encoded = [base64.b64encode(cloudpickle.dumps(by_id[i])).decode("ascii") for i in range(lo, hi)]
            trigger = MapperTrigger(
                job=self.job_id,
                range_id=lo,
                range=encoded[0],
                payload=self.keys.mapper_payload,
                output=job_plan.mapper_output((lo, hi)),
                more=tuple(encoded[1:]),
                environment=environment,
                merges_upwards=inline,
            )
            triggers[lo] = trigger.to_json()  # retries carry no claim: they run whoever holds it
            if self.pool:
                # Offered to the pool, in a folder no webhook watches: no OSCAR job starts for it.
                offer = dataclasses.replace(trigger, claim=self.keys.claim(lo, hi)).to_json()
                self._offered[(lo, hi)] = self._pool_calls[(lo, hi)] = offer
                self.storage.put_bytes(self.keys.queued(lo, hi), offer)
            else:
                self.storage.put_bytes(self.keys.trigger(lo, hi), triggers[lo])
        self.timeline["queued"] = time.time()  # every call offered: a pool's pick-up counts from here
        return triggers

    def _overflow(self, tracker: Tracker, claims: Arrivals) -> None:
        """Pool jobs: once no pool worker has claimed a call for ``pool_overflow_after`` seconds
        (the pool is gone, stuck or stopped), hand the unclaimed calls to the file-triggered mapper:
        same body, same claim, so the pool and the mappers still compute each call once."""
        now = time.monotonic()
        if self._bookkeeping_due("claims") and claims.poll():
            self._claimed_at = now
        if now - self._claimed_at < self.options.pool_overflow_after:
            return
        done = set(tracker.mapper_outputs())
        log.warning(
            "job %s: the warm pool took no call for %.0f s: the file-triggered mappers take the rest",
            self.job_id,
            now - self._claimed_at,
        )
        for (lo, hi), offer in sorted(self._offered.items()):
            if (
                self.keys.claim(lo, hi) not in claims.found
                and MapperTrigger.from_json(offer).output not in done
            ):
                self.storage.put_bytes(self.keys.trigger(lo, hi), offer)
                self._pool_calls.pop((lo, hi), None)  # its claim may be a file-triggered mapper's
        self._offered.clear()

    def _reoffer_orphans(self, tracker: Tracker, job_plan: plan.JobPlan) -> None:
        """Pool jobs: an item claimed by a worker whose heartbeat stopped (its pod died or stalls)
        is offered to the pool again at once, its claim removed, rather than left to the quiet
        spell's retry: a mapper call and the coordinator are queued anew; a batch file stays
        queued, and workers look again at a queued batch whose claim is gone; a tree group the
        worker was merging inline is retried now (nobody else would merge it)."""
        done = set(tracker.mapper_outputs())
        calls = {
            self.keys.claim(lo, hi): (lo, hi)
            for (lo, hi), offer in self._pool_calls.items()
            if MapperTrigger.from_json(offer).output not in done
        }
        coordinator = self.keys.claim_of(self.keys.queued_coordinator)
        watched = [
            key
            for key in self.storage.list(self.keys.claims)
            if key in calls or key == coordinator or key.rsplit("/", 1)[-1].startswith(("batch_", "group_"))
        ]
        if not watched:
            return
        for claim in watched:
            if claim not in self._holders:
                try:
                    self._holders[claim] = self.storage.get_bytes(claim, verify=False).decode(
                        errors="replace"
                    )
                except StorageError:
                    continue  # removed meanwhile: offered again already
        live = {beat.worker for beat in live_workers(self.storage)}
        for claim in sorted(watched):
            holder = self._holders.get(claim)
            if holder is None or holder in live:
                continue
            log.warning(
                "job %s: pool worker %s is gone: %s is offered again",
                self.job_id,
                holder,
                claim.rsplit("/", 1)[-1],
            )
            self.storage.delete([claim])
            del self._holders[claim]
            if claim in calls:
                lo, hi = calls[claim]
                self.storage.put_bytes(self.keys.queued(lo, hi), self._pool_calls[(lo, hi)])
            elif claim == coordinator and self._coordinator_offer is not None:
                self.storage.put_bytes(self.keys.queued_coordinator, self._coordinator_offer)
            elif isinstance(job_plan, plan.TreePlan):
                self._retry_group(tracker, job_plan, claim)

    def _retry_group(self, tracker: Tracker, job_plan: plan.TreePlan, claim: str) -> None:
        """Retry the merge of the tree group whose claim ``claim`` a dead worker held, if not done."""
        interval = layout.parse_interval(claim.rsplit("/", 1)[-1].removeprefix("group_") + ".root")
        if interval is None:
            return
        output = job_plan.node(interval)
        if tracker.present(output):
            return
        for item in tracker.expected:
            if item.key == output:
                tracker.fire(item.trigger, self.storage.put_bytes)
                return

    # -- waiting ----------------------------------------------------------
    def _handle_errors(self, tracker: Tracker) -> None:
        """Retry what failed transiently; raise RemoteError for what cannot be retried."""
        for key in tracker.new_markers(self.storage.list(self.keys.prefix(layout.ERRORS))):
            trigger = tracker.on_error(key, self._read_marker(key))
            self.storage.delete([key])
            if trigger is not None:
                tracker.fire(trigger, self.storage.put_bytes)

    def _read_marker(self, key: str) -> ErrorMarker:
        """An error marker. A function that could not even start (its signing key missing) reports
        unsigned; such a marker is believed only as that report: it can fail the job (as deleting
        its objects could), never make the client run or trust anything."""
        try:
            return ErrorMarker.from_json(self.storage.get_bytes(key))
        except SignatureError:
            marker = ErrorMarker.from_json(self.storage.get_bytes(key, verify=False))
            if not marker.unconfigured:
                raise
            raise RemoteError(
                f"a function of job {self.job_id} could not start ({marker.service}, "
                f"unsigned report): {marker.error[:500]}. Check the deployment's "
                "settings (`distrdf-oscar status`; docs/deploy.md)"
            ) from None

    def _bookkeeping_due(self, what: int | str) -> bool:
        """Whether ``what`` was last listed ``bookkeeping_poll`` seconds ago or more (then it is now)."""
        now = time.monotonic()
        if now - self._looked.get(what, -math.inf) < self.options.bookkeeping_poll:
            return False
        self._looked[what] = now
        return True

    def _poll(self, tracker: Tracker, watches: list[Arrivals], slow: frozenset[int] = frozenset()) -> None:
        """Look for new objects; the error markers and the watches in ``slow`` (batch files) every
        ``bookkeeping_poll``."""
        if self._bookkeeping_due("errors"):
            self._handle_errors(tracker)
        for index, watch in enumerate(watches):
            if index not in slow or self._bookkeeping_due(index):
                watch.poll()
        tracker.observe(set().union(*(watch.found for watch in watches)))
        if not tracker.done:
            for trigger in tracker.overdue(self.idle, self.storage.exists):
                tracker.fire(trigger, self.storage.put_bytes)

    def _wait(
        self, job_plan: plan.JobPlan, triggers: dict[int, bytes], on_partial: Callable[[Any], None] | None
    ) -> None:
        calls, steps = len(job_plan.tasks), job_plan.steps()
        tracker = Tracker.for_plan(self.keys, job_plan, triggers, self.options.retry)
        self.tracker = tracker
        prefixes = [self.keys.prefix(folder) for folder in job_plan.watched_folders]
        expected = [item.key for item in tracker.expected]
        watches = [Arrivals(self.storage, prefix, expected) for prefix in prefixes]
        slow = frozenset(
            i for i, folder in enumerate(job_plan.watched_folders) if folder in (layout.QUEUE, layout.BATCHES)
        )
        claims = Arrivals(self.storage, self.keys.claims, [self.keys.claim(*task) for task in self._offered])
        self._claimed_at = time.monotonic()
        bar = _progress_bar(
            self.options.progress, calls + steps, self.job_id + (" (warm pool)" if self.pool else "")
        )
        failing_since: float | None = None
        hinted = False  # whether the user was told that nothing has started
        checked = started = time.monotonic()
        delivered: set[str] = set()
        try:
            while True:
                try:
                    self._poll(tracker, watches, slow)
                    if self._offered:
                        self._overflow(tracker, claims)
                    if self._pool_calls and self._bookkeeping_due("orphans"):
                        self._reoffer_orphans(tracker, job_plan)
                    now = time.monotonic()
                    self.lease.renew(now)
                    if now - checked >= self.options.alive_check:
                        self._check_not_removed()
                        checked = now
                    failing_since = None
                except StorageError as exc:
                    # Ride out a storage outage; give up on permanent errors or a long one.
                    failing_since = failing_since or time.monotonic()
                    if not exc.transient or time.monotonic() - failing_since > self.options.storage_patience:
                        raise
                mappers, reductions = tracker.counts()
                if mappers == calls:
                    self.timeline.setdefault("last_mapper", time.time())
                if tracker.done:
                    self.timeline["result_seen"] = time.time()
                # Every mapper partial reaches a live view, as with Dask, even one that arrived
                # together with the result.
                for key in tracker.mapper_outputs():
                    if on_partial is not None and key not in delivered:
                        delivered.add(key)
                        on_partial(self.fetch_partial(key, rows=False))
                if tracker.done:
                    bar.update(bar.total - bar.n)
                    self._outputs = {key: entry for watch in watches for key, entry in watch.objects.items()}
                    return
                bar.update(min(mappers, calls) + min(reductions, steps) - bar.n)
                running = len(claims.found) - mappers if self.pool else None
                retrying, failed = tracker.pending()
                bar.set_postfix_str(_states(mappers, calls, reductions, steps, running, retrying, failed))
                if not hinted and mappers == 0 and not claims.found and not failed:
                    hinted = self._hint_nothing_started(time.monotonic() - started, bar)
                # A job's first seconds are looked at more often: a small job is over by then.
                quick = time.monotonic() - started < QUICK_SECONDS
                time.sleep(
                    min(self.options.poll_interval, QUICK_POLL) if quick else self.options.poll_interval
                )
        finally:
            bar.close()

    def _hint_nothing_started(self, waited: float, bar: Any) -> bool:
        """After ``nothing_started_after`` seconds without a single output, claim or error, say
        what that usually means; True once said."""
        if waited < self.options.nothing_started_after:
            return False
        where = (
            "no warm pool worker has taken a call (the pool may be stopped or full)"
            if self.pool
            else "OSCAR may be pulling the function image (a first run), or the cluster lacks the "
            "capacity, or your Kueue quota admits none of the functions"
        )
        message = (
            f"job {self.job_id}: nothing has started in {waited:.0f} s: {where}; "
            "`distrdf-oscar check` tells which"
        )
        log.warning("%s", message)
        if self.options.progress:
            bar.write(message)
        return True

    def _check_not_removed(self) -> None:
        """Someone removed the job (``distrdf-oscar cleanup --job``): say so now, not as a timeout."""
        if not self.storage.exists(self.keys.manifest):
            raise JobRemoved(
                f"job {self.job_id} was removed from storage while this client waited for it "
                "(`distrdf-oscar cancel`, `cleanup --job`, or its objects deleted by hand); run it again"
            )

    # -- result -----------------------------------------------------------
    def fetch_partial(self, key: str, rows: bool = True) -> Any:
        """A partial as a ``TaskResult``; with ``rows``, its AsNumpy results filled from the
        mappers' row files (else empty: LiveVisualize draws histograms, and fetches often)."""
        return self._fetch_partial(key, rows)[0]

    def _fetch_partial(self, key: str, rows: bool = True) -> tuple[Any, partial.PartialMeta]:
        with tempfile.TemporaryDirectory(prefix="dro-result-") as workdir:
            path = os.path.join(workdir, "partial.root")
            self.storage.get_file(key, path)
            return partial.read_partial(path, fetch=self._fetch_rows if rows else None)

    def _keep_record(self, job_plan: plan.JobPlan, meta: partial.PartialMeta) -> None:
        """The job record (timeline.py): the client's observations and every call's phases."""
        functions = list(meta.functions)
        for call in functions:  # the partial each call wrote, which its own record travels in
            # (not the coordinator's: its task is the last batch file, written before its record)
            if call.role != "coordinator" and call.task in self._outputs:
                call.phases["uploaded"] = self._outputs[call.task].modified
                call.bytes_written += self._outputs[call.task].size
        pool_workers: set[str] = set()
        if self.pool:  # its workers: those alive now, and any that held a claim of the job and died since
            pool_workers = {beat.worker for beat in live_workers(self.storage)} | set(self._holders.values())
        self.record = timeline.JobRecord(
            job=self.job_id,
            mode=job_plan.mode,
            npartitions=job_plan.npartitions,
            calls=len(job_plan.tasks),
            pool=self.pool,
            client=dict(self.timeline),
            functions=functions,
            duplicates=len(self.storage.list(layout.JobKeys(self.job_id).duplicates)),
            requests=self.requests,
            pool_workers=sorted(pool_workers),
        )
        try:
            timeline.save(self.record)
        except OSError as exc:  # the result matters more than its record
            log.warning(
                "job %s: could not save its record in %s: %s", self.job_id, timeline.records_dir(), exc
            )

    def _fetch_rows(self, key: str, path: str) -> None:
        """A mapper's AsNumpy rows, which the result names (signed, like every object)."""
        if layout.job_of_key(key) != self.job_id:
            raise columns.PartialFormatError(
                f"the result of job {self.job_id} names {key!r}, which is not one of its objects"
            )
        self.storage.get_file(key, path)

    def cleanup(self) -> int:
        try:
            for key in self.storage.list(self.keys.function_records):
                role, oscar_job = self.keys.parse_function_record(key)
                self.functions.setdefault(role, []).append(oscar_job)
        except StorageError:
            pass  # only OSCAR's bookkeeping depends on it
        return remove_job(self.storage, self.job_id)

    def run(
        self,
        ranges: Sequence[Any],
        mapper: Callable[[Any], Any],
        files: JobFiles,
        on_partial: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run the job to completion and return the merged DistRDF ``TaskResult``; each mapper
        call processes the strategy's ``ranges_per_call`` consecutive ranges (the last call may
        have fewer). A pool job's calls are offered to the deployment's warm pool first."""
        job_plan = self.strategy.describe(len(ranges), self.job_id, self.options.coordinator_timeout)
        self.timeline["submitted"] = time.time()
        try:
            triggers = self._submit(ranges, mapper, files, job_plan)
            self._wait(job_plan, triggers, on_partial)
            task_result, meta = self._fetch_partial(self.keys.result)
            self._keep_record(job_plan, meta)
            snapshots.deliver(self.storage, self.keys, task_result, self.options.snapshots)
            return task_result
        finally:
            self.cleanup()


def _environment(mapper: Callable[[Any], Any], named: dict[str, list[tuple[str, str]]]) -> str:
    """A digest of what the job declares in a function's process: DistRDF's initialize functions
    and C++ code (keywords of its mapper), and the distributed files' names and contents. "" when
    the mapper is not DistRDF's (nothing is known of it, so no process is handed on)."""
    import hashlib

    import cloudpickle

    keywords = getattr(mapper, "keywords", None) or {}
    if "initialization_fn" not in keywords or "code_to_declare" not in keywords:
        return ""
    digest = hashlib.sha256(cloudpickle.dumps(keywords["initialization_fn"]))
    digest.update(str(keywords["code_to_declare"]).encode())
    for kind, entries in sorted(named.items()):
        for name, path in entries:
            with open(path, "rb") as f:
                digest.update(f"{kind}/{name}/{hashlib.file_digest(f, 'sha256').hexdigest()}".encode())
    return digest.hexdigest()


def _states(
    mappers: int, calls: int, reductions: int, steps: int, running: int | None, retrying: int, failed: int
) -> str:
    """The bar's account of the calls: done, running (known for a pool's: its claims), queued,
    retrying and failed (an error reported, a retry under way), then the reductions."""
    parts = [f"mappers {mappers}/{calls} done"]
    if running is not None:
        parts += [f"{max(running, 0)} running", f"{max(calls - mappers - running, 0)} queued"]
    parts += [f"{count} {what}" for count, what in ((retrying, "retrying"), (failed, "failed")) if count]
    return ", ".join(parts) + f"; reductions {reductions}/{steps}"


def _progress_bar(enabled: bool, total: int, label: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"distrdf-oscar {label}", unit="task", disable=not enabled, leave=False)


def _owner() -> str:
    """Who runs this client, as ``distrdf-oscar jobs`` shows it: user@host."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def remove_job(storage: Storage, job_id: str) -> int:
    """Delete a job's objects, the manifest first: a function that publishes after this
    point sees the manifest gone and withdraws its object (functions/context.py)."""
    keys = layout.JobKeys(job_id)
    storage.delete([keys.manifest])
    return sum(storage.delete_prefix(prefix) for prefix in keys.all_prefixes())


def find_jobs(storage: Storage) -> dict[str, int]:
    """Every job with objects in the bucket, and how many objects it has."""
    counts: dict[str, int] = {}
    for folder in layout.JOB_FOLDERS:
        for key in storage.list(folder + "/"):
            job_id = layout.job_of_key(key)
            if job_id is not None:
                counts[job_id] = counts.get(job_id, 0) + 1
    return counts
