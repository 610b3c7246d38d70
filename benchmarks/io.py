"""Read throughput of the mappers: the same dataset from local disk, XRootD and object storage.

One embedded cluster (warm workers), one dataset, one analysis that reads every branch of
every event (a sum over each one); each source runs ``--repeat`` times and the best is kept.
For object storage the first run also stages the files into the warm workers' caches (reported
apart: "s3, first run"). Throughput is the dataset's size on disk over the job's wall time, in
total and per worker. Needs Debian's xrootd-server for the XRootD row (skipped without it).
Saves JSON and a PNG under --out.

    python benchmarks/io.py --events 10000000 --files 8 --workers 2 --npartitions 8

The original OSCAR prototype's MinIO reads stopped scaling at 32 mappers, at about 520 MB/s in
total; that figure is drawn beside these.

Then two choices a mapper makes, measured in this process on the first file split into
``--npartitions / --files`` ranges (what one mapper reads):
- XRootD: read the range directly through ``root://`` (what mappers do) vs copy the whole file to
  local disk first (``TFile::Cp``) and read the range there: per range (a cold function) and with
  the copy shared by all the file's ranges (one warm worker serving them all);
- object storage: the bytes a range's reading takes (``TFile::GetFileBytesRead`` on the local copy:
  what ranged GETs would fetch) vs the file's size (what whole-file staging fetches), and the time of
  a whole-file GET.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import reporting  # benchmarks/reporting.py, beside this script

PROTOTYPE_MB_S = 520.0  # the prototype's aggregate MinIO read rate at 32 mappers


def book(df):
    """Read every branch: one sum each (the vector branches through their sums per event)."""
    return [
        df.Sum("nMuon"),
        df.Define("pt", "Sum(Muon_pt)").Sum("pt"),
        df.Define("eta", "Sum(Muon_eta)").Sum("eta"),
        df.Define("phi", "Sum(Muon_phi)").Sum("phi"),
        df.Define("m", "Sum(Muon_mass)").Sum("m"),
        df.Define("q", "Sum(Muon_charge)").Sum("q"),
    ]


def run(make_df, repeat: int) -> tuple[list[float], list[float]]:
    seconds, values = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        values = [r.GetValue() for r in book(make_df())]
        seconds.append(time.perf_counter() - start)
    return seconds, values


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--npartitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "data"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()

    import ROOT

    import distrdf_oscar as dro
    from distrdf_oscar.demo import dataset
    from distrdf_oscar.platform.embedded.xrootd import XRootDMissing, XRootDServer

    ROOT.gROOT.SetBatch(True)
    files = dataset.generate(args.data, args.events, files=args.files)
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    print(
        f"dataset: {args.events:,} events in {len(files)} files, {megabytes:.0f} MB on disk; "
        f"{args.workers} warm workers, {args.npartitions} partitions"
    )
    reference = run(lambda: ROOT.RDataFrame("Events", files), 1)[1]
    report: dict = {
        "events": args.events,
        "files": len(files),
        "megabytes": megabytes,
        "workers": args.workers,
        "npartitions": args.npartitions,
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "prototype_minio_mb_s_at_32_mappers": PROTOTYPE_MB_S,
        "sources": {},
    }

    def record(name: str, seconds: list[float], values: list[float]) -> None:
        # Sums of doubles over ranges in another order: equal to within rounding.
        same = all(math.isclose(v, r, rel_tol=1e-9) for v, r in zip(values, reference, strict=True))
        best = min(seconds)
        report["sources"][name] = {
            "seconds": best,
            "runs": seconds,
            "mb_s": megabytes / best,
            "mb_s_per_worker": megabytes / best / args.workers,
            "identical": same,
        }
        print(
            f"{name:>18}: {best:6.2f} s  {megabytes / best:7.1f} MB/s in total, "
            f"{megabytes / best / args.workers:6.1f} per worker  same sums: {same}",
            flush=True,
        )

    server = None
    with dro.LocalCluster(workers=args.workers, mode="warm") as cluster:
        executor = cluster.executor(progress=False)
        remote = cluster.executor(progress=False, shared_paths=())  # nothing from the client's disk

        def on(executor, names):
            return lambda: ROOT.RDataFrame("Events", names, executor=executor, npartitions=args.npartitions)

        record("local disk", *run(on(executor, files), args.repeat))
        try:
            server = XRootDServer()
            urls = [server.add(f) for f in files]
            record("xrootd", *run(on(remote, urls), args.repeat))
        except XRootDMissing as missing:
            print(f"{'xrootd':>18}: skipped ({missing})")
        finally:
            if server is not None:
                server.close()
        urls = remote.upload(files, folder="io-benchmark", progress=False)
        first, values = run(on(remote, urls), 1)
        record("s3, first run", first, values)
        record("s3, cached", *run(on(remote, urls), args.repeat))
        report["choices"] = choices(
            ROOT, files[0], max(1, args.npartitions // len(files)), remote.storage, urls[0]
        )
        remote.storage.delete([url.split("/", 3)[3] for url in urls])

    reporting.save(report, args.out, "io", plot)
    return 0 if all(entry["identical"] for entry in report["sources"].values()) else 1


def _read_range(ROOT, name: str, begin: int, end: int) -> float:
    """Seconds to read every branch of entries [begin, end) of ``name``'s Events tree."""
    start = time.perf_counter()
    df = ROOT.RDataFrame("Events", name).Range(begin, end)
    for result in book(df):
        result.GetValue()
    return time.perf_counter() - start


def choices(ROOT, path: str, ranges: int, storage, s3_url: str) -> dict:
    """Direct XRootD reads vs staging whole files; the bytes a range reads vs the file's size."""
    import shutil
    import tempfile

    from distrdf_oscar.platform.embedded.xrootd import XRootDMissing, XRootDServer
    from distrdf_oscar.protocol.datasets import process_cache, read_urls_remotely

    read_urls_remotely(ROOT)
    entries = ROOT.RDataFrame("Events", path).Count().GetValue()
    bounds = [(entries * i // ranges, entries * (i + 1) // ranges) for i in range(ranges)]
    size = os.path.getsize(path)
    out: dict = {"file_bytes": size, "ranges": ranges, "entries": entries}
    folder = tempfile.mkdtemp(prefix="io-choices-")
    try:
        server = None
        try:
            server = XRootDServer()
            url = server.add(path)
            _read_range(ROOT, url, 0, 1)  # connect once: the server's start is nobody's cost
            direct = [_read_range(ROOT, url, b, e) for b, e in bounds]
            copies, staged = [], []
            for b, e in bounds:
                local = os.path.join(folder, f"copy{b}.root")
                start = time.perf_counter()
                if not ROOT.TFile.Cp(url, local, False):
                    raise RuntimeError(f"TFile::Cp {url} failed")
                copies.append(time.perf_counter() - start)
                staged.append(_read_range(ROOT, local, b, e))
            out["xrootd"] = {
                "direct_s": sum(direct),
                "staged_per_range_s": sum(copies) + sum(staged),
                "staged_once_s": min(copies) + sum(staged),
                "copy_s": min(copies),
            }
            print(
                f"xrootd, {ranges} ranges of one file: direct {sum(direct):.2f} s; staged per range "
                f"{sum(copies) + sum(staged):.2f} s; staged once {min(copies) + sum(staged):.2f} s "
                f"(copy {min(copies):.2f} s)"
            )
        except XRootDMissing as missing:
            print(f"xrootd choice: skipped ({missing})")
        finally:
            if server is not None:
                server.close()
        fractions = []
        for b, e in bounds:
            ROOT.TFile.SetFileBytesRead(0)
            _read_range(ROOT, path, b, e)
            fractions.append(ROOT.TFile.GetFileBytesRead() / size)
        bucket, key = s3_url[len("s3://") :].split("/", 1)
        start = time.perf_counter()
        storage.fetch_dataset(bucket, key, process_cache("io-benchmark").folder)
        whole = time.perf_counter() - start
        out["s3"] = {"range_read_fractions": fractions, "whole_file_get_s": whole}
        print(
            f"s3: a range reads {min(fractions):.0%}..{max(fractions):.0%} of its file's {size / 1e6:.1f} MB "
            f"(what ranged GETs would fetch); the whole-file GET took {whole:.2f} s"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def plot(report: dict, path: str) -> None:
    plt = reporting.pyplot()
    names = list(report["sources"])
    rates = [report["sources"][n]["mb_s"] for n in names]
    xrootd = report.get("choices", {}).get("xrootd")
    fig, axes = plt.subplots(2 if xrootd else 1, 1, figsize=(9, 7 if xrootd else 4), squeeze=False)
    ax = axes[0][0]
    reporting.labelled_bars(ax, names, rates, lambda v: f"{v:.0f} MB/s", "#2a7")
    ax.axvline(
        report["prototype_minio_mb_s_at_32_mappers"],
        color="k",
        linestyle="--",
        label="original prototype, MinIO, 32 mappers (aggregate)",
    )
    ax.set_xlabel("aggregate read throughput (MB/s of the dataset's size on disk)")
    ax.set_title(
        f"{report['events']:,} events, {report['megabytes']:.0f} MB, {report['workers']} warm workers"
    )
    ax.legend(loc="lower right")
    if xrootd:
        choice = report["choices"]
        labels = ["read directly", "staged per range", "staged once per worker"]
        reporting.labelled_bars(
            axes[1][0],
            labels,
            [xrootd["direct_s"], xrootd["staged_per_range_s"], xrootd["staged_once_s"]],
            lambda v: f"{v:.2f} s",
            "#27a",
        )
        axes[1][0].set_xlabel(f"seconds to read one file's {choice['ranges']} ranges through XRootD")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
