"""Pre-started workers: processes with ROOT imported that call a service's Python entry point.

An emulator speed-up for the test suite, without an OSCAR counterpart (OSCAR starts a fresh
Kubernetes Job per invocation; what it keeps warm is an exposed service, ``functions/pool.py``).

A service opts in with the environment variable ``DRO_ENTRYPOINT=module:function``
(the function takes no arguments; its cold ``script`` must call the same
function). The worker runs the call with the invocation's environment, cwd and
``TMP*`` directories in place, its fds 1 and 2 redirected into the job's log
(so C++ output is captured too), and restores its own state afterwards.

Run as ``python -m distrdf_oscar.platform.embedded.prestarted FD``: FD is this end of a
socket pair to the platform, carrying pickled dicts.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
import warnings
from multiprocessing.connection import Connection
from typing import Any, cast

from ...protocol.contract import CRASH_OUTPUT_VARIABLE, CRASH_STATUS_VARIABLE

log = logging.getLogger(__name__)

# A fresh interpreter calls a crash hook (module:function, no arguments).
_CALL_HOOK = "import importlib, sys; m, _, f = sys.argv[1].partition(':'); sys.exit(getattr(importlib.import_module(m), f)())"


class WorkerDied(RuntimeError):
    """The worker process ended during a call (a crash, or it was killed)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # as subprocess reports it: -N for signal N


# -- inside the worker process -------------------------------------------------


def _flush_all() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    # C stdio buffers (printf from C++) would otherwise be flushed into
    # whatever fd 1 is after the call.
    ctypes.CDLL(None).fflush(None)


def _call(task: dict[str, Any]) -> dict[str, Any]:
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_path = list(sys.path)
    log_fd = os.open(task["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _flush_all()
    saved_fds = os.dup(1), os.dup(2)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    outcome = "returned"
    try:
        os.environ.clear()
        os.environ.update(task["env"])
        extra = [p for p in task["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        sys.path[:0] = extra
        os.chdir(task["cwd"])
        tempfile.tempdir = None  # re-read TMPDIR, which points into the invocation
        module_name, _, function_name = task["entrypoint"].partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        function()
    except SystemExit as exc:
        outcome = f"exited with {exc.code!r}"
    except BaseException:  # noqa: BLE001 - the supervisor ignores failures; the log keeps them
        traceback.print_exc()
        outcome = "raised an exception"
    finally:
        _flush_all()
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in saved_fds:
            os.close(fd)
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        tempfile.tempdir = None
        _reset_root()
    return {"outcome": outcome}


def _reset_root() -> None:
    # A function may leave gDirectory pointing at one of its files.
    root = sys.modules.get("ROOT")
    if root is not None:
        root.gROOT.cd()


def worker_main(fd: int) -> None:
    conn = Connection(fd)
    # The wheel's "alpha stage" notice would land on the platform's stderr once
    # per worker; cold functions still show it in their own logs.
    warnings.filterwarnings("ignore", message=r"\s*This distribution of ROOT is in alpha stage")
    import ROOT

    ROOT.gROOT.SetBatch(True)
    conn.send({"ready": True, "pid": os.getpid()})
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return  # the platform is gone
        conn.send(_call(task))


# -- inside the platform process -----------------------------------------------


class PrestartedWorker:
    """The platform's handle on one worker process."""

    def __init__(self, package_root: str, env: dict[str, str]) -> None:
        import socket

        ours, theirs = socket.socketpair()
        self._conn = Connection(os.dup(ours.fileno()))
        ours.close()
        child_env = dict(env)
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        # Own session: killing the group also ends whatever a function started.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=child_env,
            start_new_session=True,
        )
        theirs.close()
        self.pid = self.proc.pid
        self.ready = threading.Event()
        self.failed = False
        self.killed = False

    def wait_ready(self) -> None:
        """Block until ROOT is imported in the worker (called on a background thread)."""
        try:
            message = self._conn.recv()
            if not message.get("ready"):
                raise WorkerDied("unexpected first message")
        except (EOFError, OSError, WorkerDied):
            self.failed = True
            if not self.killed:  # a worker stopped while starting did not fail
                log.error("pre-started worker %d failed to start (%s)", self.pid, _how(self.proc.wait()))
        self.ready.set()

    def call(self, task: dict[str, Any]) -> dict[str, Any]:
        try:
            self._conn.send(task)
            return cast(dict[str, Any], self._conn.recv())
        except (EOFError, OSError) as err:
            status = self.proc.wait()
            raise WorkerDied(f"pre-started worker {self.pid} died ({_how(status)})", status) from err

    def kill(self) -> None:
        """SIGKILL the worker's process group: a pre-started worker has nothing to save."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()
        self._conn.close()


def _how(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit code {status}"


def report_crash(
    hook: str, env: dict[str, str], cwd: str, log_path: str, status: int, package_root: str
) -> None:
    """Run a service's crash hook for a call its worker did not survive (the worker cannot
    report its own death), in a fresh process with the call's environment and its output so far."""
    hook_env = {
        **env,
        CRASH_STATUS_VARIABLE: str(128 - status if status < 0 else status),
        CRASH_OUTPUT_VARIABLE: log_path,
    }
    hook_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    with open(log_path, "ab") as out:
        subprocess.run(
            [sys.executable, "-c", _CALL_HOOK, hook],
            env=hook_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )


class PrestartedPool:
    """``size`` pre-started workers; a dead one is replaced in the background."""

    def __init__(self, size: int, package_root: str, env: dict[str, str]) -> None:
        self.package_root = package_root
        self._env = env
        self._lock = threading.Condition()
        self._idle: list[PrestartedWorker] = []
        self._all: list[PrestartedWorker] = []
        self._stopped = False
        for _ in range(size):
            self._add()

    def _add(self) -> None:
        worker = PrestartedWorker(self.package_root, self._env)
        with self._lock:
            self._all.append(worker)
        thread = threading.Thread(
            target=self._on_ready, args=(worker,), name=f"prestarted-{worker.pid}", daemon=True
        )
        thread.start()

    def _on_ready(self, worker: PrestartedWorker) -> None:
        worker.wait_ready()
        with self._lock:
            if not (worker.failed or self._stopped):
                self._idle.append(worker)
                self._idle.sort(key=lambda w: w.pid)
            self._lock.notify_all()

    def wait_ready(self, timeout: float) -> bool:
        with self._lock:
            workers = list(self._all)
        return all(w.ready.wait(timeout) for w in workers) and not any(w.failed for w in workers)

    def acquire(self, wait: float = 0.0) -> PrestartedWorker | None:
        """An idle worker; if none is idle but one is starting (replacing a dead one), wait up
        to ``wait`` seconds for it: that is quicker than a cold start competing for the CPU."""
        with self._lock:
            self._lock.wait_for(lambda: self._idle or self._stopped or not self._starting(), timeout=wait)
            return self._idle.pop(0) if self._idle and not self._stopped else None

    def _starting(self) -> bool:
        return any(not w.ready.is_set() for w in self._all)

    def release(self, worker: PrestartedWorker) -> None:
        with self._lock:
            if not self._stopped:
                self._idle.append(worker)
                self._idle.sort(key=lambda w: w.pid)
                self._lock.notify_all()

    def replace(self, worker: PrestartedWorker) -> None:
        """Discard a dead (or killed) worker and start another in its place."""
        worker.kill()
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
            if self._stopped:
                return
        self._add()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            workers, self._all, self._idle = list(self._all), [], []
            self._lock.notify_all()
        for worker in workers:
            worker.kill()


if __name__ == "__main__":
    worker_main(int(sys.argv[1]))
