"""What a simulated job gives: each call's phases (``SimCall``) and the job's timings
(``SimResult``), also as a job record named as a real job's."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...protocol import layout
from ...protocol.timeline import CallRecord, JobRecord

_KEYS = layout.JobKeys("simulated")  # the simulated job's keys, named as a real job's


@dataclass
class SimCall:
    """One function call of the simulated job. ``phases`` as in ``timeline.PHASES``, plus
    ``written`` (its output exists) and ``end`` (its slot is free again); ``slot`` is the function
    slot or pool worker (None: the coordinator, which holds no slot)."""

    role: str  # mapper, reducer (a tree merge), batch, coordinator
    task: str  # what it produced: "<lo>_<hi>" (a partial or tree node), "batch_<i>", "" if nothing
    slot: int | None
    phases: dict[str, float]
    merged: bool = True  # False: a tree reducer that found its group incomplete or taken
    inputs: int = 0  # partials a merge downloaded
    output: str = ""  # the key it wrote, as a real job's would be named (layout.JobKeys)


@dataclass
class SimResult:
    npartitions: int
    ranges_per_call: int
    mapper_calls: int
    reduction: str  # its repr
    mode: str  # tree or coordinated
    pool: bool
    time_to_result: float  # from submission to the client seeing the result
    last_mapper: float  # the last mapper's partial written
    last_mapper_seen: float  # ... and seen by the client
    result_written: float
    calls: list[SimCall] = field(default_factory=list)
    partial_bytes: int = 0

    @property
    def tail(self) -> float:
        """Last mapper partial written -> result seen by the client."""
        return self.time_to_result - self.last_mapper

    def record(self, job: str = "simulated") -> JobRecord:
        """The schedule as a job record (``report.gantt`` draws it): the calls that produced an
        output, as a real job's record holds them."""

        def task(call: SimCall) -> str:  # named as a real record names them: by the key written
            if call.phases.get("written") == self.result_written and call.role != "coordinator":
                return _KEYS.result
            return call.output

        functions = [
            CallRecord(
                role=c.role,
                worker=f"slot-{c.slot}",
                task=task(c),
                cpu_seconds=0.0,
                peak_rss=0,
                bytes_read=c.inputs * self.partial_bytes,
                bytes_written=0,
                phases={k: v for k, v in c.phases.items() if k not in ("written", "end")},
            )
            for c in self.calls
            if c.merged and c.role != "coordinator"
        ]
        client = {"submitted": 0.0, "last_mapper": self.last_mapper_seen, "result_seen": self.time_to_result}
        return JobRecord(
            job=job,
            mode=self.mode,
            npartitions=self.npartitions,
            calls=self.mapper_calls,
            pool=self.pool,
            client=client,
            functions=functions,
        )
