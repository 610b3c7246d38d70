"""``distrdf-oscar``: demo on the embedded platform; deploy, status, undeploy, cleanup on a cluster.

Nothing here imports ROOT until a command needs it: ``--help``, ``--version`` and the commands
that only talk to OSCAR and the storage start in a tenth of a second, without ROOT's notice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client.executor import OSCARExecutor
    from .platform.deployment import Deployment

DESCRIPTION = (
    "ROOT's distributed RDataFrame as serverless functions on OSCAR: run the demo on the embedded "
    "platform; deploy, check, inspect and clean up a deployment on a cluster."
)
# Exit codes (docs/deploy.md): what went wrong, for scripts.
EXIT_OK = 0
EXIT_FOUND_PROBLEM = 1  # the command ran and found something wrong (a service missing, no such job)
EXIT_USAGE = 2  # bad arguments or settings (as argparse's own)
EXIT_OSCAR = 3  # OSCAR unreachable or refusing
EXIT_STORAGE = 4  # the object storage unreachable or failing
EXIT_INTERRUPTED = 130


def _reduction(args: argparse.Namespace) -> Any:
    from . import CoordinatedReduction, TreeReduction

    if args.reduction == "auto":
        return "auto"
    if args.reduction == "tree":
        return TreeReduction(fan_in=args.fan_in)
    batches = [int(x) for x in args.plan.split(",")] if args.plan else None
    return CoordinatedReduction(batches)


def _add_reduction_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reduction",
        choices=("auto", "tree", "coordinated"),
        default="auto",
        help="auto (default): the plan the simulator predicts fastest; tree: inline tree "
        "merges; coordinated: a coordinator batches partials",
    )
    parser.add_argument("--fan-in", type=int, default=4, help="tree reduction fan-in (default 4)")
    parser.add_argument("--plan", help="coordinated plan, e.g. 6,3 (default: about sqrt(N) per batch)")


def cmd_demo(args: argparse.Namespace) -> int:
    if args.npartitions < 1 or args.workers < 1 or args.events < 1 or args.files < 1:
        raise ValueError("--npartitions, --workers, --events and --files must be at least 1")
    import ROOT

    from . import LocalCluster
    from .demo import analysis, dataset

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
    identical = (
        all(
            local_spectrum.GetBinContent(i) == spectrum.GetBinContent(i)
            for i in range(spectrum.GetNbinsX() + 2)
        )
        and local["dimuons"].GetValue() == results["dimuons"].GetValue()
    )

    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "dimuon_spectrum.png")
    analysis.draw_spectrum(spectrum, png)
    print(
        f"events: {results['events'].GetValue()}, opposite-charge dimuons: {results['dimuons'].GetValue()}, "
        f"mean mass: {results['mean_mass'].GetValue():.4f} GeV"
    )
    print(f"spectrum saved to {png}")
    print(f"same as single-process RDataFrame, bin by bin: {'yes' if identical else 'NO'}")
    for name, seconds in timings.items():
        print(f"  {name:>16}: {seconds:7.2f} s")
    print(
        f"  ({args.mode} mode, {args.workers} workers, {args.npartitions} partitions, {args.reduction} reduction)"
    )
    if executor.last_choice is not None:
        print(f"  auto chose {executor.last_choice.describe()}")
    record = executor.last_job.record if executor.last_job is not None else None
    if record is not None:
        from .client import report

        print(report.summary(record))
        try:
            print(f"timeline saved to {report.gantt(record, os.path.join(args.out, 'dimuon_timeline.png'))}")
        except RuntimeError as exc:  # no matplotlib
            print(f"no timeline drawn: {exc}")
    return 0 if identical else 1


def _deployment(args: argparse.Namespace) -> Deployment:
    from .platform.deployment import Deployment

    settings = {k: getattr(args, k) for k in ("image", "memory", "cpu") if getattr(args, k, None)}
    variables = {}
    for item in args.env or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--env takes NAME=VALUE, got {item!r}")
        variables[name] = value
    users = tuple(getattr(args, "allowed_user", None) or ())
    return Deployment(
        name=args.deployment,
        variables=variables,
        visibility=getattr(args, "visibility", None),
        allowed_users=users,
        **settings,
    )


def _cluster_and_deployment(args: argparse.Namespace) -> OSCARExecutor:
    from .client.executor import OSCARExecutor

    return OSCARExecutor.from_env(
        cluster=getattr(args, "cluster", None),
        auto_deploy=False,
        progress=False,
        deployment=_deployment(args),
        dataset_credentials=getattr(args, "dataset_credentials", False),
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``7d`` -> seconds."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"--older-than takes a number with a unit s, m, h or d (e.g. 30m), got {text!r}")
    return float(number) * _UNITS[unit]


def cmd_upload(args: argparse.Namespace) -> int:
    """Upload local files to the deployment's object storage and print their s3:// URLs."""
    for url in _cluster_and_deployment(args).upload(args.files, folder=args.folder, progress=True):
        print(url)
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """List (and unless --dry-run remove) jobs whose clients are gone: interrupted, killed, crashed."""
    import time

    from .client.job import find_jobs, remove_job
    from .protocol import layout
    from .protocol.leases import job_states

    storage = _cluster_and_deployment(args).storage
    min_age = parse_duration(args.older_than) if args.older_than else 0.0
    found = find_jobs(storage)
    if args.job and args.job not in found:
        print(f"distrdf-oscar: job {args.job} has no objects in bucket {storage.bucket}", file=sys.stderr)
        return EXIT_FOUND_PROBLEM
    states = job_states(storage, {j: n for j, n in found.items() if not args.job or j == args.job})
    now = time.time()
    chosen = 0
    for job_id, state in sorted(states.items()):
        age = now - layout.job_created(job_id)
        what = f"{job_id}: {state.objects} objects, {age / 60:.0f} min old, {state.describe()}"
        if not args.job and (state.alive or age < min_age):
            print(f"{what}: kept")
            continue
        if state.alive:
            print(f"warning: {job_id} is alive: its client will fail when it is removed", file=sys.stderr)
        chosen += 1
        print(
            f"{what}: would be removed (dry run)"
            if args.dry_run
            else f"{what}: removed {remove_job(storage, job_id)} objects"
        )
    print(f"{chosen} job(s) {'to remove' if args.dry_run else 'removed'}; {len(found) - chosen} left alone")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """The deployment's jobs: owner, age, whether a client still waits, how far each got."""
    from .client.live_jobs import list_jobs

    jobs = list_jobs(_cluster_and_deployment(args).storage)
    if args.json:
        _print_json([job.to_dict() for job in jobs])
        return EXIT_OK
    print("job  owner  age  state  reduction  progress" if jobs else "no jobs")
    for job in jobs:
        print(job.describe())
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """The logs of a failed job's functions, as this machine's client recorded the failure."""
    from .client import failures
    from .client.settings import oscar_cluster

    record = failures.load(args.job)
    if record is None:
        print(
            f"distrdf-oscar logs: no failure of job {args.job} is recorded on this machine "
            f"({failures.path_of(args.job)}): only the client that ran a job keeps its failed functions' logs",
            file=sys.stderr,
        )
        return EXIT_FOUND_PROBLEM
    shown = 0
    for heading, text in failures.read_logs(oscar_cluster(cluster=args.cluster), record, args.task):
        print(f"=== {heading}\n{text.rstrip()}\n")
        shown += 1
    if not shown:
        print(f"distrdf-oscar logs: job {args.job} has no task or role {args.task!r}", file=sys.stderr)
        return EXIT_FOUND_PROBLEM
    return EXIT_OK


def _job_id(text: str) -> str:
    """A job id argument, refused by argparse (usage error, exit 2) when malformed."""
    from .protocol import layout

    try:
        return layout.check_job_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_cancel(args: argparse.Namespace) -> int:
    """Stop a job cleanly: its functions and pool workers drop it, its client is told, its objects go."""
    from .client.live_jobs import cancel

    storage = _cluster_and_deployment(args).storage
    removed = cancel(storage, args.job)
    if not removed:
        print(
            f"distrdf-oscar cancel: job {args.job} has no objects in bucket {storage.bucket}", file=sys.stderr
        )
        return EXIT_FOUND_PROBLEM
    print(f"job {args.job}: cancelled, {removed} objects removed")
    return EXIT_OK


def cmd_fdl(args: argparse.Namespace) -> int:
    from .platform.deployment import fdl_files

    for relpath, text in fdl_files(_deployment(args), args.cluster_id).items():
        path = os.path.join(args.out, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o755 if path.endswith(".sh") else 0o644)
        print(path)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    executor = _cluster_and_deployment(args)
    endpoint = urlsplit(executor.cluster.endpoint)
    if endpoint.scheme == "http" and endpoint.hostname not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: {executor.cluster.endpoint} is plain HTTP: the credentials and the signing key cross "
            "the network unencrypted",
            file=sys.stderr,
        )
    for name, what in executor.cluster.deploy(
        executor.deployment, executor.unchecked_storage(), force=args.force
    ).items():
        print(f"{name}: {what}")
    if executor.cluster.release() < (3, 6, 0):
        print(
            "warning: OSCAR before 3.6 never hands secrets to functions, so the signing key is an "
            "environment variable of the services, visible to whoever can read them: restrict them "
            "(--allowed-user) or upgrade OSCAR",
            file=sys.stderr,
        )
    return 0


def cmd_undeploy(args: argparse.Namespace) -> int:
    executor = _cluster_and_deployment(args)
    print(
        f"warning: the deployment's buckets ({', '.join(executor.deployment.buckets)}), with every job's data "
        "in them, will be removed with its services.",
        file=sys.stderr,
    )
    if not args.yes:
        print("nothing removed; re-run with --yes to proceed.", file=sys.stderr)
        return 2
    for name in executor.cluster.undeploy(executor.deployment, executor.unchecked_storage()):
        print(f"{name}: removed")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Read-only: needs OSCAR's settings, not the deployment's signing key."""
    from .client.settings import oscar_cluster
    from .platform.deployment import ROLES

    cluster, deployment = oscar_cluster(cluster=args.cluster), _deployment(args)
    version = cluster.info().get("version") or "?"
    services = cluster.services()
    rows: dict[str, dict[str, Any] | None] = {}
    for role in ROLES:
        name = deployment.service_name(role)
        service = services.get(name)
        rows[name] = (
            None
            if service is None
            else {
                "image": service.get("image"),
                "cpu": service.get("cpu"),
                "memory": service.get("memory"),
                "jobs": cluster.job_counts(name),
            }
        )
    missing = [name for name, row in rows.items() if row is None]
    if args.json:
        _print_json(
            {
                "oscar": cluster.endpoint,
                "version": version,
                "deployment": deployment.name,
                "buckets": deployment.buckets,
                "services": rows,
            }
        )
        return EXIT_FOUND_PROBLEM if missing else EXIT_OK
    print(
        f"OSCAR {cluster.endpoint} (version {version}); deployment {deployment.name!r}, "
        f"buckets {', '.join(deployment.buckets)}"
    )
    for name, row in rows.items():
        if row is None:
            print(f"{name}: not deployed")
            continue
        counts = ", ".join(f"{status.lower()} {n}" for status, n in row["jobs"].items())
        print(f"{name}: image {row['image']}, cpu {row['cpu']}, memory {row['memory']}; jobs: {counts}")
    return EXIT_FOUND_PROBLEM if missing else EXIT_OK


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def cmd_check(args: argparse.Namespace) -> int:
    """Check the cluster and the deployment end to end; stop at the first fault (check.py)."""
    from . import check

    try:
        check.run(lambda: _cluster_and_deployment(args), check.Report(), start_bound=args.start_timeout)
    except check.CheckFailed as failed:
        print(f"distrdf-oscar check: {failed.fault}: {failed}", file=sys.stderr)
        return failed.code
    print("every check passed")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """Print where a job's time went and draw its timeline (its record, timeline.py)."""
    from .client import report

    record = report.load(args.job)
    if args.json:
        _print_json(
            {
                "job": record.job,
                "mode": record.mode,
                "npartitions": record.npartitions,
                "calls": record.calls,
                "pool": record.pool,
                "client": record.client,
                "roles": report.role_costs(record),
                "cpu_used": report.cpu_used(record, args.price),
                "reserved": report.reservations(record, args.price, args.memory_price),
            }
        )
        return EXIT_OK
    print(report.summary(record, price=args.price, memory_price=args.memory_price))
    if not args.no_plot:
        path = report.gantt(record, args.out or f"{record.job}-timeline.png")
        print(f"timeline: {path}")
    return 0


def cmd_pool(args: argparse.Namespace) -> int:
    """Start, stop or show the deployment's warm pool (an OSCAR exposed service)."""
    executor = _cluster_and_deployment(args)
    if args.action == "start":
        done = executor.start_pool(args.size, wait=args.wait)
        print(f"pool {executor.deployment.service_name('pool')}: {done}, {args.size} worker(s) asked for")
    elif args.action == "stop":
        print(f"pool {executor.deployment.service_name('pool')}: {executor.stop_pool()}")
    workers = executor.pool_workers()
    if args.json:
        _print_json(
            {
                "pool": executor.deployment.service_name("pool"),
                "workers": [
                    {"worker": w.worker, "served": w.served, "jobs": list(w.jobs)}
                    for w in sorted(workers, key=lambda w: w.worker)
                ],
            }
        )
        return 0 if args.action != "start" or len(workers) >= args.size or not args.wait else 1
    print(
        f"live pool workers: {len(workers)}"
        + "".join(
            f"\n  {w.worker}: {w.served} call(s) served"
            + (f", now serving {', '.join(w.jobs)}" if w.jobs else "")
            for w in sorted(workers, key=lambda w: w.worker)
        )
    )
    return 0 if args.action != "start" or len(workers) >= args.size or not args.wait else 1


def main(argv: list[str] | None = None) -> int:
    from . import __version__
    from .platform.deployment import DEFAULT_CLUSTER_ID, SECRET_PLACEHOLDER

    parser = argparse.ArgumentParser(prog="distrdf-oscar", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"distrdf-oscar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the dimuon spectrum on the embedded platform")
    demo.add_argument("--events", type=int, default=1_000_000, help="events to generate (default 1000000)")
    demo.add_argument("--files", type=int, default=4, help="files to split the dataset into (default 4)")
    demo.add_argument(
        "--data",
        default=os.path.join(os.getcwd(), "dimuon-data"),
        help="dataset directory (default ./dimuon-data; reused if complete)",
    )
    demo.add_argument("--out", default=os.getcwd(), help="where to save dimuon_spectrum.png (default .)")
    demo.add_argument(
        "--workers", type=int, default=2, help="function slots of the local platform (default 2)"
    )
    demo.add_argument(
        "--mode",
        choices=("warm", "cold"),
        default="warm",
        help="warm (default): a warm pool of --workers workers, an OSCAR exposed service, beside "
        "the file-triggered functions; cold: no pool, every call a fresh process, as OSCAR's jobs",
    )
    demo.add_argument("--npartitions", type=int, default=8, help="entry ranges, one mapper each (default 8)")
    _add_reduction_flags(demo)
    demo.set_defaults(func=cmd_demo)

    def add_deployment_flags(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--cluster",
            metavar="NAME",
            help="a cluster of oscar-cli's configuration (~/.oscar-cli/config.yaml, or "
            "$DISTRDF_OSCAR_CLI_CONFIG), the environment's OSCAR_* variables winning (default: its "
            "default cluster when OSCAR_ENDPOINT is not set)",
        )
        command.add_argument(
            "--deployment",
            default=os.environ.get("DISTRDF_OSCAR_DEPLOYMENT", "distrdf"),
            help="deployment name, the prefix of its service names and its bucket "
            "(default $DISTRDF_OSCAR_DEPLOYMENT or distrdf)",
        )
        command.add_argument("--image", help="function image (default: this version's image)")
        command.add_argument(
            "--memory",
            help="memory of the mappers and reducers, a Kubernetes quantity "
            "(default 2Gi; the coordinator has 512Mi)",
        )
        command.add_argument("--cpu", help="CPU request of every function (default 1, the coordinator 0.25)")
        command.add_argument(
            "--env",
            action="append",
            metavar="NAME=VALUE",
            help="an environment variable of every function (repeatable; not for secrets)",
        )

    environment = (
        " Settings come from oscar-cli's configuration (--cluster) and the environment, which wins: "
        "OSCAR_ENDPOINT, OSCAR_USER/OSCAR_PASSWORD, OSCAR_TOKEN, OSCAR_OIDC_ACCOUNT or "
        "OSCAR_REFRESH_TOKEN, OSCAR_SSL_VERIFY, and DISTRDF_OSCAR_KEY (the deployment's signing key, "
        "or the file ~/.config/distrdf-oscar/<deployment>.key); see docs/deploy.md."
    )
    for name, func, text in (
        ("deploy", cmd_deploy, "create or update the services on an OSCAR cluster"),
        ("undeploy", cmd_undeploy, "remove the services (and their bucket) from the cluster"),
        ("status", cmd_status, "show the services and their recent jobs"),
        ("check", cmd_check, "check the cluster and the deployment end to end, with a tiny job"),
    ):
        command = sub.add_parser(name, help=text, description=text + "." + environment)
        add_deployment_flags(command)
        if name == "deploy":
            command.add_argument(
                "--force", action="store_true", help="update every service even if it looks unchanged"
            )
            command.add_argument(
                "--visibility",
                choices=("private", "public", "restricted"),
                help="who may use the services (OSCAR's visibility; default: keep what the "
                "cluster has, private for new services)",
            )
            command.add_argument(
                "--dataset-credentials",
                action="store_true",
                help="give the functions S3_ACCESS_KEY and S3_SECRET_KEY from this environment, "
                "as OSCAR secrets: the keys of s3http(s):// datasets on another S3 endpoint",
            )
            command.add_argument(
                "--allowed-user",
                action="append",
                metavar="USER",
                help="an OIDC user (subject) allowed to use the services; implies "
                "--visibility restricted (repeatable)",
            )
        if name == "undeploy":
            command.add_argument("--yes", action="store_true", help="confirm removal")
        if name == "status":
            command.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "check":
            command.add_argument(
                "--start-timeout",
                type=float,
                default=300.0,
                metavar="SECONDS",
                help="how long the test job's first function may take to start (default 300: an image pull)",
            )
        command.set_defaults(func=func)

    pool = sub.add_parser(
        "pool",
        help="start, stop or show the deployment's warm pool",
        description="A warm pool is an OSCAR exposed service whose workers import ROOT once and "
        "compute the mapper calls of every job while they live; jobs use it when it "
        "is up, and the file-triggered services otherwise." + environment,
    )
    pool.add_argument("action", choices=("start", "stop", "status"))
    pool.add_argument("--size", type=int, default=2, help="workers to run (start; default 2)")
    pool.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the workers to report (start; default: do not wait)",
    )
    pool.add_argument("--json", action="store_true", help="machine-readable output")
    add_deployment_flags(pool)
    pool.set_defaults(func=cmd_pool)

    from .client.report import DEFAULT_MEMORY_PRICE, DEFAULT_PRICE
    from .protocol.timeline import RECORDS_VARIABLE

    report = sub.add_parser(
        "report",
        help="where a job's time and money went, and its timeline",
        description="Read a job record (a file, a job id, or the newest record; records are "
        f"kept in ${RECORDS_VARIABLE} or ~/.local/state/distrdf-oscar/jobs), print "
        "the breakdown by role and draw a Gantt chart of its calls.",
    )
    report.add_argument("job", nargs="?", help="a job id or a record file (default: the newest record)")
    report.add_argument(
        "--price",
        type=float,
        default=DEFAULT_PRICE,
        help=f"price of one core-second, for the costs of the CPU used and of the CPU reserved (default "
        f"{DEFAULT_PRICE:g}: an assumed cloud vCPU's on-demand order of magnitude, about 0.04 an hour)",
    )
    report.add_argument(
        "--memory-price",
        type=float,
        default=DEFAULT_MEMORY_PRICE,
        help="price of one GiB-second of reserved memory (default "
        f"{DEFAULT_MEMORY_PRICE:g}: an assumption, about a ninth of the default core-second's, the ratio "
        "typical of serverless container pricing)",
    )
    report.add_argument("--out", help="the timeline PNG (default <job>-timeline.png here)")
    report.add_argument("--no-plot", action="store_true", help="print the breakdown only")
    report.add_argument("--json", action="store_true", help="the breakdown as JSON (draws nothing)")
    report.set_defaults(func=cmd_report)

    cleanup = sub.add_parser(
        "cleanup",
        help="find and remove orphaned job data in the deployment's bucket",
        description="Jobs a client could not clean up (killed, crashed) leave objects behind. "
        "A waiting client renews its job's lease; only jobs whose lease lapsed "
        "are removed, unless named with --job." + environment,
    )
    cleanup.add_argument(
        "--older-than", metavar="DURATION", help="only abandoned jobs older than this (e.g. 30m, 2h, 1d)"
    )
    cleanup.add_argument(
        "--job", metavar="ID", help="only this job, even if its client still waits (with a warning)"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    add_deployment_flags(cleanup)
    cleanup.set_defaults(func=cmd_cleanup)

    jobs = sub.add_parser(
        "jobs",
        help="list the deployment's jobs: owner, age, state, progress",
        description="Every job with objects in the deployment's buckets: who runs it (user@host), "
        "its age, whether its client still waits (alive) or is gone (lapsed), and how many of "
        "its mapper calls are done." + environment,
    )
    jobs.add_argument("--json", action="store_true", help="as JSON")
    add_deployment_flags(jobs)
    jobs.set_defaults(func=cmd_jobs)

    logs = sub.add_parser(
        "logs",
        help="print the logs of a failed job's functions",
        description="The logs of the functions whose failure ended a job (RemoteError names this "
        "command), read from OSCAR and then deleted there; a pool worker's report instead, whose "
        "output OSCAR does not serve. After a timeout, every function of the job. Only on the "
        "machine whose client ran the job." + environment,
    )
    logs.add_argument("job", metavar="JOB", type=_job_id, help="the job's id")
    logs.add_argument(
        "--task", metavar="T", help="only this task (e.g. mapper-000003_000004) or role (e.g. mapper)"
    )
    logs.add_argument(
        "--cluster", metavar="NAME", help="a cluster of oscar-cli's configuration, as for the other commands"
    )
    logs.set_defaults(func=cmd_logs)

    cancel = sub.add_parser(
        "cancel",
        help="stop a job: its functions drop it, its client is told, its objects go",
        description="Remove a job's manifest, then its objects: its functions and pool workers "
        "stop working for it within seconds and its waiting client raises JobRemoved." + environment,
    )
    cancel.add_argument("job", metavar="JOB", type=_job_id, help="the job's id (see `distrdf-oscar jobs`)")
    add_deployment_flags(cancel)
    cancel.set_defaults(func=cmd_cancel)

    upload = sub.add_parser(
        "upload",
        help="upload a local dataset to the deployment's object storage",
        description="Upload ROOT files to datasets/FOLDER/ in the deployment's bucket and "
        "print their s3:// URLs, one per line, to give RDataFrame." + environment,
    )
    upload.add_argument("files", nargs="+", metavar="FILE")
    upload.add_argument("--folder", default="", help="a folder under datasets/ (default: none)")
    add_deployment_flags(upload)
    upload.set_defaults(func=cmd_upload)

    fdl = sub.add_parser(
        "fdl",
        help="write the service scripts and an FDL file for oscar-cli",
        description="Write DIR/scripts/<role>.sh and DIR/fdl/<deployment>.yaml (an FDL file that "
        "`oscar-cli apply` accepts), generated from the same definitions as deploy; "
        f"secrets appear as {SECRET_PLACEHOLDER}.",
    )
    fdl.add_argument("--out", required=True, help="output directory (the repository's is services/)")
    fdl.add_argument(
        "--cluster-id",
        default=DEFAULT_CLUSTER_ID,
        help=f"the oscar-cli cluster id the FDL file names (default {DEFAULT_CLUSTER_ID})",
    )
    add_deployment_flags(fdl)
    fdl.set_defaults(func=cmd_fdl)

    args = parser.parse_args(argv)
    from .platform.oscar.errors import OSCARError
    from .protocol.storage import StorageError

    try:
        return int(args.func(args))
    except OSCARError as exc:
        return _fail(exc, EXIT_OSCAR)
    except StorageError as exc:
        return _fail(exc, EXIT_STORAGE)
    except (ValueError, FileNotFoundError) as exc:  # ConfigurationError, DatasetError, PlanError ...
        return _fail(exc, EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)


def _fail(problem: object, code: int) -> int:
    """One line on stderr, never a traceback: the exit code says what kind of failure it was."""
    print(f"distrdf-oscar: error: {problem}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
