"""Places where the embedded platform's fault injection kills a function.

The platform sets ``DRO_FAILPOINT=<point>:<token dir>`` for an invocation it
may fail (see ``platform/embedded/faults.py``); nothing else does. A function
that reaches the point takes a token (an atomic unlink, so no more functions
die than the fault asked for) and dies by SIGKILL with its whole process group
(the service script too, which would otherwise report a crash), as a pod does
when its node disappears: no clean-up, no error marker, nothing flushed.
"""

from __future__ import annotations

import os
import signal

from ..protocol.contract import FAILPOINT_VARIABLE


def reach(point: str) -> None:
    """Die here if the platform asked for it (``before-write`` or ``after-write``)."""
    armed, _, tokens = os.environ.get(FAILPOINT_VARIABLE, "").partition(":")
    if armed != point or not tokens:
        return
    for token in sorted(os.listdir(tokens)) if os.path.isdir(tokens) else []:
        try:
            os.unlink(os.path.join(tokens, token))
        except FileNotFoundError:
            continue  # another function took it
        os.killpg(0, signal.SIGKILL)
