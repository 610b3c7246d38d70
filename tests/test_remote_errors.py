"""RemoteError reads well (issue 24): its first line names the task and the cause, the next the
command that prints the function's logs, then the remote traceback without cppyy's overload listing.

The errors are ROOT's own: DistRDF's mapper runs here on each range as a function runs it, and the
first failure is reported as the function reports it (its error marker, for the trigger the client
wrote), then read by the client's tracker.
"""

from __future__ import annotations

import base64
import os
import re

import cloudpickle
import pytest
import ROOT

from distrdf_oscar.client.recovery import RemoteError, RetryPolicy, Tracker
from distrdf_oscar.protocol import layout, root_errors
from distrdf_oscar.protocol.messages import ErrorMarker, MapperTrigger
from distrdf_oscar.protocol.plan import TreeReduction
from inprocess import InProcessBackend

JOB = layout.JobKeys("j20261124120000-0123abcd")
HISTO = ("h", "h", 10, 0.0, 10.0)


class FirstFailure(InProcessBackend):
    """Runs the mapper on each range; keeps the ranges and the error marker of the first failure."""

    def __init__(self) -> None:
        super().__init__(npartitions=2)
        self.plan = TreeReduction(fan_in=2).describe(2, JOB.job_id)

    def ProcessAndMerge(self, ranges, mapper, reducer):
        self.ranges = ranges
        for current in ranges:
            try:
                self._fresh_mapper(mapper, current)
            except Exception as exc:
                trigger = JOB.trigger(current.id)
                self.marker = ErrorMarker.from_exception(
                    JOB.job_id,
                    layout.JobKeys.reporter("mapper", trigger),
                    "distrdf-mapper",
                    trigger,
                    self.plan.mapper_output((current.id, current.id + 1)),
                    exc,
                    retryable=False,
                )
                raise
        raise AssertionError("no range failed")


def remote_error(book, *args) -> RemoteError:
    """The RemoteError the client raises for the first range that fails in ``book(RDataFrame(*args))``."""
    backend = FirstFailure()
    with pytest.raises(Exception):  # noqa: B017, PT011 - the local error; the marker has it
        book(backend.make_dataframe(*args)).GetValue()
    triggers = {  # as the client writes them (job.py)
        r.id: MapperTrigger(
            JOB.job_id,
            r.id,
            base64.b64encode(cloudpickle.dumps(r)).decode(),
            JOB.mapper_payload,
            backend.plan.mapper_output((r.id, r.id + 1)),
        ).to_json()
        for r in backend.ranges
    }
    tracker = Tracker.for_plan(JOB, backend.plan, triggers, RetryPolicy())
    with pytest.raises(RemoteError) as info:
        tracker.on_error("e", backend.marker)
    return info.value


def logs_line(task: str) -> str:
    return f"  its function's logs: distrdf-oscar logs {JOB.job_id} --task {task}"


def test_an_unknown_column_is_named_and_cppyys_listing_cut():
    error = remote_error(lambda df: df.Histo1D(HISTO, "no_such_column"), 100)
    lines = str(error).splitlines()
    assert lines[0] == (
        f"job {JOB.job_id}: the mapper of range 0 (entries [0, 50)) failed: unknown column 'no_such_column'"
    )
    assert lines[1] == logs_line("mapper-000000_000001")
    assert lines[2] == "--- remote traceback (distrdf-mapper) ---"
    # The listing keeps the overload that names the action and the C++ error, once; those cppyy
    # refused for their arguments alone go (which it lists depends on what cling saw before).
    listing = lines[lines.index("TypeError: Template method resolution failed:") + 1 :]
    signature = next(
        i for i, line in enumerate(listing) if "::Histo1D(const ROOT::RDF::TH1DModel& model" in line
    )
    assert listing[signature + 1] == '    runtime_error: Unknown column: "no_such_column"'
    assert sum("Unknown column" in line for line in listing) == 1
    assert not any("takes at most" in line or "could not convert" in line for line in listing)
    assert re.fullmatch(rf"  \[\d+ {re.escape(root_errors.CUT_NOTE)}\]", listing[-1])
    # Nothing is lost: the full text has the traceback as the function wrote it.
    assert error.full_text.count('runtime_error: Unknown column: "no_such_column"') >= 2
    assert error.full_text.endswith(error.marker.traceback)
    # The message before issue 24 had cppyy's listing twice: in the headline and the traceback.
    dump = error.marker.traceback.split("\nTypeError: ", 1)[1]
    before = (
        f"mapper-000000_000001 of job {JOB.job_id} failed: "
        f'Unknown column: "no_such_column" (from TypeError: {dump.rstrip()})\n'
        f"--- remote traceback (distrdf-mapper) ---\n{error.marker.traceback}"
    )
    assert len(str(error)) < 0.7 * len(before), (len(str(error)), len(before))
    assert len(lines) < 0.7 * len(before.splitlines()), (len(lines), len(before.splitlines()))


@pytest.fixture(scope="module")
def root_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("files") / "good.root")
    ROOT.RDataFrame(1000).Define("x", "rdfentry_ * 0.5").Snapshot("Events", path)
    return path


def _truncated(good: str, bad: str) -> str:
    size = os.path.getsize(good)
    with open(good, "rb") as source, open(bad, "wb") as cut:
        cut.write(source.read(size // 2))
    return f"truncated at {size // 2} of its {size} bytes"


def _not_root(good: str, bad: str) -> str:
    with open(bad, "w") as text:
        text.write("not a ROOT file\n" * 20)
    return "not a ROOT file"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda good, bad: "not found", id="missing"),
        pytest.param(_truncated, id="truncated"),
        pytest.param(_not_root, id="not-root"),
    ],
)
def test_a_file_that_cannot_be_read_is_named_with_its_fault(root_file, tmp_path, make):
    bad = str(tmp_path / "bad.root")
    fault = make(root_file, bad)
    error = remote_error(lambda df: df.Count(), "Events", [root_file, bad])
    lines = str(error).splitlines()
    assert lines[0] == (
        f'job {JOB.job_id}: the mapper of range 1 (file bad.root) failed: cannot read file "{bad}": {fault}'
    )
    assert lines[1] == logs_line("mapper-000001_000002")
    # ROOT's own words stay in the traceback, in both of its exceptions (cppyy's, DistRDF's).
    assert sum(f'could not open file "{bad}"' in line for line in lines) == 2


def test_a_crash_names_the_signal_and_what_the_report_adds():
    plan = TreeReduction(fan_in=2).describe(2, JOB.job_id)
    triggers = {
        r: MapperTrigger(JOB.job_id, r, "", "", plan.mapper_output((r, r + 1))).to_json() for r in (0, 1)
    }
    tracker = Tracker.for_plan(JOB, plan, triggers, RetryPolicy())

    def crash(who: str, error: str, retryable: bool = True) -> ErrorMarker:
        return ErrorMarker(
            job=JOB.job_id,
            who=who,
            service="distrdf-mapper",
            trigger=JOB.trigger(1),
            output=plan.mapper_output((1, 2)),
            retryable=retryable,
            error=error,
            traceback=" *** Break *** segmentation violation",
            crash="SIGSEGV",
        )

    # A crash is retried once; the second fails the job.
    assert tracker.on_error("e1", crash("mapper-000001_000002", "the mapper process crashed with SIGSEGV"))
    with pytest.raises(RemoteError) as info:
        tracker.on_error("e2", crash("mapper-000001_000002-1", "the mapper process crashed with SIGSEGV"))
    assert str(info.value).splitlines() == [
        f"job {JOB.job_id}: the mapper of range 1 crashed with SIGSEGV (twice)",
        logs_line("mapper-000001_000002-1"),
        "--- last lines of its output (distrdf-mapper) ---",
        " *** Break *** segmentation violation",
    ]
    # A warm pool's report says more.
    pool = "the mapper process crashed with SIGSEGV twice, each time in a fresh process of the warm pool"
    with pytest.raises(RemoteError) as info:
        tracker.on_error("e3", crash("mapper-000001_000002", pool, retryable=False))
    assert str(info.value).splitlines()[0] == (
        f"job {JOB.job_id}: the mapper of range 1 crashed with SIGSEGV twice, each time in a fresh "
        "process of the warm pool"
    )


def test_overloads_with_different_errors_are_all_kept():
    with pytest.raises(TypeError) as info:
        ROOT.TH1D("h", "h", "not a number of bins")
    dump = str(info.value)
    trimmed = root_errors.trim(dump)
    errors = [line.strip() for line in dump.splitlines() if line.startswith("    ")]
    assert [line.strip() for line in trimmed.splitlines() if line.startswith("    ")] == list(
        dict.fromkeys(errors)
    )
    assert len(set(errors)) < len(errors)
    assert trimmed.endswith(f"[{2 * (len(errors) - len(set(errors)))} {root_errors.CUT_NOTE}]")


def test_the_headline_of_an_earlier_function_is_put_in_a_few_words():
    with pytest.raises(TypeError) as info:
        ROOT.RDataFrame(1).Histo1D(HISTO, "no_such_column")
    # What functions of the previous version wrote as the marker's error.
    earlier = f'Unknown column: "no_such_column" (from TypeError: {info.value})'
    assert root_errors.cause(earlier) == "unknown column 'no_such_column'"
    assert root_errors.cause("StorageError: boom\nsecond line") == "StorageError: boom"


def test_a_remote_file_is_named_without_looking_at_it():
    reason = 'GetClustersAndEntries: could not open file "root://eos.example//store/f.root".'
    assert root_errors.plain(reason, look=True) == 'cannot read file "root://eos.example//store/f.root"'
