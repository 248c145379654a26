"""Gateway "hosts" on this machine: each a network namespace (`ip netns`) joined to the root
namespace by a veth pair on a private test range (10.213.N.0/24: .1 on our side, .2 in the
host). No routes beyond each pair, so a host talks to us and nothing else; PostgreSQL stays on
127.0.0.1 and hosts reach it through a forwarder (forward.py) or a PgBouncer listening on our
side of their pair. Everything is created by `hosts()` and removed when it ends.
"""

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from infrastructure.database import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL

FORWARDER = Path(__file__).with_name("forward.py")
# A vanished host is noticed by TCP keepalives on the sockets facing it: PgBouncer's, or the
# forwarder's, standing in for the probes lowrouter asks PostgreSQL's backends to make (they
# face the forwarder here, which answers them). A lock the host's transaction held is free again
# within KEEPALIVE_BOUND of its vanishing (2 s for the probes' timers and our looks).
KEEPALIVE = (KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)
KEEPALIVE_BOUND = KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT + 2.0


def require_namespaces() -> None:
    if os.geteuid() != 0 or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode:
        message = "the multi-host tests need root and `ip netns` (iproute2)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Host:
    name: str  # the namespace
    veth: str  # our end of the pair
    address: str  # the host's address (in its namespace)
    gateway: str  # our address on its link
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start a process inside this host, in a process group of its own."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *command],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        found = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def crash(self) -> None:
        """The host vanishes: its link goes down first (no goodbye reaches anyone), then
        every process in it is killed."""
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "set", self.veth, "down")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid in self.pids():  # anything left behind in the namespace
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _free_subnets(count: int) -> list[int]:
    taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    free = [n for n in range(1, 255) if f"10.213.{n}." not in taken]
    return random.sample(free, count)


@contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """`count` hosts, each in its own namespace with its own veth pair; all removed after."""
    require_namespaces()
    tag = uuid.uuid4().hex[:6]
    made: list[Host] = []
    try:
        for i, subnet in enumerate(_free_subnets(count)):
            host = Host(
                name=f"lrh-{tag}-{i}",
                veth=f"lrv{tag}{i}",
                address=f"10.213.{subnet}.2",
                gateway=f"10.213.{subnet}.1",
            )
            ip("netns", "add", host.name)
            made.append(host)
            ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name)
            ip("addr", "add", f"{host.gateway}/24", "dev", host.veth)
            ip("link", "set", host.veth, "up")
            inside = ("netns", "exec", host.name, "ip")
            ip(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip(*inside, "link", "set", "eth0", "up")
            ip(*inside, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            host.stop()
        for host in made:
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("link", "del", host.veth)  # removes both ends
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", host.name)


@contextmanager
def forwarder(listen: Sequence[str], target: tuple[str, int], port: int) -> Iterator[None]:
    """A TCP forwarder on our side of the hosts' links to PostgreSQL on 127.0.0.1."""
    keepalive = ",".join(map(str, KEEPALIVE))
    command = [
        sys.executable,
        str(FORWARDER),
        f"{target[0]}:{target[1]}",
        str(port),
        keepalive,
        *listen,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
