"""A warm pool you can trust, measured: what isolating every job costs, how fast a crash and a
lost worker are handled, memory after large jobs, and what an idle pool costs.

Everything runs in this one invocation on this machine, side by side:
- a trivial job (``RDataFrame(1000)``, 2 partitions, a ``Sum``) on the warm pool and on ROOT's
  Dask backend (same workers), end to end at the client, and the pool's pick-up latency (queued ->
  claimed, from the job records);
- a segfault in a ``Filter``: seconds from the job's start to ``RemoteError``, and the next job
  exact;
- the dimuon analysis undisturbed, then with one of the two workers SIGKILLed mid-job: the ratio;
- twelve ``AsNumpy`` jobs of ``--asnumpy-events`` x 2 doubles: each worker's memory after the last
  against its warm baseline;
- an idle pool of ``--idle-workers`` workers for ``--idle-seconds``: storage requests per second
  per worker, from the storage front's counters.

    python benchmarks/pool.py --events 4000000 --asnumpy-events 20000000
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import threading
import time

import reporting  # benchmarks/reporting.py, beside this script


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def worker_pids(executor) -> dict[str, int]:
    return {beat.worker: int(beat.worker.rsplit("-", 2)[1]) for beat in executor.pool_workers()}


def trivial(report: dict, cluster, repeat: int) -> None:
    import ROOT
    from dask.distributed import Client, LocalCluster

    def job(executor) -> float:
        return (
            ROOT.RDataFrame(1000, executor=executor, npartitions=2)
            .Define("x", "double(rdfentry_)")
            .Sum("x")
            .GetValue()
        )

    with (
        LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True) as dask_cluster,
        Client(dask_cluster) as client,
    ):
        job(client)  # the workers' first ROOT import is not what is measured
        dask = [timed(lambda: job(client))[0] for _ in range(repeat)]
    executor = cluster.executor(progress=False)
    ours, pickups = [], []
    for _ in range(repeat):
        seconds, value = timed(lambda: job(executor))
        assert value == sum(range(1000))
        ours.append(seconds)
        record = executor.last_job.record
        claimed = min(call.phases["invoked"] for call in record.functions if call.role == "mapper")
        pickups.append(claimed - record.client["queued"])
    report["trivial"] = {
        "ours": ours,
        "dask": dask,
        "pickup": pickups,
        "ratio": statistics.median(ours) / statistics.median(dask),
    }
    print(
        f"trivial job: warm pool median {statistics.median(ours):.3f} s, Dask {statistics.median(dask):.3f} s "
        f"({report['trivial']['ratio']:.2f}x); pick-up (queued -> claimed) median "
        f"{statistics.median(pickups) * 1000:.0f} ms, max {max(pickups) * 1000:.0f} ms",
        flush=True,
    )


def crash(report: dict, cluster) -> None:
    import ROOT

    import distrdf_oscar as dro

    ROOT.RDF.Distributed.DistributeCppCode(
        "bool dro_bench_boom(double x) { if (x == 700) { volatile int *p = nullptr; *p = 1; } return true; }"
    )
    executor = cluster.executor(progress=False)
    began = time.perf_counter()
    try:
        ROOT.RDataFrame(1000, executor=executor, npartitions=2).Define("x", "double(rdfentry_)").Filter(
            "dro_bench_boom(x)"
        ).Count().GetValue()
        raise SystemExit("the crashing job did not fail")
    except dro.RemoteError as exc:
        seconds = time.perf_counter() - began
        first = str(exc).splitlines()[0]
    after = (
        ROOT.RDataFrame(1000, executor=cluster.executor(progress=False), npartitions=2)
        .Define("x", "double(rdfentry_)")
        .Sum("x")
        .GetValue()
    )
    report["crash"] = {
        "seconds_to_error": seconds,
        "error": first,
        "next_job_exact": after == sum(range(1000)),
    }
    print(
        f"segfault in a Filter: RemoteError {seconds:.1f} s after the job began ({first[:110]}...); next job "
        f"exact: {after == sum(range(1000))}",
        flush=True,
    )


def killed_worker(report: dict, cluster, files: list[str], npartitions: int) -> None:
    import ROOT

    from distrdf_oscar.demo import analysis
    from distrdf_oscar.protocol import layout

    def run(executor):
        return analysis.book_dimuon_spectrum(
            ROOT.RDataFrame("Events", files, executor=executor, npartitions=npartitions)
        )["spectrum"].GetValue()

    reference = analysis.book_dimuon_spectrum(ROOT.RDataFrame("Events", files))["spectrum"].GetValue()
    executor = cluster.executor(progress=False, ranges_per_call=1)
    run(executor)  # every worker has served this graph once
    undisturbed, _ = timed(lambda: run(executor))
    storage, killed, killed_at = executor.storage, [], []

    def kill_a_holder_mid_job() -> None:
        """Half-way through the undisturbed time, the worker holding a call is killed."""
        time.sleep(undisturbed / 2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            claims = [k for k in storage.list(layout.JOBS + "/") if "/claims/" in k and "group_" not in k]
            if claims:
                pid = int(storage.get_bytes(claims[0]).decode().rsplit("-", 2)[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                killed_at.append(time.monotonic() - started)
            time.sleep(0.05)

    thread = threading.Thread(target=kill_a_holder_mid_job)
    started = time.monotonic()
    thread.start()
    disturbed, spectrum = timed(lambda: run(executor))
    thread.join()
    exact = all(
        spectrum.GetBinContent(i) == reference.GetBinContent(i) for i in range(reference.GetNbinsX() + 2)
    )
    report["killed_worker"] = {
        "undisturbed": undisturbed,
        "disturbed": disturbed,
        "ratio": disturbed / undisturbed,
        "exact": exact,
        "killed": bool(killed),
        "killed_at": killed_at[0] if killed_at else None,
    }
    print(
        f"one of {cluster.workers} workers SIGKILLed mid-job: {disturbed:.1f} s vs {undisturbed:.1f} s undisturbed "
        f"({disturbed / undisturbed:.2f}x), exact: {exact}",
        flush=True,
    )
    deadline = time.monotonic() + 120  # the Deployment's replacement imports ROOT and reports
    while len(executor.pool_workers()) < cluster.workers and time.monotonic() < deadline:
        time.sleep(1)


def memory(report: dict, cluster, events: int, jobs: int) -> None:
    import ROOT

    executor = cluster.executor(progress=False)
    pids = worker_pids(executor)
    baseline = {worker: rss_mb(pid) for worker, pid in pids.items()}
    peaks = dict.fromkeys(pids, 0.0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            for worker, pid in pids.items():
                tree = [pid] + [int(e) for e in os.listdir("/proc") if e.isdigit() and _parent(int(e)) == pid]
                peaks[worker] = max(peaks[worker], sum(_rss_or_zero(p) for p in tree))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for _ in range(jobs):
        columns = (
            ROOT.RDataFrame(events, executor=executor, npartitions=4)
            .Define("x", "double(rdfentry_)")
            .Define("y", "x * 0.5")
            .AsNumpy(["x", "y"])
        )
        assert len(columns["y"]) == events
        del columns
    stop.set()
    thread.join()
    after = {worker: rss_mb(pid) for worker, pid in pids.items()}
    report["memory"] = {
        "baseline_mb": baseline,
        "after_mb": after,
        "peak_with_job_processes_mb": peaks,
        "grown_mb": {w: after[w] - baseline[w] for w in pids},
        "jobs": jobs,
        "events": events,
    }
    for worker in pids:
        print(
            f"worker {worker}: {baseline[worker]:.0f} MB warm, {after[worker]:.0f} MB after {jobs} AsNumpy jobs of "
            f"{events:,} x 2 doubles (+{after[worker] - baseline[worker]:.0f} MB); with its job's process at most "
            f"{peaks[worker]:.0f} MB",
            flush=True,
        )


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _rss_or_zero(pid: int) -> float:
    try:
        return rss_mb(pid)
    except (OSError, StopIteration):
        return 0.0


def idle(report: dict, workers: int, seconds: float) -> None:
    import distrdf_oscar as dro

    with dro.LocalCluster(workers=workers, mode="warm") as cluster:
        executor = cluster.executor(progress=False)
        names = set(worker_pids(executor))
        time.sleep(5)  # past the start-up's listings
        before = cluster.platform.storage_requests()
        time.sleep(seconds)
        after = cluster.platform.storage_requests()
        pool_key = cluster.deployment().service_name("pool")
        requests = after.get(pool_key, 0) - before.get(pool_key, 0)
    rate = requests / seconds / len(names)
    report["idle"] = {
        "workers": len(names),
        "seconds": seconds,
        "requests": requests,
        "per_second_per_worker": rate,
    }
    print(
        f"idle pool of {len(names)} workers for {seconds:.0f} s: {requests} storage requests, {rate:.2f} per second "
        "per worker",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events",
        type=int,
        default=12_000_000,
        help="dimuon events for the killed-worker job (about 12 s on two workers)",
    )
    parser.add_argument("--npartitions", type=int, default=24)
    parser.add_argument("--asnumpy-events", type=int, default=20_000_000)
    parser.add_argument("--asnumpy-jobs", type=int, default=12)
    parser.add_argument("--idle-workers", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=7, help="trivial jobs per backend")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data-pool"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    import ROOT

    import distrdf_oscar as dro
    from distrdf_oscar.demo import dataset

    ROOT.gROOT.SetBatch(True)
    os.makedirs(args.out, exist_ok=True)
    files = dataset.generate(args.data, args.events, files=4, cluster_entries=2000)
    report: dict = {"machine": platform.platform(), "cpus": os.cpu_count(), "workers": 2}
    with dro.LocalCluster(workers=2, mode="warm") as cluster:
        trivial(report, cluster, args.repeat)
        crash(report, cluster)
        killed_worker(report, cluster, files, args.npartitions)
        memory(report, cluster, args.asnumpy_events, args.asnumpy_jobs)
    idle(report, args.idle_workers, args.idle_seconds)
    reporting.save(report, args.out, "pool", plot)
    return 0


def plot(report: dict, path: str) -> None:
    plt = reporting.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    trivial = report["trivial"]
    axes[0].boxplot([trivial["ours"], trivial["dask"]], tick_labels=["warm pool", "Dask"])
    axes[0].set_title("trivial job, end to end (s)")
    killed = report["killed_worker"]
    reporting.labelled_bars(
        axes[1],
        ["undisturbed", "a worker killed"],
        [killed["undisturbed"], killed["disturbed"]],
        lambda v: f"{v:.1f} s",
        ["#2a7", "#c53"],
    )
    axes[1].set_title(f"dimuon job ({killed['ratio']:.2f}x)")
    memory = report["memory"]
    workers = list(memory["baseline_mb"])
    axes[2].bar(
        [f"w{i}" for i in range(len(workers))], [memory["baseline_mb"][w] for w in workers], label="warm"
    )
    axes[2].bar(
        [f"w{i}" for i in range(len(workers))],
        [memory["grown_mb"][w] for w in workers],
        bottom=[memory["baseline_mb"][w] for w in workers],
        label="growth after the jobs",
    )
    axes[2].set_title(f"worker memory after {memory['jobs']} AsNumpy jobs (MB)")
    axes[2].legend()
    fig.suptitle(
        f"crash reported in {report['crash']['seconds_to_error']:.1f} s; idle: "
        f"{report['idle']['per_second_per_worker']:.2f} requests/s per worker"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
