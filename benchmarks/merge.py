"""Merging K partial results: native n-way vs the prototype's pairwise Python merge vs hadd.

For each K, in this one run and on the same content:

- native: ``partial.merge_partials`` over partial files written by ``partial.write_partial``
  (what the reducers do), and ``_core.merge_files`` alone on the same files;
- pairwise: what the original OSCAR prototype's reducer did: read each pickled DistRDF
  ``TaskResult``, unpickle it and merge two at a time with ``distrdf_reducer``;
- ``hadd -f`` and ``rootmerge -f`` on the native partial files (subprocesses).

Each partial holds what a mapper of the dimuon analysis would return, built as real DistRDF
mergeables: a 30000-bin TH1D (a falling dimuon mass spectrum with resonances, ENTRIES entries),
a 100x100 TH2D and 10 scalar results (Count, Sum, Min, Max). The files are in the page cache
for every method (they were just written), so the figures compare merging, not disk reads.

    python benchmarks/merge.py                       # K = 16 64 256 1024, 3 repeats
    python benchmarks/merge.py --sizes 16,64,256
    python benchmarks/merge.py --quick               # a small run to check it works

Prints a table with ratios and PASS/FAIL lines for the targets at K=256 (never asserts), and saves
JSON and a PNG (log-log time vs K) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import distrdf_oscar  # noqa: F401
except ImportError:  # a source checkout without install
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

NS = "ROOT::Detail::RDF::"
SPECTRUM = (30000, 0.25, 300.0)  # binning of the df102 dimuon spectrum
TARGET_K = 256
METHODS = ("native", "core", "pairwise", "hadd", "rootmerge")
LABELS = {
    "native": "native (merge_partials)",
    "core": "native (_core.merge_files only)",
    "pairwise": "pairwise Python (unpickle + distrdf_reducer)",
    "hadd": "hadd -f",
    "rootmerge": "rootmerge -f",
}


def find_rootmerge() -> str | None:
    found = shutil.which("rootmerge")
    if found:
        return found
    env = os.environ.get("ROOTMERGE")
    return env if env and os.access(env, os.X_OK) else None


def find_hadd(ROOT) -> str | None:
    path = os.path.join(os.path.dirname(ROOT.__file__), "bin", "hadd")
    return path if os.access(path, os.X_OK) else shutil.which("hadd")


# ---------------------------------------------------------------------------------------------
# Content


def dimuon_masses(rng, n: int) -> np.ndarray:
    """A falling continuum (power law from 0.25 GeV) with the J/psi, psi', Upsilon and Z peaks."""
    shares = {"continuum": 0.78, "jpsi": 0.10, "psi2s": 0.015, "upsilon": 0.045}
    counts = {k: int(n * v) for k, v in shares.items()}
    counts["z"] = n - sum(counts.values())
    return np.concatenate(
        [
            0.25 * (1.0 - rng.random(counts["continuum"])) ** (-1.0 / 1.1),
            rng.normal(3.097, 0.03, counts["jpsi"]),
            rng.normal(3.686, 0.035, counts["psi2s"]),
            rng.normal(9.46, 0.08, counts["upsilon"]),
            rng.normal(91.19, 2.5, counts["z"]),
        ]
    )


def make_task_result(ROOT, seed: int, entries: int):
    """A DistRDF TaskResult with real mergeables, as a mapper of the dimuon analysis returns it."""
    from ROOT._distrdf.Backends.Base import TaskResult

    rng = np.random.default_rng(seed)
    masses = dimuon_masses(rng, entries)
    status = ROOT.TH1.AddDirectoryStatus()
    ROOT.TH1.AddDirectory(False)
    try:
        spectrum = ROOT.TH1D("Dimuon_mass", "Dimuon mass;m_{#mu#mu} (GeV);N_{Events}", *SPECTRUM)
        spectrum.FillN(len(masses), masses, ROOT.nullptr)
        n2 = max(1, entries // 5)
        pt_eta = ROOT.TH2D("pt_eta", "p_{T} vs #eta", 100, 0, 100, 100, -2.5, 2.5)
        pt_eta.FillN(n2, rng.exponential(15.0, n2), rng.normal(0.0, 1.2, n2), ROOT.nullptr)
    finally:
        ROOT.TH1.AddDirectory(status)
    make = ROOT.distrdf_oscar.MakeMergeable
    events = int(entries * 2.5)
    mergeables = [
        make[NS + "RMergeableFill<TH1D>", "TH1D"](spectrum),
        make[NS + "RMergeableFill<TH2D>", "TH2D"](pt_eta),
        make[NS + "RMergeableCount", "ULong64_t"](events),
        make[NS + "RMergeableCount", "ULong64_t"](entries),
        make[NS + "RMergeableSum<double>", "double"](float(masses.sum())),
        make[NS + "RMergeableSum<double>", "double"](float((masses**2).sum())),
        make[NS + "RMergeableSum<double>", "double"](float(rng.exponential(20.0, entries).sum())),
        make[NS + "RMergeableSum<double>", "double"](float(rng.normal(0.0, 1.0, entries).sum())),
        make[NS + "RMergeableMax<double>", "double"](float(masses.max())),
        make[NS + "RMergeableMax<double>", "double"](float(rng.exponential(20.0, 100).max())),
        make[NS + "RMergeableMin<double>", "double"](float(masses.min())),
        make[NS + "RMergeableMin<double>", "double"](float(rng.normal(0.0, 1.0, 100).min())),
    ]
    return TaskResult(mergeables, None)


def generate(ROOT, workdir: str, count: int, entries: int) -> tuple[list[str], list[str]]:
    """``count`` partials, each written natively and as the pickled TaskResult."""
    from distrdf_oscar.protocol import partial

    natives, pickles = [], []
    for i in range(count):
        result = make_task_result(ROOT, seed=1000 + i, entries=entries)
        native = os.path.join(workdir, f"partial_{i:05d}.root")
        partial.write_partial(
            native,
            result,
            job_id="bench",
            range_id=i,
            columns_file=partial.ColumnsFile(native + ".rows", native + ".rows"),
        )
        pickled = os.path.join(workdir, f"partial_{i:05d}.pkl")
        with open(pickled, "wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
        natives.append(native)
        pickles.append(pickled)
    return natives, pickles


# ---------------------------------------------------------------------------------------------
# The methods; each returns a function that does one merge of ``k`` partials and returns its output.


def pairwise_merge(pickles: list[str]):
    """The prototype's reducer: unpickle each TaskResult, merge two at a time."""
    from ROOT._distrdf.Backends.Base import distrdf_reducer

    merged = None
    for path in pickles:
        with open(path, "rb") as f:
            result = pickle.load(f)
        merged = result if merged is None else distrdf_reducer(merged, result)
    return merged


def run_command(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def reported_seconds(stdout: str) -> float | None:
    """The merge time rootmerge prints in its summary line (without process start-up)."""
    match = re.search(r" in ([0-9.]+) s$", stdout.strip())
    return float(match.group(1)) if match else None


def methods(workdir: str, natives: list[str], pickles: list[str], hadd: str | None, rootmerge: str | None):
    from distrdf_oscar import _core
    from distrdf_oscar.protocol import partial

    out = {m: os.path.join(workdir, f"out_{m}.root") for m in METHODS}
    run = {
        "native": lambda: partial.merge_partials(out["native"], natives),
        "core": lambda: _core.merge_files(
            out["core"], natives, exclude=[partial.META_DIR], overwrite=True, compression=partial.COMPRESSION
        ),
        "pairwise": lambda: pairwise_merge(pickles),
    }
    if hadd:
        # hadd has no way to skip the bookkeeping directory; it is three small strings per file.
        run["hadd"] = lambda: run_command([hadd, "-f", out["hadd"], *natives])
    if rootmerge:
        run["rootmerge"] = lambda: reported_seconds(
            run_command([rootmerge, "-f", "-x", partial.META_DIR, out["rootmerge"], *natives])
        )
    return run, out


def spectrum_of(ROOT, path: str, key: str):
    f = ROOT.TFile.Open(path)
    h = f.Get(key)
    h.SetDirectory(ROOT.nullptr)
    f.Close()
    return h


def contents(h) -> np.ndarray:
    return np.frombuffer(h.GetArray(), dtype=np.float64, count=h.GetNcells()).copy()


def check_agreement(ROOT, outputs: dict, pairwise_result, done: set[str]) -> list[str]:
    """Every method produced the same spectrum and pt-eta histogram, bin by bin."""
    problems = []
    ref = pairwise_result.mergeables
    expected = {"slot_0000": contents(ref[0].GetValue()), "slot_0001": contents(ref[1].GetValue())}
    for method in ("native", "core", "hadd", "rootmerge"):
        if method not in done:
            continue
        for key, want in expected.items():
            got = contents(spectrum_of(ROOT, outputs[method], key))
            if not np.allclose(got, want, rtol=1e-12, atol=0):
                problems.append(f"{method}: {key} differs from the pairwise merge")
    return problems


# ---------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all threads, and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn, repeat: int) -> tuple[float, list[float], float, object]:
    """Best wall time, every wall time, the least CPU time, and the last result."""
    runs, cpus, result = [], [], None
    for _ in range(repeat):
        cpu, start = cpu_seconds(), time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return min(runs), runs, min(cpus), result


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def fmt(value, digits=3, suffix="") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'K':>5} {'native s':>9} {'core s':>8} {'pairwise s':>10} {'hadd s':>8} {'rootmerge s':>11}"
        f" | {'pairwise/native':>15} {'hadd/rootmerge':>14} {'(cpu)':>6} {'pickled/native B':>16}"
        f" | {'native B':>9} {'pickled B':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        t = r["seconds"]
        print(
            f"{r['k']:>5} {fmt(t.get('native')):>9} {fmt(t.get('core')):>8} {fmt(t.get('pairwise')):>10}"
            f" {fmt(t.get('hadd')):>8} {fmt(t.get('rootmerge')):>11}"
            f" | {fmt(r['ratios']['pairwise/native'], 1, 'x'):>15} {fmt(r['ratios']['hadd/rootmerge'], 2, 'x'):>14}"
            f" {fmt(r['ratios']['hadd/rootmerge cpu'], 2, 'x'):>6}"
            f" {fmt(r['ratios']['pickled/native bytes'], 1, 'x'):>16}"
            f" | {r['bytes']['native']:>9.0f} {r['bytes']['pickled']:>9.0f}"
        )


def targets(rows: list[dict]) -> list[tuple[str, bool | None, str]]:
    row = next((r for r in rows if r["k"] == TARGET_K), None)
    if row is None:
        return [(f"targets at K={TARGET_K}", None, f"K={TARGET_K} not measured")]
    ratios = row["ratios"]
    out = []
    value = ratios["pairwise/native"]
    out.append(
        (
            f"native >= 3x faster than pairwise Python at K={TARGET_K}",
            None if value is None else value >= 3,
            f"{fmt(value, 1, 'x')}",
        )
    )
    value = ratios["hadd/rootmerge"]
    out.append(
        (
            f"rootmerge no slower than hadd at K={TARGET_K}",
            None if value is None else value >= 1,
            f"hadd/rootmerge = {fmt(value, 2, 'x')} wall, {fmt(ratios['hadd/rootmerge cpu'], 2, 'x')} CPU",
        )
    )
    value = ratios["pickled/native bytes"]
    out.append(
        (
            "native partial >= 10x smaller than the pickled TaskResult",
            None if value is None else value >= 10,
            f"{fmt(value, 1, 'x')}",
        )
    )
    return out


def plot(rows: list[dict], path: str, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ks = [r["k"] for r in rows]
    for method in METHODS:
        points = [(r["k"], r["seconds"][method]) for r in rows if r["seconds"].get(method) is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=LABELS[method])
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("partial results merged (K)")
    ax.set_ylabel("seconds (best of repeats)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="16,64,256,1024", help="comma-separated K values")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--repeat", type=int, default=3, help="runs per method and K; the best is reported")
    parser.add_argument("--entries", type=int, default=50_000, help="spectrum entries per partial")
    parser.add_argument(
        "--workdir",
        default=None,
        help="where partials are written (default: a temporary directory, removed at the end)",
    )
    parser.add_argument("--quick", action="store_true", help="a small run: K = 4,16, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeat = "4,16", 1
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 2:
        parser.error("--sizes needs values >= 2")

    import ROOT

    from distrdf_oscar import _core
    from distrdf_oscar.protocol import partial

    ROOT.gROOT.SetBatch(True)
    partial._declare_helpers(ROOT)
    hadd, rootmerge = find_hadd(ROOT), find_rootmerge()
    for name, found in (("hadd", hadd), ("rootmerge", rootmerge)):
        if not found:
            print(
                f"warning: {name} not found ({'set ROOTMERGE or put it on PATH' if name == 'rootmerge' else ''});"
                f" left out"
            )
    os.makedirs(args.out, exist_ok=True)
    workdir = args.workdir or tempfile.mkdtemp(prefix="dro-merge-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        start = time.perf_counter()
        natives, pickles = generate(ROOT, workdir, max(sizes), args.entries)
        native_bytes = float(np.mean([os.path.getsize(p) for p in natives]))
        pickled_bytes = float(np.mean([os.path.getsize(p) for p in pickles]))
        print(
            f"generated {max(sizes)} partials ({args.entries} spectrum entries each) in "
            f"{time.perf_counter() - start:.1f} s; per partial: native file {native_bytes / 1e3:.1f} kB "
            f"(LZ4, compression {partial.COMPRESSION}), pickled TaskResult {pickled_bytes / 1e3:.1f} kB"
        )
        print(
            f"ROOT {_core.root_version()}, {os.cpu_count()} CPUs, rootmerge: {rootmerge or '-'}, hadd: {hadd or '-'}"
        )

        # Warm up every method (PyROOT template instantiations, page cache, ROOT's plugin manager).
        run, _ = methods(workdir, natives[:2], pickles[:2], hadd, rootmerge)
        for fn in run.values():
            fn()

        rows = []
        for k in sizes:
            run, outputs = methods(workdir, natives[:k], pickles[:k], hadd, rootmerge)
            seconds, runs, cpu, pairwise_result, rootmerge_inside = {}, {}, {}, None, None
            for method, fn in run.items():
                best, all_runs, least_cpu, result = timed(fn, args.repeat)
                seconds[method], runs[method], cpu[method] = best, all_runs, least_cpu
                if method == "pairwise":
                    pairwise_result = result
                elif method == "rootmerge":
                    rootmerge_inside = result
                print(
                    f"  K={k:<5} {LABELS[method]:<46} {best:8.3f} s  cpu {least_cpu:7.3f} s  (runs: "
                    f"{', '.join(f'{r:.3f}' for r in all_runs)})",
                    flush=True,
                )
            problems = check_agreement(ROOT, outputs, pairwise_result, set(run))
            for problem in problems:
                print(f"  K={k}: MISMATCH: {problem}")
            k_native = float(np.mean([os.path.getsize(p) for p in natives[:k]]))
            k_pickled = float(np.mean([os.path.getsize(p) for p in pickles[:k]]))
            rows.append(
                {
                    "k": k,
                    "seconds": seconds,
                    "runs": runs,
                    "cpu_seconds": cpu,
                    "agree": not problems,
                    "problems": problems,
                    "rootmerge_reported_seconds": rootmerge_inside,
                    "bytes": {
                        "native": k_native,
                        "pickled": k_pickled,
                        "merged_native": os.path.getsize(outputs["native"]),
                    },
                    "ratios": {
                        "pairwise/native": ratio(seconds.get("pairwise"), seconds.get("native")),
                        "pairwise/core": ratio(seconds.get("pairwise"), seconds.get("core")),
                        "hadd/rootmerge": ratio(seconds.get("hadd"), seconds.get("rootmerge")),
                        "hadd/rootmerge cpu": ratio(cpu.get("hadd"), cpu.get("rootmerge")),
                        "pickled/native bytes": ratio(k_pickled, k_native),
                    },
                }
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(rows)
    print(
        "(hadd and rootmerge are timed as commands: process start-up and ROOT's lazy dictionary loading, "
        "~0.3-0.7 s here, are included; rootmerge's own summary line reports "
        + ", ".join(f"K={r['k']}: {fmt(r['rootmerge_reported_seconds'], 2, ' s')}" for r in rows)
        + ", start-up excluded)"
    )
    print()
    results = targets(rows)
    for what, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL' if ok is not None else 'SKIP'}: {what} ({detail})")
    agree = all(r["agree"] for r in rows)
    print(f"{'PASS' if agree else 'FAIL'}: every method produced the same histograms as the pairwise merge")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {
        "benchmark": "merge",
        "timestamp": stamp,
        "sizes": sizes,
        "repeat": args.repeat,
        "entries_per_partial": args.entries,
        "root": _core.root_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "hadd": hadd,
        "rootmerge": rootmerge,
        "content": "TH1D 30000 bins (dimuon mass spectrum), TH2D 100x100, 10 scalars (Count, Sum, Min, Max)",
        "rows": rows,
        "targets": [{"target": what, "pass": ok, "detail": detail} for what, ok, detail in results],
    }
    json_path = os.path.join(args.out, f"merge-{stamp}.json")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2)
    png_path = os.path.join(args.out, f"merge-{stamp}.png")
    title = (
        f"merge of K partials (TH1D 30000 bins, TH2D 100x100, 10 scalars), "
        f"{os.cpu_count()} CPUs, ROOT {_core.root_version()}"
    )
    saved = plot(rows, png_path, title)
    print(f"saved {json_path}" + (f" and {png_path}" if saved else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
