"""One job's process in a warm pool worker: forked from the worker's warm parent, it serves that
job's items and exits with the job, taking every trace of the job's code with it.

A warm parent (functions/pool.py) has imported ROOT and jitted a warm-up graph, and never runs user
code. For each job it forks a child, which inherits that warm state (as ROOT's own multi-process
executor forks after initialising cling) and nothing of any other job: cling declarations,
``initialize`` functions, loaded libraries, patched modules, ``gROOT``/``gRandom`` settings, the
working directory and the environment all die with the child. The child keeps DistRDF's graph
cache and the job's payload between its items, so a job's later calls in the same worker pay no
JIT again.

The parent talks to a child over a socket pair: each message is one pickled tuple.
``("item", key, body)`` asks for an item (a mapper call, a batch, the job's coordinator) whose
claim the parent holds; the child answers ``("done", key)`` when the item is computed or reported
as failed, and ``("coordinator-done", key)`` when its coordinator thread ends. End of file on
the socket tells the child to exit. The child's output goes to a file the parent reads when it
ends: the last lines of a crash report, and the pod's log.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ..protocol import layout
from ..protocol.messages import Batch, MapperTrigger
from ..protocol.plan import CoordinatedPlan, expect_plan
from ..protocol.storage import Storage, StorageError
from . import context

_PR_SET_PDEATHSIG = 1


Item = MapperTrigger | Batch | CoordinatedPlan


def die_with_parent() -> None:
    """In a forked child: the kernel kills it when its parent dies, so it never works for nobody."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def parse_item(key: str, body: bytes) -> Item:
    """A queued item, its signature verified (raises SignatureError, MessageError)."""
    name = key.rsplit("/", 1)[-1]
    if name == layout.COORDINATOR_ITEM:
        return expect_plan(body, CoordinatedPlan, f"pool worker taking {key}")
    if name.startswith("batch_"):
        return Batch.from_json(body)
    return MapperTrigger.from_json(body)


def warm_up(folder: str) -> None:
    """Run a small graph of the usual kinds, so that ROOT has parsed and instantiated what most
    jobs' graphs need before any job's process is forked: columns of NanoAOD's types read from a
    tree (counts, ``RVec`` of floats and ints, flags, weights), Filter and Define on them, vector
    operations, and the common actions (AsNumpy's Take and Snapshot included). A job's first call
    then jits only its own expressions (seen: the dimuon analysis 5 s -> 0.2 s). Only the warm-up's
    own names and RDataFrame's internal lambdas are declared; no user-visible state changes."""
    import ROOT

    path = os.path.join(folder, "warm-up.root")
    made = (
        ROOT.RDataFrame(64)
        .Define("nMuon", "UInt_t(rdfentry_ % 3)")
        .Define("event", "ULong64_t(rdfentry_)")
        .Define("Muon_pt", "ROOT::RVecF(nMuon, 20.f + rdfentry_)")
        .Define("Muon_eta", "ROOT::RVecF(nMuon, 0.5f)")
        .Define("Muon_charge", "ROOT::RVecI(nMuon, rdfentry_ % 2 ? 1 : -1)")
        .Define("Muon_tight", "ROOT::RVec<bool>(nMuon, true)")
        .Define("weight", "1.0 + 0.5 * (rdfentry_ % 2)")
        .Define("flag", "rdfentry_ % 2 == 0")
        .Define("run", "int(rdfentry_ / 10)")
    )
    columns = ["nMuon", "event", "Muon_pt", "Muon_eta", "Muon_charge", "Muon_tight", "weight", "flag", "run"]
    made.Snapshot("Events", path, columns)
    df = ROOT.RDataFrame("Events", path)
    two = (
        df.Filter("nMuon == 2")
        .Filter("Muon_charge[0] != Muon_charge[1]")
        .Define("mass", "ROOT::VecOps::InvariantMass(Muon_pt, Muon_eta, Muon_eta, Muon_pt)")
        .Define("good_pt", "Muon_pt[Muon_tight && abs(Muon_eta) < 2.4f]")
        .Define("lead", "Muon_pt[0]")
        .Define("ht", "Sum(Muon_pt)")
        .Define("n_good", "int(good_pt.size())")
    )
    spec = ("__dro_warm_up", "", 8, 0.0, 100.0)
    results = [
        df.Count(),
        two.Count(),
        two.Sum("ht"),
        two.Mean("mass"),
        two.Min("lead"),
        two.Max("run"),
        two.StdDev("weight"),
        two.Histo1D(spec, "mass"),
        two.Histo1D(spec, "lead", "weight"),
        two.Histo1D(spec, "Muon_pt"),
        two.Histo1D(spec, "n_good"),
        two.Histo2D((*spec, 8, 0.0, 100.0), "lead", "ht"),
        two.Profile1D(spec, "lead", "ht"),
        two.Take["float"]("lead"),
        two.Take["ROOT::RVecF"]("good_pt"),
        df.Filter("flag").Count(),
    ]
    for result in results:
        result.GetValue()
    two.AsNumpy(["lead", "event", "flag"])
    two.Snapshot("Events", path + ".copy", ["lead", "Muon_pt", "event"])
    for leftover in (path, path + ".copy"):
        os.remove(leftover)


@dataclasses.dataclass
class Spawned:
    pid: int
    conn: Connection
    output: str  # the child's stdout and stderr
    workdir: str  # its working directory, removed with it


def spawn(
    job_id: str,
    service: str,
    worker: str,
    make_storage: Callable[[], Storage],
    scratch: str,
    inherited: list[int],
) -> Spawned:
    """Fork the process that serves job ``job_id``; ``inherited`` are descriptors of the parent's
    (its probes' socket, other children's connections) that the child closes at once."""
    from multiprocessing import Pipe

    parent_end, child_end = Pipe(duplex=True)
    workdir = tempfile.mkdtemp(prefix="dro-job-", dir=scratch)
    output = workdir + ".output"  # beside it: a process handed on to another job has its folder emptied
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 1
        try:
            parent_end.close()
            for fd in inherited:
                with contextlib.suppress(OSError):
                    os.close(fd)
            status = _child(job_id, service, worker, make_storage, child_end, workdir, output)
        finally:
            os._exit(status)
    child_end.close()
    return Spawned(pid, parent_end, output, workdir)


def _child(
    job_id: str,
    service: str,
    worker: str,
    make_storage: Callable[[], Storage],
    conn: Connection,
    workdir: str,
    output: str,
) -> int:
    die_with_parent()
    if os.getppid() == 1:
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(workdir)  # files the job writes by relative name stay its own
    served = _JobServer(job_id, service, worker, make_storage(), conn)
    served.serve()
    sys.stdout.flush()
    sys.stderr.flush()
    return 0


class _JobServer:
    def __init__(self, job_id: str, service: str, worker: str, storage: Storage, conn: Connection) -> None:
        self.job_id, self.service, self.worker = job_id, service, worker
        self.storage = storage  # a client of its own: the parent's connections are not shared
        self.conn = conn
        self._send_lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            self.conn.send(message)

    def serve(self) -> None:
        while True:
            try:
                kind, key, body = self.conn.recv()
            except (EOFError, OSError):
                return
            if kind == "job":  # handed on to another job that declares the same (pool.py)
                self.job_id = key
                _empty(os.getcwd())
                continue
            if kind != "item":
                continue
            item = parse_item(key, body)
            if isinstance(item, CoordinatedPlan):
                # It only watches storage: a thread beside the job's calls.
                threading.Thread(
                    target=self._coordinate, args=(key, item), name="coordinator", daemon=True
                ).start()
                self.send(("started", key))
                continue
            self.compute(key, item)
            self.send(("done", key))

    def _coordinate(self, key: str, item: CoordinatedPlan) -> None:
        try:
            self.compute(key, item)
        finally:
            self.send(("coordinator-done", key))

    def compute(self, key: str, item: Item) -> None:
        from . import coordinator, mapper
        from .merging import merge_keys

        scratch = tempfile.mkdtemp(prefix="call-", dir=os.getcwd())
        now = time.time()  # the claim was just won: the call is invoked and starts now
        ctx = context.FunctionContext(
            service=self.service,
            input_path="",
            key=key,
            output_dir=scratch,
            storage=self.storage,
            worker=self.worker,
            invoked=now,
            started=now,
            thread_cpu=True,
        )
        role = (
            "batch"
            if isinstance(item, Batch)
            else "coordinator"
            if isinstance(item, CoordinatedPlan)
            else "mapper"
        )
        try:
            if isinstance(item, CoordinatedPlan):
                coordinator.run(ctx, item)
            elif isinstance(item, Batch):
                merge_keys(ctx, item.job, list(item.inputs), item.output, role="batch")
            else:
                # The claim is ours: a copy that finds it taken skips the call, so computing it must not.
                mapper.run(ctx, dataclasses.replace(item, claim=""))
        except BaseException as exc:  # noqa: BLE001 - reported to the job's client like any function's
            # SystemExit too: user code that exits ends its call, not the job's process.
            traceback.print_exc()
            with contextlib.suppress(StorageError):
                ctx.report_error(self.job_id, layout.JobKeys.reporter(role, key), exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _empty(folder: str) -> None:
    """Remove what a job left in the working directory: the next one finds it as a fresh process would."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)


def private_mb(pid: int) -> float:
    """Memory of a forked process that it does not share with its parent (``Private_*`` in
    ``smaps_rollup``), MB; infinite when unknown."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return sum(int(line.split()[1]) for line in rollup if line.startswith("Private_")) / 1024
    except (OSError, ValueError, IndexError):
        return float("inf")


def close_quietly(conn: Connection) -> None:
    with contextlib.suppress(OSError):
        conn.close()
