"""The background process `lowrouter serve` starts beside its workers: the projections, the
reconciler and the tamper-evidence chain (`lowrouter projections run`), restarted if it exits.

Running them in their own process keeps their CPU work off the workers' event loops and their
GIL (see README, Performance). Workers still bring the key lookup up to date themselves when a
command changes access (ProjectionRunner.wait_for), so nothing waits for this process to be up.
"""

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping

log = logging.getLogger("lowrouter.background")

RESTART_DELAY = 2.0  # seconds before starting a process that exited again
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGTERM the child when the gateway dies, even by SIGKILL, so no orphan keeps
    the projections' leadership."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class BackgroundProcess:
    """`lowrouter projections run` as a child process, kept running until stop()."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = {**environ, "LOWROUTER_BACKGROUND": "inline"}
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._keep_running, daemon=True, name="background")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> "BackgroundProcess":
        self._spawn()
        self._thread.start()
        return self

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "infrastructure.cli", "projections", "run"]
        with self._lock:
            if self._stopping.is_set():
                return
            self._process = subprocess.Popen(
                command,
                env=self._environ,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def _keep_running(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            log.error("the background process exited (%s); restarting it", code)
            print(
                f"lowrouter: the projections process exited ({code}); restarting it",
                file=sys.stderr,
                flush=True,
            )
            if self._stopping.wait(RESTART_DELAY):
                return
            self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_background_process() -> BackgroundProcess:
    """Start the child from this process's environment (which `serve` prepared)."""
    return BackgroundProcess(os.environ).start()
