"""The embedded object store: moto's S3 server run as its own process on loopback."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import cast

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return cast(int, sock.getsockname()[1])


def _die_with_parent() -> None:
    # Runs in the forked child before exec: if the platform process is killed
    # outright, the kernel kills the S3 server too instead of orphaning it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _server_command(port: int) -> list[str]:
    # moto, installed beside the platform's code, answering as MinIO does (moto_as_minio.py).
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_as_minio.py")
    return [sys.executable, script, "-H", "127.0.0.1", "-p", str(port)]


class S3Server:
    """Starts ``moto_server`` on a free loopback port and stops it without leaving a zombie.

    Call :meth:`launch` early (it returns at once) and :meth:`wait_ready` when
    the server is needed: moto takes about a second to import, which overlaps
    with the rest of the platform's start-up.
    """

    def __init__(self, log_path: str | None = None) -> None:
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._attempts = 0
        self.port = 0

    @property
    def endpoint(self) -> str:
        """``host:port`` without a scheme, as ``minio.Minio`` takes it."""
        return f"127.0.0.1:{self.port}"

    def launch(self, attempts: int = 3) -> None:
        self._attempts = attempts
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(self._log_path, "ab")) if self._log_path else subprocess.DEVNULL
            # Called from the platform's main thread before any other thread
            # exists, which is what makes the pre-exec hook safe to use.
            self._proc = subprocess.Popen(
                _server_command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no other thread exists yet
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the server accepts connections; retry on another port if it lost a race."""
        assert self._proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                # Most likely the port was taken between choosing and binding it.
                self._attempts -= 1
                if self._attempts <= 0:
                    raise RuntimeError(f"moto_server exited with code {self._proc.returncode}")
                log.warning(
                    "moto_server exited early (code %s); retrying on another port", self._proc.returncode
                )
                self._spawn()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not answer on port {self.port} within {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self, grace: float = 3.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            if proc is not None:
                proc.wait()
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
