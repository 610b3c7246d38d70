"""The simulator: a discrete-event model of a job as the protocol runs it (``model.py``, with the
platform's costs in ``costs.py`` and what it gives in ``results.py``), its calibration from job
records (``calibration.py``), and the choice ``reduction="auto"`` makes with it (``choice.py``). Only the client imports it, when a job asks for ``"auto"``; docs/simulator.md
lists every assumption."""

from .calibration import MIN_RECORDS, RECENT_RECORDS, Calibration, calibrate, job_costs, recent_records
from .choice import (
    CALLS_PER_POOL_WORKER,
    CALLS_PER_SLOT,
    Choice,
    choose,
    choose_ranges_per_call,
    two_level_plans,
)
from .costs import (
    EMBEDDED_COLD,
    EMBEDDED_POOL,
    OSCAR_POOL,
    PROTOTYPE,
    PROTOTYPE_WORKLOAD,
    PlatformCosts,
    Workload,
)
from .model import Reduction, simulate
from .results import SimCall, SimResult

__all__ = [
    "CALLS_PER_POOL_WORKER",
    "CALLS_PER_SLOT",
    "EMBEDDED_COLD",
    "EMBEDDED_POOL",
    "MIN_RECORDS",
    "OSCAR_POOL",
    "PROTOTYPE",
    "PROTOTYPE_WORKLOAD",
    "RECENT_RECORDS",
    "Calibration",
    "Choice",
    "PlatformCosts",
    "Reduction",
    "SimCall",
    "SimResult",
    "Workload",
    "calibrate",
    "choose",
    "choose_ranges_per_call",
    "job_costs",
    "recent_records",
    "simulate",
    "two_level_plans",
]
