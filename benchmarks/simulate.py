"""The simulator (distrdf_oscar.client.simulate) against real jobs and the prototype's figures, then its
predictions from 10 to 5000 mappers.

(a) Real jobs of the dimuon analysis on the embedded platform (LocalCluster) at 8, 16 and 32
    partitions, file-triggered ("cold") and on the warm pool ("warm"), tree and coordinated. Each
    job is predicted by the model calibrated from the job records of the *other* sizes of its mode
    (leave one size out), and compared with the time the client took to see its result. Then
    reduction="auto" runs at the same sizes, and is compared with the best of the fixed plans.
(b) The prototype's 80 mappers (PROTOTYPE preset): coordinated plans vs its binary tree, and tails.
(c) Predicted time to result for 10 to 5000 mappers on the prototype's 9020 s workload, for trees,
    coordinated plans and reduction="auto": with the prototype's costs and a slot per mapper, and
    on a warm pool of the prototype cluster's 80 workers.

Saves JSON and a PNG (reporting.py); the last line states auto against the binary tree at 1000
mappers. Needs the bench extra (matplotlib).

    python benchmarks/simulate.py                 # everything (a few minutes; a quiet machine)
    python benchmarks/simulate.py --no-measure    # (b) and (c) only: no platform, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import statistics
import time

import reporting  # benchmarks/reporting.py, beside this script

from distrdf_oscar.client import simulate
from distrdf_oscar.protocol import plan
from distrdf_oscar.protocol.plan import CoordinatedReduction, TreeReduction

SIZES = (8, 16, 32)
MODES = {"cold": False, "warm": True}  # LocalCluster mode -> pool
MEASURED_REDUCTIONS = {"tree": TreeReduction(fan_in=4), "coordinated": CoordinatedReduction()}
MAPPERS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
HEADLINE = 1000  # mappers
TARGET_ERROR = 0.15
AUTO_TARGET = 1.05  # auto's time over the best fixed plan's, at most


# -- (a) measured on the embedded platform -------------------------------------------------------


def measure(args) -> dict:
    import ROOT

    import distrdf_oscar as dro
    from distrdf_oscar.demo import analysis, dataset

    ROOT.gROOT.SetBatch(True)
    files = dataset.generate(args.data, args.events, files=args.files, cluster_entries=args.cluster_entries)
    print(
        f"(a) {args.events} events in {len(files)} files ({dataset.clusters(files)} clusters); {args.workers} workers; "
        f"{', '.join(map(str, SIZES))} partitions; best-effort timings on this machine",
        flush=True,
    )
    jobs, autos = [], []

    def run(executor, mode: str, name: str, npartitions: int) -> dict:
        started = time.perf_counter()
        df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=npartitions)
        analysis.book_dimuon_spectrum(df)["spectrum"].GetValue()
        wall = time.perf_counter() - started
        record = executor.last_job.record
        client = record.client
        job = {
            "mode": mode,
            "pool": record.pool,
            "reduction": name,
            "npartitions": npartitions,
            "calls": record.calls,
            "wall": wall,
            "measured": client["result_seen"] - client["submitted"],
            "record": record,
        }
        print(
            f"  {mode:>5} {name:>11} {npartitions:>3} partitions: {job['measured']:6.2f} s "
            f"to the result ({record.calls} calls)",
            flush=True,
        )
        return job

    for mode in MODES:
        with dro.LocalCluster(workers=args.workers, mode=mode) as cluster:
            for name, reduction in MEASURED_REDUCTIONS.items():
                executor = cluster.executor(reduction=reduction, progress=False)
                # A first job of the graph, not measured: the pool's workers JIT it once and keep it.
                analysis.book_dimuon_spectrum(
                    ROOT.RDataFrame("Events", files, executor=executor, npartitions=SIZES[0])
                )["spectrum"].GetValue()
                jobs += [run(executor, mode, name, n) for n in SIZES for _ in range(args.repeat)]
            # auto chooses from the job records of the mode (those above among them), as it would for a user.
            executor = cluster.executor(reduction="auto", progress=False)
            for npartitions in SIZES:
                for _ in range(args.repeat):
                    autos.append(run(executor, mode, "auto", npartitions))
                    autos[-1]["chose"] = executor.last_choice.describe()
    rows = []
    for mode, name, npartitions in itertools.product(MODES, MEASURED_REDUCTIONS, SIZES):
        runs = [j for j in jobs if (j["mode"], j["reduction"], j["npartitions"]) == (mode, name, npartitions)]
        # Leave one size out: the model knows the platform and the workload from the other sizes.
        calibration = simulate.calibrate(
            [j["record"] for j in jobs if j["mode"] == mode and j["npartitions"] != npartitions],
            one_workload=True,
        )
        calls = runs[0]["calls"]
        # The mean of a few draws when the calibrated model is random (uneven calls, latency spread).
        predicted = statistics.fmean(
            simulate.simulate(
                calibration.costs,
                npartitions,
                MEASURED_REDUCTIONS[name],
                calibration.workload,
                ranges_per_call=-(-npartitions // calls),
                seed=seed,
            ).time_to_result
            for seed in range(5)
        )
        measured = statistics.median(j["measured"] for j in runs)
        rows.append(
            {
                "mode": mode,
                "reduction": name,
                "npartitions": npartitions,
                "calls": calls,
                "measured": measured,
                "runs": [j["measured"] for j in runs],
                "wall": [j["wall"] for j in runs],
                "predicted": predicted,
                "error": predicted / measured - 1,
            }
        )
    print(
        f"\n  {'mode':>5} {'reduction':>11} {'N':>3} {'measured':>9} {'predicted':>10} {'error':>7}"
        "   (measured: the median of the runs; predicted: calibrated on the other sizes)"
    )
    for row in rows:
        print(
            f"  {row['mode']:>5} {row['reduction']:>11} {row['npartitions']:>3} {row['measured']:8.2f}s "
            f"{row['predicted']:9.2f}s {row['error']:+7.1%}"
        )
    worst = max(abs(r["error"]) for r in rows)
    print(
        f"  largest error {worst:.1%} (target {TARGET_ERROR:.0%}): {'within' if worst <= TARGET_ERROR else 'OUTSIDE'}"
    )
    versus = auto_versus_fixed(jobs, autos)
    whole = {
        mode: simulate.calibrate([j["record"] for j in jobs if j["mode"] == mode], one_workload=True)
        for mode in MODES
    }
    for mode, calibration in whole.items():
        print(f"  {mode} platform, calibrated from all its jobs: {calibration.costs}")
        print(f"  {mode} workload: {calibration.workload}")
    return {
        "events": args.events,
        "files": len(files),
        "workers": args.workers,
        "jobs": rows,
        "largest_error": worst,
        "auto": versus,
        "calibrated": {
            m: {"costs": dataclasses.asdict(c.costs), "workload": dataclasses.asdict(c.workload)}
            for m, c in whole.items()
        },
    }


def auto_versus_fixed(jobs: list[dict], autos: list[dict]) -> list[dict]:
    """auto's median time against the best fixed plan's, per mode and size."""
    rows = []
    print(f"\n  {'mode':>5} {'N':>3} {'best fixed plan':>22} {'auto':>7} {'ratio':>6}   auto's choice")
    for mode, npartitions in itertools.product(MODES, SIZES):
        fixed = {
            name: statistics.median(
                j["measured"]
                for j in jobs
                if (j["mode"], j["reduction"], j["npartitions"]) == (mode, name, npartitions)
            )
            for name in MEASURED_REDUCTIONS
        }
        best = min(fixed, key=fixed.__getitem__)
        runs = [j for j in autos if (j["mode"], j["npartitions"]) == (mode, npartitions)]
        auto = statistics.median(j["measured"] for j in runs)
        rows.append(
            {
                "mode": mode,
                "npartitions": npartitions,
                "best_fixed": best,
                "best_fixed_seconds": fixed[best],
                "auto_seconds": auto,
                "auto_runs": [j["measured"] for j in runs],
                "auto_chose": [j["chose"] for j in runs],
                "ratio": auto / fixed[best],
            }
        )
        print(
            f"  {mode:>5} {npartitions:>3} {best:>12} {fixed[best]:8.2f}s {auto:6.2f}s {auto / fixed[best]:5.2f}x"
            f"   {runs[-1]['chose']}"
        )
    worst = max(r["ratio"] for r in rows)
    print(
        f"  auto vs the best fixed plan, {SIZES[0]}-{SIZES[-1]} partitions: at worst {worst:.2f}x "
        f"(target {AUTO_TARGET:.2f}x): {'within' if worst <= AUTO_TARGET else 'OUTSIDE'}"
    )
    return rows


# -- (b) the prototype's 80 mappers ----------------------------------------------------------------

BINARY_TREE = TreeReduction(2, inline=False)  # the prototype's: a reducer function per partial


def prototype() -> dict:
    costs, work = simulate.PROTOTYPE, simulate.PROTOTYPE_WORKLOAD
    tree = simulate.simulate(costs, 80, BINARY_TREE, work)
    plans = {
        f"coordinated {p}": simulate.simulate(costs, 80, CoordinatedReduction(p), work)
        for p in [*simulate.two_level_plans(80), plan.auto_batches(80)]
    }
    best = min(plans, key=lambda name: plans[name].time_to_result)
    print(
        "\n(b) the prototype's 80 mappers (reported: 200.8 s coordinated, 238.9 s binary tree; tails 8-11 s "
        "and 34-48 s; each tree level 4-5 s)"
    )
    for name, result in [("binary tree", tree), *plans.items()]:
        print(f"  {name:>28}: {result.time_to_result:6.1f} s, tail {result.tail:5.1f} s")
    levels = [
        c.phases["written"] - c.phases["invoked"] for c in tree.calls if c.role == "reducer" and c.merged
    ]
    print(f"  tree levels: {min(levels):.1f} s at the fastest (a reducer's invocation to its output)")
    ordering = plans[best].time_to_result < tree.time_to_result
    print(f"  ordering reproduced (coordinated beats the binary tree): {ordering}")
    return {
        "binary_tree": {"seconds": tree.time_to_result, "tail": tree.tail},
        "coordinated": {n: {"seconds": r.time_to_result, "tail": r.tail} for n, r in plans.items()},
        "best_coordinated": best,
        "ordering_reproduced": ordering,
        "fastest_level": min(levels),
    }


# -- (c) predictions from 10 to 5000 mappers -------------------------------------------------------


POOL_WORKERS = 80


def sweep(costs: simulate.PlatformCosts, mappers: tuple[int, ...]) -> dict:
    """Time to result per series and number of mappers (one partition per mapper; auto may give a
    call several ranges): file-triggered with a slot per mapper, a pool with its 80 workers."""
    work = simulate.PROTOTYPE_WORKLOAD
    series: dict[str, dict[int, float]] = {}
    chosen: dict[int, str] = {}

    def put(name: str, n: int, seconds: float) -> None:
        series.setdefault(name, {})[n] = seconds

    for n in mappers:
        c = dataclasses.replace(costs, slots=POOL_WORKERS if costs.pool else n)
        for k in (2, 4, 8, 16):
            if not costs.pool:
                put(
                    f"tree({k}), reducer functions",
                    n,
                    simulate.simulate(c, n, TreeReduction(k, inline=False), work).time_to_result,
                )
            put(f"tree({k}), inline", n, simulate.simulate(c, n, TreeReduction(k), work).time_to_result)
        hand = min(
            simulate.simulate(c, n, CoordinatedReduction(p), work).time_to_result
            for p in simulate.two_level_plans(n)
        )
        put("best two-level hand plan ([6, 3] style)", n, hand)
        put(
            "coordinated, sqrt(N) batches",
            n,
            simulate.simulate(c, n, CoordinatedReduction(plan.auto_batches(n)), work).time_to_result,
        )
        one = simulate.choose(n, c, work, ranges_per_call=1)
        put("auto, one range per call", n, one.predicted)
        auto = simulate.choose(n, c, work)
        put("auto", n, auto.predicted)
        chosen[n] = f"{auto.reduction!r}, {auto.ranges_per_call} ranges per call"
    return {"costs": dataclasses.asdict(costs), "series": series, "auto_chose": chosen}


def predictions(mappers: tuple[int, ...]) -> dict:
    out = {}
    for costs in (simulate.PROTOTYPE, simulate.OSCAR_POOL):
        started = time.perf_counter()
        out[costs.name] = result = sweep(costs, mappers)
        slots = f"{POOL_WORKERS} pool workers" if costs.pool else "a slot per mapper"
        print(
            f"\n(c) {costs.name}: predicted seconds to the result, {slots}, 9020 s of work "
            f"({time.perf_counter() - started:.1f} s to simulate)"
        )
        names = list(result["series"])
        print("  " + f"{'mappers':>7} " + " ".join(f"{name[:14]:>14}" for name in names))
        for n in mappers:
            print("  " + f"{n:>7} " + " ".join(f"{result['series'][name][n]:14.1f}" for name in names))
        for n in mappers:
            print(f"  auto at {n}: {result['auto_chose'][n]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--no-measure",
        "--quick",
        dest="measure",
        action="store_false",
        help="skip (a): no embedded platform, only the model (seconds)",
    )
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument(
        "--cluster-entries",
        type=int,
        default=2000,
        help="entries per cluster: DistRDF makes at most one non-empty range per cluster",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--repeat", type=int, default=3, help="jobs per configuration and size (the median counts)"
    )
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument(
        "--out", default=os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks"))
    )
    args = parser.parse_args()

    report: dict = {"machine": platform.platform(), "cpus": os.cpu_count()}
    if args.measure:
        report["measured"] = measure(args)
    report["prototype"] = prototype()
    report["predictions"] = predictions(MAPPERS)
    proto = report["predictions"][simulate.PROTOTYPE.name]["series"]
    binary = proto["tree(2), reducer functions"][HEADLINE]
    hand = proto["best two-level hand plan ([6, 3] style)"][HEADLINE]
    auto, auto_one = proto["auto"][HEADLINE], proto["auto, one range per call"][HEADLINE]
    report["headline"] = {
        "mappers": HEADLINE,
        "binary_tree": binary,
        "best_hand_plan": hand,
        "auto": auto,
        "auto_one_range_per_call": auto_one,
    }
    reporting.save(report, args.out, "simulate", plot)
    print(
        f"\nat {HEADLINE} mappers with the prototype's costs (one mapper per partition, as the prototype ran; "
        "auto may give a call several ranges):"
    )
    print(
        f"  auto vs the best two-level hand plan: {hand / auto:.2f}x faster; with one range per call "
        f"(the plan alone) {binary / auto_one:.2f}x the binary tree, {hand / auto_one:.2f}x the hand plan"
    )
    print(f"auto vs binary tree at {HEADLINE} mappers: {binary / auto:.2f}x faster")
    return 0


def plot(report: dict, path: str) -> None:
    plt = reporting.pyplot()
    panels = 3 if "measured" in report else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.5))
    for ax, (name, result) in zip(axes[-2:], report["predictions"].items(), strict=True):
        for series, points in result["series"].items():
            style = {"linewidth": 2.5, "color": "k"} if series == "auto" else {"linewidth": 1.2}
            if series.startswith("auto,"):
                style = {"linewidth": 1.5, "color": "k", "linestyle": "--"}
            ax.plot(list(map(int, points)), list(points.values()), marker=".", label=series, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(
            f"mappers ({f'{POOL_WORKERS} pool workers' if name == simulate.OSCAR_POOL.name else 'a slot each'}"
            "; 9020 s of work in all)"
        )
        ax.set_ylabel("predicted seconds to the result")
        ax.set_title(f"{name} costs")
        ax.legend(fontsize=7)
    if "measured" in report:
        ax = axes[0]
        jobs = report["measured"]["jobs"]
        for mode, marker in (("cold", "o"), ("warm", "s")):
            for reduction, colour in (("tree", "#2a9d4a"), ("coordinated", "#c0399b")):
                chosen = [j for j in jobs if j["mode"] == mode and j["reduction"] == reduction]
                ax.scatter(
                    [j["measured"] for j in chosen],
                    [j["predicted"] for j in chosen],
                    marker=marker,
                    color=colour,
                    label=f"{mode}, {reduction}",
                    zorder=3,
                )  # above the band
        top = max(max(j["measured"], j["predicted"]) for j in jobs) * 1.1
        ax.plot([0, top], [0, top], "k-", linewidth=0.8)
        ax.fill_between([0, top], [0, top * (1 - TARGET_ERROR)], [0, top * (1 + TARGET_ERROR)], color="#ddd")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("measured seconds to the result (embedded platform)")
        ax.set_ylabel("predicted (calibrated on the other sizes)")
        ax.set_title(f"8, 16, 32 partitions: largest error {report['measured']['largest_error']:.0%}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
