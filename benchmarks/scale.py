"""Scale: the same job at many partitions, on the embedded platform vs ROOT's Dask backend.

For each partition count, in this one invocation: Dask (same workers), then the
embedded platform's tree (fan-in 4), coordinated (default plan) and auto reductions.
Besides wall time it records the tail (client saw the last mapper's output ->
client saw the result) and the CPU seconds the embedded S3 server burned, the
figure that grows with N² when a function or a poll lists whole folders.
The dataset has a cluster per 2000 entries (--cluster-entries): DistRDF never splits a
cluster, so with ROOT's default clustering (one cluster per file here) most of 1000 ranges
would be empty. Saves JSON and a PNG under --out. Needs the bench extra (dask[distributed]).

    python benchmarks/scale.py --events 4000000 --workers 2 --partitions 64 256 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import reporting  # benchmarks/reporting.py, beside this script

CLUSTER_ENTRIES = 2000  # 2000 clusters in 4 M events: every one of 1000 ranges gets entries


def storage_cpu_seconds(platform_pid: int) -> float:
    """CPU seconds used so far by the embedded platform's S3 server process (moto)."""
    import psutil

    servers = [
        p
        for p in psutil.Process(platform_pid).children(recursive=True)
        if "moto" in " ".join(p.cmdline()) or "s3server" in " ".join(p.cmdline())
    ]
    return sum(p.cpu_times().user + p.cpu_times().system for p in servers)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, nargs="+", default=[64, 256, 1000])
    parser.add_argument("--mode", default="warm", choices=["warm", "cold"])
    parser.add_argument(
        "--cluster-entries",
        type=int,
        default=CLUSTER_ENTRIES,
        help="entries per cluster of the dataset: DistRDF makes at most one non-empty range per "
        "cluster, so there must be more clusters than partitions",
    )
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    import ROOT
    from dask.distributed import Client, LocalCluster

    import distrdf_oscar as dro
    from distrdf_oscar.demo import analysis, dataset

    ROOT.gROOT.SetBatch(True)
    files = dataset.generate(args.data, args.events, files=args.files, cluster_entries=args.cluster_entries)
    clusters = dataset.clusters(files)
    print(f"dataset: {args.events} events in {len(files)} files, {clusters} clusters", flush=True)

    def run(executor, npartitions: int):
        df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=npartitions)
        start = time.perf_counter()
        spectrum = analysis.book_dimuon_spectrum(df)["spectrum"].GetValue().Clone()
        return time.perf_counter() - start, spectrum

    reference = analysis.book_dimuon_spectrum(ROOT.RDataFrame("Events", files))["spectrum"].GetValue().Clone()

    def identical(spectrum) -> bool:
        return all(
            spectrum.GetBinContent(i) == reference.GetBinContent(i) for i in range(reference.GetNbinsX() + 2)
        )

    report: dict = {
        "events": args.events,
        "files": len(files),
        "clusters": clusters,
        "workers": args.workers,
        "mode": args.mode,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "rows": [],
    }
    reductions = {
        "tree": dro.TreeReduction(fan_in=4),
        "coordinated": dro.CoordinatedReduction(),
        "auto": "auto",
    }
    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as dask_cluster,
        Client(dask_cluster) as client,
        dro.LocalCluster(workers=args.workers, mode=args.mode) as cluster,
    ):
        run(client, args.workers)  # both warm before timing: Dask's workers and ours have run a graph
        run(cluster.executor(progress=False), args.workers)
        for npartitions in args.partitions:
            dask_seconds, spectrum = run(client, npartitions)
            row = {"partitions": npartitions, "dask": dask_seconds, "dask_identical": identical(spectrum)}
            for name, reduction in reductions.items():
                executor = cluster.executor(reduction=reduction, progress=False)
                cpu_before = storage_cpu_seconds(cluster.platform.pid)
                seconds, spectrum = run(executor, npartitions)
                timeline = executor.last_job.timeline
                row[name] = {
                    "seconds": seconds,
                    "ratio_to_dask": seconds / dask_seconds,
                    "tail_seconds": timeline["result_seen"] - timeline["last_mapper"],
                    "storage_cpu_seconds": storage_cpu_seconds(cluster.platform.pid) - cpu_before,
                    "identical": identical(spectrum),
                }
                if executor.last_choice is not None:  # what auto picked for this size
                    row[name]["chose"] = executor.last_choice.describe()
            report["rows"].append(row)
            print(
                f"{npartitions:>5} partitions: dask {dask_seconds:6.2f} s | "
                + " | ".join(
                    f"{name} {row[name]['seconds']:6.2f} s ({row[name]['ratio_to_dask']:.2f}x, tail "
                    f"{row[name]['tail_seconds']:.2f} s, S3 CPU {row[name]['storage_cpu_seconds']:.1f} s)"
                    for name in reductions
                ),
                flush=True,
            )

    print(
        f"\n{'partitions':>10}  {'dask':>7}  "
        + "  ".join(f"{n + ' (vs dask, tail)':>30}" for n in reductions)
    )
    for row in report["rows"]:
        print(
            f"{row['partitions']:>10}  {row['dask']:6.2f}s  "
            + "  ".join(
                f"{row[n]['seconds']:>11.2f}s ({row[n]['ratio_to_dask']:.2f}x, {row[n]['tail_seconds']:.2f}s)"
                for n in reductions
            )
        )
    reporting.save(report, args.out, "scale", plot)
    return 0 if all(row[n]["identical"] for row in report["rows"] for n in reductions) else 1


def plot(report: dict, path: str) -> None:
    plt = reporting.pyplot()
    rows = report["rows"]
    partitions = [row["partitions"] for row in rows]
    fig, (ax_time, ax_tail) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax_time.plot(partitions, [row["dask"] for row in rows], "o-", color="#777", label="Dask")
    for name, color in (("tree", "#2a7"), ("coordinated", "#27a"), ("auto", "#a52")):
        if name not in rows[0]:
            continue  # a run from before auto was measured
        ax_time.plot(partitions, [row[name]["seconds"] for row in rows], "o-", color=color, label=f"{name}")
        ax_tail.plot(partitions, [row[name]["tail_seconds"] for row in rows], "o-", color=color, label=name)
    for ax, label in ((ax_time, "wall time (s)"), (ax_tail, "tail after the last mapper (s)")):
        ax.set_xscale("log")
        ax.set_xticks(partitions, [str(p) for p in partitions])
        ax.set_xlabel("partitions")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"{report['events']:,} events, {report['workers']} {report['mode']} workers")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
