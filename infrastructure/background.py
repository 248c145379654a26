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
import time
from collections.abc import Mapping

log = logging.getLogger("lowrouter.background")

RESTART_DELAY = 2.0  # seconds before starting a process that exited; doubled while it keeps
MAX_RESTART_DELAY = 60.0  # failing soon after starting (e.g. a projection failing on an event)
HEALTHY_RUN = 30.0  # seconds: a process that ran this long starts the backoff over
PARENT_PID = "LOWROUTER_PARENT_PID"
PR_SET_PDEATHSIG = 1


def follow_parent() -> None:
    """In the background process: exit when the gateway that started it dies, even by SIGKILL,
    so no orphan keeps the projections' leadership (Linux; elsewhere serve's stop() only)."""
    parent = os.environ.get(PARENT_PID)
    if not parent:
        return
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before we asked to follow it
        sys.exit(0)


class BackgroundProcess:
    """`lowrouter projections run` as a child process, kept running until stop()."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = {
            **environ,
            "LOWROUTER_BACKGROUND": "inline",
            PARENT_PID: str(os.getpid()),
        }
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._started = 0.0
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
            # A session of its own: a Ctrl-C at the terminal stops serve, and serve stops it.
            self._process = subprocess.Popen(
                command, env=self._environ, stdin=subprocess.DEVNULL, start_new_session=True
            )
            self._started = time.monotonic()

    def _keep_running(self) -> None:
        delay = RESTART_DELAY
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - self._started
            delay = RESTART_DELAY if ran >= HEALTHY_RUN else min(delay * 2, MAX_RESTART_DELAY)
            # `serve` configured logging (text or JSON lines): one line, in the chosen format.
            log.error(
                "lowrouter: the projections process exited (%s); restarting it in %g s",
                code,
                delay,
                extra={"event": "background_restart", "exit_code": code},
            )
            if self._stopping.wait(delay):
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
