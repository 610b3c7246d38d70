"""Where a job's time goes: every call's phases travel in the partials to the job record, which
`distrdf-oscar report` summarises and draws."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ROOT

import distrdf_oscar as dro
from distrdf_oscar import cli
from distrdf_oscar.client import report
from distrdf_oscar.protocol import timeline

pytestmark = pytest.mark.usefixtures("secret_scan")  # conftest.py: these jobs' objects and logs are searched


@pytest.fixture
def records(tmp_path, monkeypatch):
    monkeypatch.setenv(timeline.RECORDS_VARIABLE, str(tmp_path / "records"))
    return tmp_path / "records"


@pytest.mark.slow  # runs a job on a session cluster (request.getfixturevalue)
@pytest.mark.parametrize(
    ("mode", "reduction", "merges"),
    [
        ("prestarted", dro.TreeReduction(fan_in=2), {"reducer": 3}),
        ("cold", dro.CoordinatedReduction([3, 2]), {"batch": 2, "coordinator": 1}),
    ],
)
def test_every_call_of_a_job_is_recorded_with_ordered_phases(
    request, dimuon_files, records, mode, reduction, merges
):
    cluster = request.getfixturevalue(f"{mode}_cluster")
    executor = cluster.executor(reduction=reduction, progress=False, ranges_per_call=1)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=4)
    assert df.Count().GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    job = executor.last_job
    record = timeline.JobRecord.from_json((records / f"{job.job_id}.json").read_text())
    assert record == job.record
    roles = {role: sum(1 for f in record.functions if f.role == role) for role in ("mapper", *merges)}
    assert roles == {"mapper": 4, **merges}
    calls = [f for f in record.functions if f.role != "coordinator"]
    for call in record.functions:
        order = [call.phases[p] for p in timeline.PHASES if p in call.phases]
        assert order == sorted(order), call
        # The coordinator uploads no partial: it watched the partials and launched the batches.
        assert {"started", "ready", "computed"} <= set(call.phases), call
        assert ("uploaded" in call.phases) == (call in calls), call
        if call.role == "mapper":
            assert "imported" in call.phases, call
            # ROOT's log told when its loop began, finished its JIT and ended; DistRDF builds no
            # RDataFrame (so runs no loop) for a range without entries, as its clusters may leave one.
            loop = {"loop_started", "jitted", "loop_ended"} & set(call.phases)
            assert loop in (set(), {"loop_started", "jitted", "loop_ended"}), call
        # File-triggered calls know the storage event that started them.
        assert "invoked" in call.phases
        assert call.cpu_seconds > 0
        assert call.peak_rss > 10_000_000
    mappers = [f for f in record.functions if f.role == "mapper"]
    assert sum("loop_started" in f.phases for f in mappers) >= 3
    assert sorted(f.task.rsplit("/", 1)[-1] for f in mappers) == [
        f"{i:06d}_{i + 1:06d}.root" for i in range(4)
    ]
    merged = [f for f in calls if f.role != "mapper"]
    assert all(f.bytes_read > 0 for f in merged)  # they downloaded their inputs
    assert all(f.bytes_written > 1000 for f in calls)  # their partials, from the listings
    for coordinator in (f for f in record.functions if f.role == "coordinator"):
        # It launched the last batch (then merged it: a batch record starting as it ended).
        last_merge = max((f for f in merged if f.role == "batch"), key=lambda f: f.phases["started"])
        assert coordinator.phases["computed"] <= last_merge.phases["started"]
        assert coordinator.bytes_written > 0  # its batch files
    client = record.client
    assert client["submitted"] <= client["last_mapper"] <= client["result_seen"]
    assert max(f.phases["computed"] for f in record.functions) <= client["result_seen"]
    # What each service's pods request, from the executor's deployment: each pod held them a while.
    assert record.requests == executor._requests()
    assert record.requests["mapper"] == timeline.Request(1.0, 2 * 2**30)
    assert record.pool_workers == []
    held = report.holders(record)
    assert len(held) == len({f.worker for f in record.functions})
    assert all(s > 0 for _, s in held)
    assert report.reservations(record)["core_seconds"] > 0


@pytest.mark.slow  # runs a job on the session's warm pool
def test_a_pool_job_records_its_workers_and_the_pools_reservation(pool_cluster, dimuon_files, records):
    executor = pool_cluster.executor(reduction=dro.TreeReduction(fan_in=2), progress=False, ranges_per_call=1)
    df = ROOT.RDataFrame("Events", dimuon_files, executor=executor, npartitions=4)
    assert df.Count().GetValue() == ROOT.RDataFrame("Events", dimuon_files).Count().GetValue()
    record = timeline.JobRecord.from_json((records / f"{executor.last_job.job_id}.json").read_text())
    assert record.pool
    assert len(record.pool_workers) == pool_cluster.workers
    assert {f.worker for f in record.functions} <= set(record.pool_workers)  # every call ran in the pool
    reserved = report.reservations(record)
    assert set(reserved["services"]) == {"pool"}
    wall = record.client["result_seen"] - record.client["submitted"]
    assert reserved["core_seconds"] == reserved["pool"]["core_seconds"] == pool_cluster.workers * wall


def test_report_prints_the_breakdown_and_draws_lanes(records, tmp_path, capsys):
    def call(role, worker, start, took):
        phases = {
            "invoked": start,
            "started": start + 0.5,
            "ready": start + 1.0,
            "computed": start + took,
            "uploaded": start + took + 0.1,
        }
        if role == "mapper":
            phases["jitted"] = start + 1.5
        return timeline.CallRecord(
            role=role,
            worker=worker,
            task=f"t/{role}{start}",
            cpu_seconds=took,
            peak_rss=200_000_000,
            bytes_read=1_000_000,
            bytes_written=2_500_000,
            phases=phases,
        )

    # Two slots: the third mapper starts when the first ends, and the merge after the last.
    calls = [
        call("mapper", "a", 100.0, 3.0),
        call("mapper", "b", 100.2, 3.0),
        call("mapper", "c", 103.1, 2.0),
        call("reducer", "d", 105.5, 1.5),
    ]
    record = timeline.JobRecord(
        job="j20261202000000-0123abcd",
        mode="tree",
        npartitions=3,
        calls=3,
        pool=False,
        client={"submitted": 99.9, "last_mapper": 105.2, "result_seen": 107.2},
        functions=calls,
    )
    assert [[c.worker for c in lane] for lane in report.lanes(calls)] == [["a", "c", "d"], ["b"]]
    path = records / f"{record.job}.json"
    path.parent.mkdir(parents=True)
    path.write_text(record.to_json())
    png = tmp_path / "timeline.png"
    assert cli.main(["report", record.job, "--price", "0.5", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "wall time 7.30 s: mapping 5.30 s, tail (last mapper -> result) 2.00 s" in out
    # Means per call: waiting, start-up, JIT, compute (after the JIT), upload; then CPU seconds.
    assert (
        "mapper          3    0.50s     0.50s   0.50s    1.17s   0.10s     8.0      3.0        7.5         200"
        in out
    )
    assert "CPU used: 9.5 core-seconds; cost at 0.5 per core-second: 4.750000" in out
    assert "reserved: not in this record" in out  # made without requests, as older records are
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(path.read_text())["job"] == record.job
    assert cli.main(["report", "j20990101000000-ffffffff", "--no-plot"]) == 2
    assert "no record of job j20990101000000-ffffffff" in capsys.readouterr().err


def test_report_shows_the_coordinator_watching(tmp_path):
    phases = {"invoked": 10.0, "started": 10.5, "ready": 11.0, "computed": 14.0}
    watching = timeline.CallRecord(
        role="coordinator",
        worker="w",
        task="batches/j/batch_000001.json",
        phases=phases,
        cpu_seconds=0.3,
        peak_rss=60_000_000,
        bytes_read=0,
        bytes_written=700,
    )
    record = timeline.JobRecord(
        job="j20261202000000-0123abcd",
        mode="coordinated",
        npartitions=2,
        calls=2,
        pool=False,
        client={"submitted": 9.9, "last_mapper": 13.9, "result_seen": 14.5},
        functions=[watching],
    )
    costs = report.role_costs(record)["coordinator"]
    assert (costs["calls"], costs["startup"], costs["compute"], costs["cpu_seconds"]) == (1, 0.5, 3.0, 0.3)
    assert "  coordinator     1    0.50s" in report.summary(record)
    assert report.gantt(record, str(tmp_path / "c.png")).endswith("c.png")


# What the deployment's services request by default (deployment.py): 1 core and 2Gi, the coordinator
# a quarter of a core and 512Mi; the pool's workers as the mappers.
REQUESTS = {
    "mapper": timeline.Request(1.0, 2 * 2**30),
    "reducer": timeline.Request(1.0, 2 * 2**30),
    "batch": timeline.Request(1.0, 2 * 2**30),
    "coordinator": timeline.Request(0.25, 512 * 2**20),
    "pool": timeline.Request(1.0, 2 * 2**30),
}


def _call(role, worker, cpu_seconds, **phases):
    return timeline.CallRecord(
        role=role,
        worker=worker,
        task=f"t/{role}-{worker}-{phases['started']}",
        phases=phases,
        cpu_seconds=cpu_seconds,
        peak_rss=100_000_000,
        bytes_read=0,
        bytes_written=1000,
    )


def _report(record, path, *flags):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record.to_json())
    prices = ("--price", "0.5", "--memory-price", "0.25")
    assert cli.main(["report", str(path), "--no-plot", *prices, *flags]) == 0


def test_requests_come_from_the_deployments_service_definitions():
    from distrdf_oscar.platform.deployment import Deployment

    executor = dro.OSCARExecutor(
        "http://127.0.0.1:9", signing_key="k" * 32, user="u", password="p", deployment=Deployment()
    )
    assert executor._requests() == REQUESTS
    smaller = Deployment(memory="1536Mi", cpu="500m")  # cpu overrides every role's, the coordinator's too
    assert timeline.Request.of(smaller.service("coordinator")) == timeline.Request(0.5, 512 * 2**20)
    assert timeline.Request.of(smaller.pool_service(3, ("a", "b"), (4, 1, 0))) == timeline.Request(
        0.5, 1.5 * 2**30
    )


def test_report_prices_each_pods_requests_over_its_life(tmp_path, capsys):
    """A file-triggered pod holds its requests from its pod's start (up to POD_START before its
    process, never before its event) to its last call's end, merges it ran inline included."""
    assert report.POD_START == 2.0
    calls = [
        # Started 3 s after its event: charged from 2 s before its process.
        _call("mapper", "a", 2.0, invoked=100.0, started=103.0, ready=103.5, computed=105.0, uploaded=105.5),
        # Started 0.5 s after its event: charged from the event.
        _call("mapper", "b", 3.0, invoked=100.0, started=100.5, ready=101.0, computed=105.5, uploaded=106.0),
        # No event time known: charged 2 s before its process.
        _call("mapper", "d", 1.5, started=104.0, ready=104.5, computed=106.0, uploaded=106.5),
        # The coordinator, and the last batch it merged itself: one pod, the coordinator's requests.
        _call("coordinator", "c", 0.25, invoked=99.0, started=101.5, ready=102.0, computed=107.0),
        _call(
            "batch", "c", 0.25, invoked=107.0, started=107.0, inputs=107.25, computed=107.5, uploaded=108.0
        ),
    ]
    record = timeline.JobRecord(
        job="j20261202000000-0123abcd",
        mode="coordinated",
        npartitions=3,
        calls=3,
        pool=False,
        client={"submitted": 98.9, "last_mapper": 106.6, "result_seen": 108.2},
        functions=calls,
        requests=REQUESTS,
    )
    assert timeline.JobRecord.from_json(record.to_json()) == record
    assert sorted(report.holders(record)) == [
        ("coordinator", 8.5),
        ("mapper", 4.5),
        ("mapper", 4.5),
        ("mapper", 6.0),
    ]
    reserved = report.reservations(record, price=0.5, memory_price=0.25)
    assert reserved == {
        "price": 0.5,
        "memory_price": 0.25,
        "services": {
            "mapper": {
                "pods": 3,
                "seconds": 15.0,
                "cpu": 1.0,
                "memory_gib": 2.0,
                "core_seconds": 15.0,
                "gib_seconds": 30.0,
                "cost": 15.0,
            },
            "coordinator": {
                "pods": 1,
                "seconds": 8.5,
                "cpu": 0.25,
                "memory_gib": 0.5,
                "core_seconds": 2.125,
                "gib_seconds": 4.25,
                "cost": 2.125,
            },
        },
        "core_seconds": 17.125,
        "gib_seconds": 34.25,
        "cost": 17.125,
    }
    _report(record, tmp_path / "record.json")
    out = capsys.readouterr().out
    assert "  CPU used: 7.0 core-seconds; cost at 0.5 per core-second: 3.500000\n" in out
    assert (
        "  service      pods   held s  cores   GiB   core-s    GiB-s\n"
        "  mapper          3    15.00      1     2     15.0     30.0\n"
        "  coordinator     1     8.50   0.25   0.5      2.1      4.2\n"
        "  reserved: 17.1 core-seconds, 34.2 GiB-seconds; cost at 0.5 per core-second and 0.25 per GiB-second: "
        "17.125000; the CPU used is 41% of it\n"
    ) in out
    assert "warm pool" not in out
    _report(record, tmp_path / "record.json", "--json")
    printed = json.loads(capsys.readouterr().out)
    assert printed["reserved"] == reserved
    assert printed["cpu_used"] == {"core_seconds": 7.0, "price": 0.5, "cost": 3.5}


def test_a_warm_pool_costs_over_the_jobs_wall_time_and_between_jobs(tmp_path, capsys):
    """Each pool worker held its requests for the job's whole wall time, idle or not; its busy
    share is what its calls took. A call that overflowed to the file-triggered mapper is a pod."""
    calls = [
        # w1 ran the coordinator, in a thread beside a mapper call and a batch: busy 99.5 -> 104.
        _call("coordinator", "w1", 0.5, invoked=99.5, started=99.5, ready=99.75, computed=104.0),
        _call(
            "mapper", "w1", 2.0, invoked=100.0, started=100.0, ready=100.25, computed=102.0, uploaded=102.5
        ),
        _call(
            "batch", "w1", 0.5, invoked=102.5, started=102.5, inputs=103.0, computed=103.25, uploaded=103.5
        ),
        _call(
            "mapper", "w2", 2.5, invoked=100.0, started=100.0, ready=100.25, computed=102.5, uploaded=103.0
        ),
        # Overflowed: charged 2 s before its process started.
        _call("mapper", "x", 1.5, invoked=101.0, started=104.0, ready=104.5, computed=106.0, uploaded=106.5),
    ]
    record = timeline.JobRecord(
        job="j20261202000000-0123abcd",
        mode="coordinated",
        npartitions=3,
        calls=3,
        pool=True,
        client={"submitted": 99.0, "last_mapper": 106.75, "result_seen": 107.0},
        functions=calls,
        requests=REQUESTS,
        pool_workers=["w1", "w2", "w3"],  # w3 took no call: it costs as much
    )
    assert timeline.JobRecord.from_json(record.to_json()) == record
    assert sorted(report.holders(record)) == [("mapper", 4.5), ("pool", 3.0), ("pool", 4.5)]
    reserved = report.reservations(record, price=0.5, memory_price=0.25)
    assert reserved["services"]["pool"] == {
        "pods": 2,
        "seconds": 7.5,
        "cpu": 1.0,
        "memory_gib": 2.0,
        "core_seconds": 7.5,
        "gib_seconds": 15.0,
        "cost": 7.5,
    }
    hour = {"cpu": 1.0, "memory_gib": 2.0, "core_seconds": 10800.0, "gib_seconds": 21600.0, "cost": 10800.0}
    assert reserved["pool"] == {
        "workers": 3,
        "wall_seconds": 8.0,
        "cpu": 1.0,
        "memory_gib": 2.0,
        "core_seconds": 24.0,
        "gib_seconds": 48.0,
        "cost": 24.0,
        "per_hour": hour,
    }
    # The job's: the pool over its wall time (its busy share within it), and the overflowed pod.
    assert (reserved["core_seconds"], reserved["gib_seconds"], reserved["cost"]) == (28.5, 57.0, 28.5)
    _report(record, tmp_path / "record.json")
    out = capsys.readouterr().out
    assert (
        "  mapper          1     4.50      1     2      4.5      9.0\n"
        "  pool            2     7.50      1     2      7.5     15.0\n"
        "  warm pool: 3 worker(s) of 1 core(s) and 2 GiB over the job's 8.00 s wall time, idle or not (the busy "
        "share above included): 24.0 core-seconds, 48.0 GiB-seconds\n"
        "  reserved: 28.5 core-seconds, 57.0 GiB-seconds; cost at 0.5 per core-second and 0.25 per GiB-second: "
        "28.500000; the CPU used is 25% of it\n"
        "  the pool costs between jobs too: 10800 core-seconds and 21600 GiB-seconds an hour, 10800.000000 an hour"
    ) in out
    _report(record, tmp_path / "record.json", "--json")
    assert json.loads(capsys.readouterr().out)["reserved"] == reserved


def test_an_older_record_without_requests_still_loads_and_reports(tmp_path, capsys):
    record = json.loads(
        timeline.JobRecord(
            job="j20261202000000-0123abcd",
            mode="tree",
            npartitions=1,
            calls=1,
            pool=True,
            client={"submitted": 99.0, "result_seen": 101.0},
            functions=[_call("mapper", "w1", 1.25, invoked=99.5, started=99.5, computed=100.5)],
        ).to_json()
    )
    for field in ("requests", "pool_workers", "duplicates"):  # as records were before they existed
        del record[field]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(record))
    loaded = report.load(str(path))
    assert (loaded.requests, loaded.pool_workers, loaded.duplicates) == ({}, [], 0)
    assert report.reservations(loaded) is None
    assert cli.main(["report", str(path), "--no-plot", "--price", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "CPU used: 1.2 core-seconds; cost at 0.5 per core-second: 0.625000" in out
    assert (
        "reserved: not in this record (written before requests were recorded): only the CPU used is priced"
        in out
    )
    assert cli.main(["report", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["reserved"] is None
    assert printed["cpu_used"]["core_seconds"] == 1.25


def test_only_the_newest_records_are_kept(records, monkeypatch):
    monkeypatch.setattr(timeline, "KEPT_RECORDS", 2)
    for second in (1, 2, 3):
        timeline.save(
            timeline.JobRecord(
                job=f"j2026120200000{second}-0123abcd",
                mode="tree",
                npartitions=1,
                calls=1,
                pool=False,
                client={},
            )
        )
    assert sorted(p.name for p in records.iterdir()) == [
        "j20261202000002-0123abcd.json",
        "j20261202000003-0123abcd.json",
    ]


def test_a_process_knows_when_it_started_to_the_tick():
    """Phases are measured from the process's start: /proc's boot time is whole seconds, which would
    shift every start-up phase by up to a second."""
    code = "import time; from distrdf_oscar.protocol import timeline; print(time.time() - timeline.process_start())"
    since = float(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert 0.0 <= since < 0.6  # the interpreter's start and the package's import, nothing more


def test_event_loop_phases_come_from_roots_log_and_stay_out_of_the_output(capfd):
    from distrdf_oscar.functions import event_loops

    event_loops.watch(ROOT)
    event_loops.forget()
    recorder = timeline.Recorder("mapper", "this process")
    df = ROOT.RDataFrame(1000).Define("x", "rdfentry_ * 0.5").Filter("x > 10")  # jitted: a JIT phase
    assert df.Sum("x").GetValue() == 0.5 * (sum(range(1000)) - sum(range(21)))
    event_loops.mark(recorder)
    phases = recorder.phases
    assert phases["started"] < phases["loop_started"] < phases["jitted"] <= phases["loop_ended"]
    # The channel was raised to Info for this; its messages do not reach the output.
    assert "event loop" not in capfd.readouterr().err
