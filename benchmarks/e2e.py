"""End to end: the dimuon analysis on the embedded platform vs ROOT's Dask backend vs one process.

All configurations run in this one invocation on the same dataset, workers and
partitions, so the printed ratios compare like with like. Saves JSON and a PNG
under --out. Needs the bench extra (dask[distributed]).

    python benchmarks/e2e.py --events 10000000 --workers 2 --npartitions 8
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import reporting  # benchmarks/reporting.py, beside this script


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def run_analysis(make_df, repeat: int):
    """Book and run the analysis ``repeat`` times; returns (best seconds, spectrum, per-run seconds)."""
    from distrdf_oscar.demo import analysis

    seconds, spectrum = [], None
    for _ in range(repeat):
        elapsed, spectrum = timed(
            lambda: analysis.book_dimuon_spectrum(make_df())["spectrum"].GetValue().Clone()
        )
        seconds.append(elapsed)
    return min(seconds), spectrum, seconds


def isolation_cost(record) -> float:
    """What running each job in a process of its own cost the last run: the JIT of each worker's
    first mapper call, beyond the median of its later ones (which the process's own cache serves)."""
    import statistics

    jits: dict[str, list[float]] = {}
    for call in sorted(record.functions, key=lambda c: c.phases.get("invoked", 0.0)):
        if call.role == "mapper" and "jitted" in call.phases and "loop_started" in call.phases:
            jits.setdefault(call.worker, []).append(call.phases["jitted"] - call.phases["loop_started"])
    return sum(
        max(0.0, calls[0] - (statistics.median(calls[1:]) if calls[1:] else 0.0)) for calls in jits.values()
    )


def same_spectrum(a, b) -> bool:
    return all(a.GetBinContent(i) == b.GetBinContent(i) for i in range(a.GetNbinsX() + 2))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--npartitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2, help="runs per configuration; the best is reported")
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--skip-cold", action="store_true", help="leave out the cold-start configurations")
    args = parser.parse_args()

    import ROOT

    import distrdf_oscar as dro
    from distrdf_oscar.client.report import role_costs
    from distrdf_oscar.demo import dataset

    ROOT.gROOT.SetBatch(True)
    os.makedirs(args.out, exist_ok=True)
    generation, files = timed(lambda: dataset.generate(args.data, args.events, files=args.files))
    print(f"dataset: {args.events} events in {len(files)} files ({generation:.1f} s to generate or check)")
    report: dict = {
        "events": args.events,
        "files": len(files),
        "workers": args.workers,
        "npartitions": args.npartitions,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "configs": {},
    }

    def record(name, best, runs, spectrum, reference, **extra):
        report["configs"][name] = {
            "seconds": best,
            "runs": runs,
            "identical": reference is None or same_spectrum(spectrum, reference),
            **extra,
        }
        print(f"{name:>28}: {best:7.2f} s  (runs: {', '.join(f'{r:.2f}' for r in runs)})", flush=True)

    best, reference, runs = run_analysis(lambda: ROOT.RDataFrame("Events", files), args.repeat)
    record("one process", best, runs, reference, None)

    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        best, spectrum, runs = run_analysis(
            lambda: ROOT.RDataFrame("Events", files, executor=client, npartitions=args.npartitions),
            args.repeat,
        )
        record("dask", best, runs, spectrum, reference)

    modes = ["warm"] if args.skip_cold else ["warm", "cold"]
    # auto: per job, the plan and ranges per call the simulator predicts fastest (docs/simulator.md)
    reductions = {
        "tree": dro.TreeReduction(fan_in=4),
        "coordinated": dro.CoordinatedReduction(),
        "auto": "auto",
    }
    for mode in modes:
        started, cluster = timed(lambda mode=mode: dro.LocalCluster(workers=args.workers, mode=mode).start())
        try:
            for name, reduction in reductions.items():
                executor = cluster.executor(reduction=reduction, progress=False)
                best, spectrum, runs = run_analysis(
                    lambda executor=executor: ROOT.RDataFrame(
                        "Events", files, executor=executor, npartitions=args.npartitions
                    ),
                    args.repeat,
                )
                timeline = executor.last_job.timeline
                tail = timeline.get("result_seen", 0) - timeline.get(
                    "last_mapper", timeline.get("result_seen", 0)
                )
                # Each role's fixed costs by phase, from the functions' own timestamps (the last run's).
                costs = role_costs(executor.last_job.record)
                chose = executor.last_choice.describe() if executor.last_choice is not None else None
                isolation = isolation_cost(executor.last_job.record) if mode == "warm" else None
                record(
                    f"oscar {mode} {name}",
                    best,
                    runs,
                    spectrum,
                    reference,
                    tail_seconds=tail,
                    cluster_start_seconds=started,
                    roles=costs,
                    chose=chose,
                    isolation_seconds=isolation,
                )
                if isolation is not None:
                    print(
                        f"{'':>30}isolation: {isolation:.2f} s of JIT in the job's first call per worker "
                        "(0 when a process of an earlier job declaring the same was handed on)"
                    )
                if chose:
                    print(f"{'':>30}auto chose {chose}")
                for role, c in costs.items():
                    print(
                        f"{'':>30}{role}: {c['calls']:.0f} calls, waiting {c['waiting']:.2f} s, start-up "
                        f"{c['startup']:.2f} s, JIT {c['jit']:.2f} s, compute {c['compute']:.2f} s, upload "
                        f"{c['upload']:.2f} s (means per call)"
                    )
            # Per-invocation overhead: a trivial one-range job.
            executor = cluster.executor(progress=False)
            overhead = [
                timed(
                    lambda executor=executor: (
                        ROOT.RDataFrame(1, executor=executor, npartitions=1).Count().GetValue()
                    )
                )[0]
                for _ in range(3)
            ]
            report["configs"][f"oscar {mode} tree"]["trivial_job_seconds"] = overhead
            print(f"{'trivial job (' + mode + ')':>28}: {', '.join(f'{o:.2f}' for o in overhead)} s")
        finally:
            cluster.close()

    configs = report["configs"]
    single = configs["one process"]["seconds"]
    dask = configs["dask"]["seconds"]
    print(f"\nideal (one process / workers): {single / args.workers:.2f} s")
    print(f"{'configuration':>28}  {'vs dask':>8}  {'vs one process':>14}  {'tail':>6}  identical")
    for name, entry in configs.items():
        entry["ratio_to_dask"] = entry["seconds"] / dask
        entry["ratio_to_one_process"] = entry["seconds"] / single
        tail = f"{entry['tail_seconds']:.2f}" if "tail_seconds" in entry else "-"
        print(
            f"{name:>28}  {entry['ratio_to_dask']:8.2f}  {entry['ratio_to_one_process']:14.2f}  {tail:>6}  "
            f"{entry['identical']}"
        )

    for mode in modes:
        fixed = {name: configs[f"oscar {mode} {name}"]["seconds"] for name in reductions if name != "auto"}
        best_fixed = min(fixed, key=lambda name: fixed[name])
        ratio = configs[f"oscar {mode} auto"]["seconds"] / fixed[best_fixed]
        configs[f"oscar {mode} auto"]["vs_best_fixed"] = ratio
        print(
            f"auto vs the best fixed plan ({mode}: {best_fixed}): {ratio:.2f}x its time "
            f"({'within' if ratio <= 1.05 else 'MORE than'} 5% slower)"
        )

    reporting.save(report, args.out, "e2e", plot)
    return 0 if all(entry["identical"] for entry in configs.values()) else 1


def plot(report: dict, path: str) -> None:
    plt = reporting.pyplot()
    names = list(report["configs"])
    seconds = [report["configs"][n]["seconds"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    reporting.labelled_bars(
        ax,
        names,
        seconds,
        lambda v: f"{v:.1f} s",
        ["#777" if not n.startswith("oscar") else "#2a7" for n in names],
    )
    ideal = report["configs"]["one process"]["seconds"] / report["workers"]
    ax.axvline(ideal, color="k", linestyle="--", label=f"one process / {report['workers']} workers")
    ax.set_xlabel("wall time of the dimuon analysis (s)")
    ax.set_title(
        f"{report['events']:,} events, {report['workers']} workers, {report['npartitions']} partitions"
    )
    ax.legend(loc="upper right")  # the top bars (one process, Dask) end well before the longest
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
