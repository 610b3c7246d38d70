"""The fixed cost of a cold reducer function whose partials are all native, phase by phase.

Runs the dimuon analysis as file-triggered jobs of 2 partitions with a tree of reducer
functions (``TreeReduction(2, inline=False)``): the 2 mappers run side by side, then one
reducer function runs alone and merges their partials. Its fixed cost is everything but the
pod's start (emulated, ``POD_START_DELAY``): from its process start to ready (Python, the
imports, the plan and its group's checks), downloading its inputs, the merge (the native
core's load, ROOT's start included) and the upload, from the function's own timestamps.
Beside it, the same jobs' mappers' start-up (process start to ready: PyROOT's start and the
payload), which a reducer of native partials no longer pays. Saves JSON and a PNG.

    python benchmarks/reducer.py --jobs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import reporting  # benchmarks/reporting.py, beside this script

PHASES = (
    ("startup", "started", "ready"),
    ("inputs", "ready", "inputs"),
    ("merge", "inputs", "computed"),
    ("upload", "computed", "uploaded"),
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    import ROOT

    import distrdf_oscar as dro
    from distrdf_oscar.demo import analysis, dataset

    ROOT.gROOT.SetBatch(True)
    files = dataset.generate(args.data, args.events, files=2)
    reducers, mappers = [], []
    with dro.LocalCluster(workers=2, mode="cold") as cluster:
        executor = cluster.executor(
            reduction=dro.TreeReduction(fan_in=2, inline=False), progress=False, ranges_per_call=1
        )
        for _ in range(args.jobs):
            df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=2)
            analysis.book_dimuon_spectrum(df)["spectrum"].GetValue()
            for call in executor.last_job.record.functions:
                p = call.phases
                if call.role == "reducer":
                    reducers.append(
                        {name: p[end] - p[start] for name, start, end in PHASES}
                        | {"pod": p["started"] - p["invoked"], "cpu_seconds": call.cpu_seconds}
                    )
                elif call.role == "mapper":
                    mappers.append(p["ready"] - p["started"])
    for row in reducers:
        row["fixed"] = sum(row[name] for name, _, _ in PHASES)
        print(
            "  reducer: "
            + ", ".join(f"{name} {row[name]:.3f} s" for name in ("pod", *(n for n, _, _ in PHASES)))
            + f"; fixed cost {row['fixed']:.3f} s",
            flush=True,
        )
    fixed = statistics.median(r["fixed"] for r in reducers)
    mapper_startup = statistics.median(mappers)
    print(
        f"a cold native-only reducer's fixed cost: {fixed:.3f} s (median of {len(reducers)}; target 0.5 s); "
        f"a cold mapper's start-up alone: {mapper_startup:.3f} s ({fixed / mapper_startup:.2f}x)"
    )
    report = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "events": args.events,
        "reducers": reducers,
        "mapper_startup": mappers,
        "median_fixed": fixed,
        "median_mapper_startup": mapper_startup,
    }
    reporting.save(report, args.out, "reducer", plot)
    return 0


def plot(report: dict, path: str) -> None:
    plt = reporting.pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.4 * len(report["reducers"])))
    colours = {"startup": "#f0a030", "inputs": "#7fb3e0", "merge": "#7b4fbf", "upload": "#4d4d4d"}
    for row, reducer in enumerate(report["reducers"]):
        left = 0.0
        for name, _, _ in PHASES:
            ax.barh(row, reducer[name], left=left, color=colours[name], label=name if row == 0 else None)
            left += reducer[name]
    ax.axvline(
        report["median_mapper_startup"],
        color="k",
        linestyle="--",
        linewidth=1,
        label="a cold mapper's start-up (median)",
    )
    ax.set_yticks(range(len(report["reducers"])), [f"job {i + 1}" for i in range(len(report["reducers"]))])
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the reducer's process start (its pod's start not counted)")
    ax.set_title(f"cold native-only reducer: fixed cost {report['median_fixed']:.2f} s (median)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
