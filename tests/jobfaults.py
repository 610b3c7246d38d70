"""Jobs under injected faults: the graph, the exact check and the fault bookkeeping that
test_faults.py and test_soak.py share."""

from __future__ import annotations

import os
import threading
import time

import pytest
import ROOT

from compare import assert_same_hist, assert_same_value
from distrdf_oscar.platform.embedded import Fault
from distrdf_oscar.protocol import layout


def trigger(range_id: int) -> str:
    return f"triggers/*/{layout.interval_stem(range_id, range_id + 1)}.json"


def book(df):
    df = df.Filter("nMuon >= 1").Define("pt0", "Muon_pt[0]")
    # AsNumpy's rows travel in files of their own (docs/partial-format.md): faults must not lose them.
    return (
        df.Histo1D(("pt0", "leading muon pt", 64, 0.0, 160.0), "pt0"),
        df.Count(),
        df.Mean("pt0"),
        df.Filter("pt0 > 50").AsNumpy(["pt0"], lazy=True),
    )


def _value(result):
    return result.GetValue() if hasattr(result, "GetValue") else result


def assert_exact(result, reference) -> None:
    assert_same_hist(result[0], reference[0])
    assert result[1] == reference[1]
    assert result[2] == pytest.approx(reference[2], rel=1e-12)
    assert_same_value(_value(result[3]), _value(reference[3]), "AsNumpy rows")


def wait_idle(cluster, timeout: float = 120.0) -> None:
    """Until no function of the cluster is pending or running (stragglers included)."""
    from oscar_python.client import Client

    client = Client(cluster.platform.oscar_options())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [
            job
            for service in client.list_services().json()
            for job in client.list_jobs(service["name"]).json().get("jobs", {}).values()
            if job["status"] in ("Pending", "Running")
        ]
        if not busy:
            return
        time.sleep(0.25)
    raise AssertionError(f"functions still running after {timeout} s")


def finish_faults(cluster, injected: list[Fault], since: float) -> list[Fault]:
    """The rules with how often they fired, once any storage outage is over; then clear them."""
    end = since + max(
        (rule.after + rule.seconds for rule in injected if rule.kind == "storage_outage"), default=0
    )
    time.sleep(max(0.0, end - time.monotonic()))
    fired = cluster.platform.faults()
    cluster.platform.clear_faults()
    assert len(fired) == len(injected)
    return fired


# -- jobs on a warm pool, acted on while they run ------------------------------------------------


def running_jobs(storage) -> list[str]:
    return sorted(
        {job for key in storage.list(layout.JOBS + "/") if (job := layout.manifest_job(key)) is not None}
    )


def run_booked(executor, npartitions: int, files) -> tuple:
    """The booked results' values: the job runs here (booking is lazy)."""
    results = book(ROOT.RDataFrame("Events", files, executor=executor, npartitions=npartitions))
    return tuple(result.GetValue() for result in results)


def run_acting_on_first(
    executor, npartitions: int, files, prefix: str, act, timeout: float = 60.0
) -> tuple[tuple, list[str]]:
    """Run the job while a thread calls ``act(key)`` on the first object under ``prefix`` (with
    ``{job}`` for the running job's id); the results and the keys acted on."""
    storage, acted = executor.storage, []
    earlier = set(running_jobs(storage))  # jobs of other tests, not yet cleaned up

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not acted:
            for job in set(running_jobs(storage)) - earlier:
                found = storage.list(prefix.format(job=job))
                if found:
                    act(found[-1])
                    acted.append(found[-1])
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        return run_booked(executor, npartitions, files), acted
    finally:
        thread.join()


def signal_holder(storage, sig: int, signalled: list[int]):
    """An action for ``run_acting_on_first``: send ``sig`` to the worker a claim names (host-pid-nonce)."""

    def act(claim: str) -> None:
        pid = int(storage.get_bytes(claim).decode().rsplit("-", 2)[1])
        os.kill(pid, sig)
        signalled.append(pid)

    return act
