"""``python -m selfdistill.serve`` in a subprocess on a free 127.0.0.1 port, for benchmarks and stress runs:
``with ServeProcess(args) as url``, up when ``/health`` answers, terminated (then killed) on exit."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from selfdistill.paths import REPO_ROOT

ROOT = REPO_ROOT


class ServeProcess:
    """The server with ``args`` (its command-line flags, ``--port`` and ``--host`` left to this class)."""

    def __init__(self, args: list[str], *, startup_timeout: float = 300.0):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.cmd = [sys.executable, "-m", "selfdistill.serve", *args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.timeout = startup_timeout

    def __enter__(self) -> str:
        import httpx

        self.proc = subprocess.Popen(self.cmd, cwd=ROOT)
        url, deadline = f"http://127.0.0.1:{self.port}", time.monotonic() + self.timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"the server did not come up: {' '.join(self.cmd)}")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
