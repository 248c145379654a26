"""What the dashboard keeps per running app: the gateway, sessions and signing secrets."""

import hashlib
import hmac
import threading
from dataclasses import dataclass
from datetime import datetime

from itsdangerous import URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from infrastructure.dashboard_sessions import SessionStore
from infrastructure.http.dashboard.constants import SESSION_LIFETIME
from infrastructure.http.gateway import Gateway
from projections.queries.freshness import ReadSide

# --- per-app state -------------------------------------------------------------------------------


@dataclass
class Dashboard:
    """What the dashboard keeps per running app: the gateway, sessions and signing secrets."""

    gateway: Gateway
    sessions: SessionStore
    secret: bytes
    cookies: URLSafeTimedSerializer

    @classmethod
    def for_gateway(cls, gateway: Gateway) -> "Dashboard":
        # Derived from the pepper, so every worker process signs and checks alike.
        secret = hmac.new(
            gateway.runtime.settings.pepper, b"lowrouter dashboard cookies v1", hashlib.sha256
        ).digest()
        return cls(
            gateway=gateway,
            sessions=SessionStore(gateway.runtime.engine, SESSION_LIFETIME),
            secret=secret,
            cookies=URLSafeTimedSerializer(secret, salt="lowrouter-dashboard"),
        )

    def now(self) -> datetime:
        return self.gateway.clock()

    @property
    def reads(self) -> ReadSide:
        """The read models as pages read them, best effort: a busy SQLite or a failed
        projection may leave a figure a moment behind, which a page can live with (a failed
        usage history must not hide the keys)."""
        return self.gateway.runtime.reads.best_effort

    def derive(self, purpose: str, value: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


_STATE_LOCK = threading.Lock()


async def dashboard_of(request: Request) -> Dashboard:
    gateway: Gateway = request.app.state.gateway
    with _STATE_LOCK:
        current: Dashboard | None = getattr(request.app.state, "dashboard", None)
        if current is None or current.gateway is not gateway:
            current = Dashboard.for_gateway(gateway)
            request.app.state.dashboard = current
    await run_in_threadpool(current.sessions.ensure_schema)
    return current
