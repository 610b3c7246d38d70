"""A real XRootD server (Debian's ``xrootd-server``) serving a folder on loopback.

For tests and benchmarks of ``root://`` datasets on this machine: ``XRootDServer()`` exports a
fresh folder, ``add(path)`` serves a copy of a file and returns its URL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .s3server import free_port


class XRootDMissing(RuntimeError):
    """No ``xrootd`` binary on this machine."""


class XRootDServer:
    """``xrootd`` exporting a fresh folder; ``url(name)`` is a file's ``root://`` URL."""

    def __init__(self) -> None:
        binary = shutil.which("xrootd")
        if binary is None:
            raise XRootDMissing(
                "xrootd is not installed (Debian: apt-get install xrootd-server; .ci/run does it)"
            )
        # The server drops to user nobody: its folders must be readable (pytest's are 0700).
        self.root = tempfile.mkdtemp(prefix="dro-xrootd-")
        self.data = os.path.join(self.root, "data")
        os.makedirs(os.path.join(self.root, "run"))
        os.makedirs(self.data)
        os.chmod(self.root, 0o755)
        for folder in ("run", "data"):
            os.chmod(os.path.join(self.root, folder), 0o777)
        self.port = free_port()
        config = os.path.join(self.root, "xrootd.cfg")
        with open(config, "w") as f:
            f.write(
                f"all.export /\nxrd.port {self.port}\noss.localroot {self.data}\n"
                f"all.adminpath {self.root}/run\nall.pidpath {self.root}/run\n"
            )
        self.log = os.path.join(self.root, "run", "xrootd.log")
        command = [binary, "-c", config, "-n", "dro", "-l", self.log]
        if os.geteuid() == 0:
            command += ["-R", "nobody"]  # xrootd refuses to run as root
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            # xrootd makes its instance's home, <cwd>/<name>, where it starts: inside our folder.
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.root,
        )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"xrootd exited with {self.proc.returncode}; see {self.log}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"xrootd did not listen on port {self.port} within {timeout} s")

    def add(self, path: str) -> str:
        """Serve a copy of the file at ``path``; returns its URL."""
        name = os.path.basename(path)
        target = os.path.join(self.data, name)
        shutil.copy(path, target)
        os.chmod(target, 0o644)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"root://127.0.0.1:{self.port}//{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
