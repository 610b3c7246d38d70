"""The phases of a mapper's event loops, from ROOT's own log.

DistRDF's mapper builds the range's graph and runs it in one call. RDataFrame says, on its log
channel at level Info, when an event loop starts, when its just-in-time compilation (and the
building of the jitted nodes) is over, and when the loop ends; the native core
(``_core.watch_event_loops``) records those moments. The channel is raised to Info for this,
and what it says beyond what it said before is kept out of the function's output.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from .. import _core
from ..protocol.timeline import Recorder

log = logging.getLogger(__name__)
_watching = False


def watch(ROOT: Any) -> None:
    """Start recording (once per process; the caller has imported ROOT)."""
    global _watching
    if _watching:
        return
    _watching = True
    try:
        channel = ROOT.Detail.RDF.RDFLogChannel()
        shown = channel.GetEffectiveVerbosity(ROOT.RLogManager.Get())
        level = ROOT.ROOT.ELogLevel.kInfo  # ROOT::ELogLevel (a global ELogLevel exists too)
    except AttributeError as exc:  # another ROOT's logger: the timeline goes without these phases
        log.warning(
            "the event loops' phases cannot be recorded with ROOT %s: %s", ROOT.gROOT.GetVersion(), exc
        )
        return
    _core.watch_event_loops(int(shown))
    channel.SetVerbosity(level)


def forget() -> None:
    """Drop the marks of loops run before the call (another job's, in a long-lived worker)."""
    _core.take_event_loop_marks()


def mark(recorder: Recorder) -> None:
    """Put the loops run since :func:`forget` in the call's phases: the first loop's start, its
    JIT's end, and the last loop's end (a call of several ranges runs one loop per range)."""
    marks = _core.take_event_loop_marks()
    started = [t for phase, t in marks if phase == "loop_started"]
    if not started:
        return  # no loop ran (a range without entries: DistRDF builds no RDataFrame for it)
    first = started[0]
    jitted = [t for phase, t in marks if phase == "jitted" and t >= first]
    ended = [t for phase, t in marks if phase == "loop_ended" and t >= first]
    recorder.set("loop_started", first)
    # The first loop's last JIT message: the compilation, then the deferred calls that build the
    # jitted nodes.
    jitted = [t for t in jitted if t <= (ended[0] if ended else math.inf)]
    if jitted:
        recorder.set("jitted", jitted[-1])
    if ended:
        recorder.set("loop_ended", ended[-1])
