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
    assert "CPU: 9.5 core-seconds; cost at 0.5 per core-second: 4.750000" in out
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
