"""Report a function whose process died (a signal, ``std::abort``) or exited before it could report.

A segfault in user C++ kills the Python process with the error marker unwritten, and OSCAR's
supervisor ignores how the script ends: without this report the client would take the crash for a
lost event and retry it until it gave up. The service script runs
``python -m distrdf_oscar.functions.crash ROLE STATUS OUTPUT`` after its child ends abnormally
(STATUS as the shell reports it, OUTPUT a file with the child's output); the embedded platform's
pre-started workers call :func:`on_prestarted_crash` the same way. The marker names the signal and
holds the output's last lines.
"""

from __future__ import annotations

import os
import re
import signal
import sys

from ..protocol import layout
from ..protocol.contract import CRASH_OUTPUT_VARIABLE, CRASH_STATUS_VARIABLE, ENTRYPOINT_VARIABLE, ENTRYPOINTS
from ..protocol.messages import ErrorMarker
from . import context
from .invocation import triggering_object

TAIL_LINES = 40
TAIL_BYTES = 65536
# ROOT's own handler catches fatal signals, prints "*** Break *** <what>" and a stack trace, and
# exits with 128 + its own index of the signal (129 for a segfault), not the signal's number.
_ROOT_BREAK = re.compile(r"^\s*\*\*\* Break \*\*\* (.+?)\s*$", re.MULTILINE)
_ROOT_SIGNALS = {
    "segmentation violation": "SIGSEGV",
    "abort": "SIGABRT",
    "bus error": "SIGBUS",
    "illegal instruction": "SIGILL",
    "floating point exception": "SIGFPE",
}
_ROOT_HINT = "The lines below might hint at the cause of the crash"


def describe(status: int, output: str = "") -> str:
    """How the process ended: ``SIGSEGV`` (ROOT's report, else a shell's 139 or Python's -11), else
    ``exit status N``."""
    caught = _ROOT_BREAK.search(output)
    if caught:
        what = caught.group(1)
        return _ROOT_SIGNALS.get(what, f"a fatal signal ({what})")
    number = -status if status < 0 else status - 128 if status > 128 else 0
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"exit status {status}"


def _read(path: str | None) -> str:
    if not path or not os.path.isfile(path):
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - TAIL_BYTES))
        return handle.read().decode("utf-8", errors="replace")


def summary(output: str) -> str:
    """What the report shows: the output's last lines before ROOT's crash report, and the frames
    ROOT points at (its full stack trace of every thread stays in the log)."""
    if not output.strip():
        return "(no output captured)"
    caught = _ROOT_BREAK.search(output)
    if not caught:
        return "\n".join(output.splitlines()[-TAIL_LINES:])
    before = output[: caught.start()].splitlines()[-TAIL_LINES // 2 :]
    frames: list[str] = []
    if _ROOT_HINT in output:
        hint = re.split(r"^=+\s*$", output[output.index(_ROOT_HINT) :], flags=re.MULTILINE)
        frames = [line for line in (hint[1] if len(hint) > 1 else "").splitlines() if line.strip()]
    return "\n".join([*before, caught.group(0).strip(), *frames[: TAIL_LINES // 2]])


def report(role: str, status: int, output_path: str | None) -> int:
    output = _read(output_path)
    how = describe(status, output)
    print(
        f"distrdf-oscar {role}: the function's process ended abnormally ({how})", file=sys.stderr, flush=True
    )
    bucket, key = triggering_object()
    job_id = layout.job_of_key(key)
    if job_id is None:
        return 1  # not a job's object: nobody to tell
    ctx = context.current(bucket, key)
    who = layout.JobKeys.reporter(role, key)
    marker = ErrorMarker(
        job=job_id,
        who=who,
        service=ctx.service,
        trigger=key,
        output=context.noted_task(ctx),
        retryable=True,
        error=f"the {role} process crashed with {how}",
        traceback=summary(output),
        crash=how,
        worker=ctx.worker,
    )
    ctx.publish(job_id, layout.JobKeys(job_id).error(who), data=marker.to_json(), failpoint=False)
    return 1


def on_prestarted_crash() -> int:
    """The report for a pre-started worker that died during a call: the platform runs this in a
    fresh process with the call's environment, plus ``DRO_CRASH_STATUS`` and ``DRO_CRASH_OUTPUT``."""
    entrypoint = os.environ.get(ENTRYPOINT_VARIABLE, "")
    role = next((name for name, spec in ENTRYPOINTS.items() if spec == entrypoint), "function")
    return report(role, int(os.environ[CRASH_STATUS_VARIABLE]), os.environ.get(CRASH_OUTPUT_VARIABLE))


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[1].lstrip("-").isdigit():
        print("usage: python -m distrdf_oscar.functions.crash ROLE STATUS OUTPUT", file=sys.stderr)
        return 2
    return report(argv[0], int(argv[1]), argv[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
