"""Failed authentication, throttled per client address: after a burst of failures a short ban,
so guessing keys (2,000 in 1.7 s, before 0.3) costs the guesser, not the gateway.

Pure and in memory (one per process: a determined guesser across `--workers N` gets N bursts;
the point is a bound, not a count). Times are seconds on any monotonic clock. At most
`max_addresses` addresses are remembered: the least recently failing are forgotten first.
"""

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class FailureThrottle:
    burst: int = 20  # failures in `window` seconds that start a ban (0: never)
    window: float = 60.0
    ban: float = 60.0
    max_addresses: int = 10_000
    _failures: "OrderedDict[str, deque[float]]" = field(default_factory=OrderedDict)
    _banned: dict[str, float] = field(default_factory=dict)  # address -> ban ends at

    def banned_for(self, address: str, now: float) -> float | None:
        """Seconds of ban left for this address, or None when it may try."""
        ends = self._banned.get(address)
        if ends is None:
            return None
        if now >= ends:
            del self._banned[address]
            return None
        return ends - now

    def failed(self, address: str, now: float) -> bool:
        """Note one failure; True when it starts a ban."""
        if self.burst <= 0:
            return False
        recent = self._failures.pop(address, None) or deque()
        recent.append(now)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.burst:
            self._banned.pop(address, None)
            self._banned[address] = now + self.ban  # bans in the order they end
            while len(self._banned) > self.max_addresses:
                del self._banned[next(iter(self._banned))]
            return True
        self._failures[address] = recent  # most recently failing last
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return False
