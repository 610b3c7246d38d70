"""``distrdf-oscar``: demo on the embedded platform; deploy, status, undeploy, cleanup on a cluster."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _reduction(args):
    from . import CoordinatedReduction, TreeReduction

    if args.reduction == "tree":
        return TreeReduction(fan_in=args.fan_in)
    batches = [int(x) for x in args.plan.split(",")] if args.plan else None
    return CoordinatedReduction(batches)


def _add_reduction_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reduction", choices=("tree", "coordinated"), default="tree",
                        help="tree: event-driven reducers; coordinated: a coordinator batches partials")
    parser.add_argument("--fan-in", type=int, default=4, help="tree reduction fan-in (default 4)")
    parser.add_argument("--plan", help="coordinated plan, e.g. 6,3 (default: about sqrt(N) per batch)")


def cmd_demo(args) -> int:
    import ROOT

    from . import LocalCluster, analysis, dataset

    timings = {}
    start = time.perf_counter()
    files = dataset.generate(args.data, args.events, files=args.files)
    timings["dataset"] = time.perf_counter() - start
    print(f"dataset: {args.events} events in {len(files)} files under {args.data}")

    start = time.perf_counter()
    with LocalCluster(workers=args.workers, mode=args.mode) as cluster:
        executor = cluster.executor(reduction=_reduction(args))
        timings["cluster start"] = time.perf_counter() - start
        start = time.perf_counter()
        df = ROOT.RDataFrame("Events", files, executor=executor, npartitions=args.npartitions)
        results = analysis.book_dimuon_spectrum(df)
        spectrum = results["spectrum"].GetValue()
        timings["distributed run"] = time.perf_counter() - start

    start = time.perf_counter()
    local = analysis.book_dimuon_spectrum(ROOT.RDataFrame("Events", files))
    local_spectrum = local["spectrum"].GetValue()
    timings["single process"] = time.perf_counter() - start
    identical = all(local_spectrum.GetBinContent(i) == spectrum.GetBinContent(i)
                    for i in range(spectrum.GetNbinsX() + 2)) and \
        local["dimuons"].GetValue() == results["dimuons"].GetValue()

    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "dimuon_spectrum.png")
    analysis.draw_spectrum(spectrum, png)
    print(f"events: {results['events'].GetValue()}, opposite-charge dimuons: {results['dimuons'].GetValue()}, "
          f"mean mass: {results['mean_mass'].GetValue():.4f} GeV")
    print(f"spectrum saved to {png}")
    print(f"same as single-process RDataFrame, bin by bin: {'yes' if identical else 'NO'}")
    for name, seconds in timings.items():
        print(f"  {name:>16}: {seconds:7.2f} s")
    print(f"  ({args.mode} mode, {args.workers} workers, {args.npartitions} partitions, {args.reduction} reduction)")
    return 0 if identical else 1


def _deployment(args):
    from .services.definitions import Deployment

    return Deployment(name=args.deployment, image=args.image) if args.image else Deployment(name=args.deployment)


def _cluster_and_deployment(args):
    from .executor import OSCARExecutor

    return OSCARExecutor.from_env(auto_deploy=False, deployment=_deployment(args))


def cmd_deploy(args) -> int:
    executor = _cluster_and_deployment(args)
    for name, outcome in executor.cluster.deploy(executor.deployment).items():
        print(f"{name}: {outcome}")
    return 0


def cmd_undeploy(args) -> int:
    executor = _cluster_and_deployment(args)
    if not args.yes:
        print(f"warning: OSCAR deletes a service's buckets with it; bucket {executor.deployment.bucket_name!r} "
              "and every job in it will be removed. Re-run with --yes to proceed.", file=sys.stderr)
        return 2
    for name in executor.cluster.undeploy(executor.deployment):
        print(f"{name}: removed")
    return 0


def cmd_status(args) -> int:
    from .services.definitions import ROLES

    executor = _cluster_and_deployment(args)
    services = executor.cluster.services()
    for role in ROLES:
        name = executor.deployment.service_name(role)
        service = services.get(name)
        if service is None:
            print(f"{name}: not deployed")
            continue
        jobs = executor.cluster.jobs(name).get("jobs", {})
        counts: dict[str, int] = {}
        for job in jobs.values():
            counts[job.get("status", "?")] = counts.get(job.get("status", "?"), 0) + 1
        summary = ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())) or "no jobs"
        print(f"{name}: image {service.get('image')}, cpu {service.get('cpu')}, jobs: {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distrdf-oscar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the dimuon spectrum on the embedded platform")
    demo.add_argument("--events", type=int, default=1_000_000, help="events to generate (default 1000000)")
    demo.add_argument("--files", type=int, default=4, help="files to split the dataset into (default 4)")
    demo.add_argument("--data", default=os.path.join(os.getcwd(), "dimuon-data"),
                      help="dataset directory (default ./dimuon-data; reused if complete)")
    demo.add_argument("--out", default=os.getcwd(), help="where to save dimuon_spectrum.png (default .)")
    demo.add_argument("--workers", type=int, default=2, help="function slots of the local platform (default 2)")
    demo.add_argument("--mode", choices=("warm", "cold"), default="warm", help="function start mode (default warm)")
    demo.add_argument("--npartitions", type=int, default=8, help="entry ranges, one mapper each (default 8)")
    _add_reduction_flags(demo)
    demo.set_defaults(func=cmd_demo)

    for name, func, text in (("deploy", cmd_deploy, "create or update the services on an OSCAR cluster"),
                             ("undeploy", cmd_undeploy, "remove the services (and their bucket) from the cluster"),
                             ("status", cmd_status, "show the services and their recent jobs")):
        command = sub.add_parser(name, help=text, description=text + ". Settings come from OSCAR_ENDPOINT, "
                                 "OSCAR_USER/OSCAR_PASSWORD or OSCAR_TOKEN, OSCAR_SSL_VERIFY.")
        command.add_argument("--deployment", default=os.environ.get("DISTRDF_OSCAR_DEPLOYMENT", "distrdf"),
                             help="deployment name (prefix of the service names, default distrdf)")
        command.add_argument("--image", help="function image (default: this version's image)")
        if name == "undeploy":
            command.add_argument("--yes", action="store_true", help="confirm removal")
        command.set_defaults(func=func)

    args = parser.parse_args(argv)
    from .executor import ConfigurationError
    from .platform.oscar import OSCARError

    try:
        return args.func(args)
    except (ConfigurationError, OSCARError, ValueError) as exc:
        print(f"distrdf-oscar: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
