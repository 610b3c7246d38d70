"""Large AsNumpy results: time and memory of distrdf-oscar vs ROOT's Dask backend vs one process.

Each configuration runs in its own child process, so that its client's peak RSS is its own; this
parent reads every process of the child's tree from /proc (VmHWM, the kernel's peak RSS per
process) while it runs. All configurations run in this one invocation on the same entries and
partitions. Saves JSON and a PNG under --out.

    python benchmarks/asnumpy.py --entries 50000000 --workers 2 --npartitions 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CONFIGS = ("one process", "dask", "oscar warm tree", "oscar warm coordinated")
COLUMNS = ["x", "y"]

import reporting  # benchmarks/reporting.py, beside this script


def book(df):
    df = df.Define("x", "sin(double(rdfentry_)) * 100.").Define("y", "double(rdfentry_ % 1000003) / 7.")
    return df.AsNumpy(COLUMNS, lazy=True)


def run_config(name: str, entries: int, workers: int, npartitions: int) -> dict:
    """Run one configuration here and describe it (in the child process)."""
    import hashlib
    import resource

    import numpy as np
    import ROOT

    ROOT.gROOT.SetBatch(True)
    closers = []
    if name == "one process":
        df = ROOT.RDataFrame(entries)
    elif name == "dask":
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
        client = Client(cluster)
        closers += [client.close, cluster.close]
        df = ROOT.RDataFrame(entries, executor=client, npartitions=npartitions)
    else:
        import distrdf_oscar as dro

        reduction = dro.TreeReduction(fan_in=4) if name.endswith("tree") else dro.CoordinatedReduction()
        oscar = dro.LocalCluster(workers=workers, mode="warm").start()
        closers.append(oscar.close)
        df = ROOT.RDataFrame(
            entries, executor=oscar.executor(reduction=reduction, progress=False), npartitions=npartitions
        )
    start = time.perf_counter()
    arrays = book(df).GetValue()
    seconds = time.perf_counter() - start
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for close in closers:
        close()
    # Digests of the values in order, and of the sorted values (Dask's merges reorder ranges).
    ordered = hashlib.sha256()
    as_set = hashlib.sha256()
    for column in COLUMNS:
        array = np.ascontiguousarray(arrays[column])
        ordered.update(array.tobytes())
        as_set.update(np.sort(array).tobytes())
    return {
        "seconds": seconds,
        "client_peak_bytes": client_peak,
        "length": len(arrays[COLUMNS[0]]),
        "dtypes": [str(arrays[c].dtype) for c in COLUMNS],
        "digest": ordered.hexdigest(),
        "sorted_digest": as_set.hexdigest(),
    }


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _peak_and_role(pid: int, root: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next((int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:")), 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if pid == root:
        return hwm, "client"
    if (
        "distrdf_oscar.functions" in cmdline
        or "embedded.prestarted" in cmdline
        or "multiprocessing" in cmdline
    ):
        return hwm, "worker"
    if "moto_server" in cmdline:
        return hwm, "S3 server (moto)"
    if "distrdf_oscar.platform.embedded" in cmdline:
        return hwm, "platform (OSCAR API, triggers)"
    return hwm, "other"


def measure(name: str, args) -> dict:
    """Run ``name`` in a child process, sampling the peak RSS of every process of its tree."""
    command = [
        sys.executable,
        __file__,
        "--config",
        name,
        "--entries",
        str(args.entries),
        "--workers",
        str(args.workers),
        "--npartitions",
        str(args.npartitions),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[int, str]] = {}
    while child.poll() is None:
        for pid in _tree(child.pid):
            seen = _peak_and_role(pid, child.pid)
            if seen is not None and seen[0] >= peaks.get(pid, (0, ""))[0]:
                peaks[pid] = seen
        time.sleep(0.1)
    output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise RuntimeError(f"configuration {name!r} failed (exit {child.returncode})")
    entry = json.loads(output.strip().splitlines()[-1])
    by_role: dict[str, int] = {}
    for peak, role in peaks.values():
        if role != "client":
            by_role[role] = max(by_role.get(role, 0), peak)
    entry["peak_bytes_by_role"] = by_role
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=50_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--npartitions", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.config:
        print(json.dumps(run_config(args.config, args.entries, args.workers, args.npartitions)))
        return 0

    megabytes = args.entries * 8 * len(COLUMNS) / 1e6
    print(
        f"AsNumpy of {args.entries:,} entries x {len(COLUMNS)} double columns ({megabytes:.0f} MB), "
        f"{args.workers} workers, {args.npartitions} partitions"
    )
    report: dict = {
        "entries": args.entries,
        "columns": COLUMNS,
        "result_mb": megabytes,
        "workers": args.workers,
        "npartitions": args.npartitions,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "configs": {},
    }
    for name in CONFIGS:
        entry = measure(name, args)
        report["configs"][name] = entry
        workers = entry["peak_bytes_by_role"].get("worker", 0)
        print(
            f"{name:>24}: {entry['seconds']:7.2f} s, client peak {entry['client_peak_bytes'] / 1e9:5.2f} GB, "
            f"worker peak {workers / 1e9:5.2f} GB",
            flush=True,
        )

    configs = report["configs"]
    reference, dask = configs["one process"], configs["dask"]
    for entry in configs.values():
        entry["identical_in_order"] = entry["digest"] == reference["digest"]
        entry["identical_as_set"] = entry["sorted_digest"] == reference["sorted_digest"]
        worker = entry["peak_bytes_by_role"].get("worker")
        dask_worker = dask["peak_bytes_by_role"].get("worker")
        entry["ratios_to_dask"] = {
            "time": entry["seconds"] / dask["seconds"],
            "client_peak": entry["client_peak_bytes"] / dask["client_peak_bytes"],
            "worker_peak": worker / dask_worker if worker and dask_worker else None,
        }
    print(
        f"\n{'configuration':>24}  {'time':>6}  {'client':>6}  {'worker':>6}  (x Dask)  same order  same values"
    )
    for name, entry in configs.items():
        ratios = entry["ratios_to_dask"]
        worker = f"{ratios['worker_peak']:6.2f}" if ratios["worker_peak"] else "     -"
        print(
            f"{name:>24}  {ratios['time']:6.2f}  {ratios['client_peak']:6.2f}  {worker}            "
            f"{entry['identical_in_order']!s:>5}       {entry['identical_as_set']}"
        )
    for role in ("S3 server (moto)", "platform (OSCAR API, triggers)"):
        peaks = ", ".join(
            f"{name} {entry['peak_bytes_by_role'][role] / 1e9:.2f} GB"
            for name, entry in configs.items()
            if role in entry["peak_bytes_by_role"]
        )
        print(f"peak of the embedded {role}: {peaks}")

    reporting.save(report, args.out, "asnumpy", plot)
    ours = [e for n, e in configs.items() if n.startswith("oscar")]
    return 0 if all(e["identical_in_order"] for e in ours) and dask["identical_as_set"] else 1


def plot(report: dict, path: str) -> None:
    plt = reporting.pyplot()
    names = list(report["configs"])
    panels = [
        ("seconds", "wall time (s)", 1),
        ("client_peak_bytes", "client peak RSS (GB)", 1e9),
        ("worker", "worker peak RSS (GB)", 1e9),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        values = [
            (
                report["configs"][n]["peak_bytes_by_role"].get("worker", 0)
                if key == "worker"
                else report["configs"][n][key]
            )
            / scale
            for n in names
        ]
        reporting.labelled_bars(
            ax,
            names,
            values,
            lambda v: f"{v:.1f}",
            ["#2a7" if n.startswith("oscar") else "#777" for n in names],
        )
        ax.set_xlabel(label)
    fig.suptitle(
        f"AsNumpy of {report['entries']:,} entries x {len(report['columns'])} doubles "
        f"({report['result_mb']:.0f} MB), {report['workers']} workers, {report['npartitions']} partitions"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
