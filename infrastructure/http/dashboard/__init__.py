"""The dashboard at /dashboard: server-rendered pages to manage an account's keys in a browser.

Signing in takes one of the account's management keys (`lr-mk-…`), checked like any management
request, and starts a session: a random session id in a signed, HttpOnly, SameSite=Strict cookie
(Secure over https). The cookie never holds the token. Sessions live in the database (so every
worker process of `lowrouter serve` knows them, and signing out ends one everywhere), and every
request checks both the session and that its management key is still active in the key lookup: a
revoked management key ends its sessions on their next request.

Every form carries a CSRF token derived from the session (sign-in: from a signed pre-session
cookie) and every POST checks it (403 otherwise, nothing changed). Every change goes through a
page that names the key and has an explicit confirm button, so it all works without JavaScript;
the only script copies a token to the clipboard. The usage chart is SVG drawn on the server.

A token is rendered in exactly one place: the page answering the POST that created or rotated
the key, marked `Cache-Control: no-store`, never behind a redirect. Resubmitting that form (a
browser reload of the result) is recognised by a one-time form id and creates nothing more.
"""

import sys
import types
from typing import Any

from infrastructure.http.dashboard.chart import (
    CHART_COLOURS,
    Bar,
    Chart,
    daily_chart,
    nice_ceiling,
)
from infrastructure.http.dashboard.constants import (
    BASE,
    CHART_DAYS,
    COOKIE,
    HERE,
    MAX_FORM_BYTES,
    MAX_FORM_FIELDS,
    MAX_GRACE_SECONDS,
    MAX_MANAGEMENT_KEY_FIELD,
    ROTATE_AFTER,
    SECURITY_HEADERS,
    SESSION_LIFETIME,
    SIGNIN_COOKIE,
    SIGNIN_FORM_LIFETIME,
    STATIC,
    STATIC_DIR,
    TEMPLATE_DIR,
    USAGE_PAGE_SIZE,
)
from infrastructure.http.dashboard.forms import (
    ScopeForm,
    catalogue_models,
    catalogue_regions,
    read_form,
    scope_changes,
)
from infrastructure.http.dashboard.history import (
    key_history,
)
from infrastructure.http.dashboard.key_pages import (
    KEY_NOTICES,
    catch_up_usage,
    changeable_key,
    create_key,
    key_id_of,
    key_notice,
    keys_page,
    new_key_form,
    new_key_page,
    own_key,
    rename_key,
    rename_page,
    revoke_key,
    rotate_key,
    rotate_page,
    scope_key,
    scope_page,
    token_page,
)
from infrastructure.http.dashboard.rendering import (
    Handler,
    Refusal,
    Stop,
    T,
    call,
    not_found,
    page,
    render,
    see_other,
    templates,
)
from infrastructure.http.dashboard.routes import (
    _pages,
    dashboard_routes,
    install_dashboard,
    not_found_page,
    redirect_home,
)
from infrastructure.http.dashboard.rows import (
    EVENT_NAMES,
    HistoryRow,
    KeyRow,
    UsageRow,
    age_text,
    credits_text,
    history_row,
    iso,
    key_row,
    limit_text,
    models_text,
    region_text,
    usage_row,
    when,
)
from infrastructure.http.dashboard.sessions import (
    clear_cookie,
    client_address,
    csrf_refusal,
    current_session,
    is_https,
    new_form_id,
    posted,
    set_cookie,
    signed_in,
    use_form_once,
)
from infrastructure.http.dashboard.signin import (
    SIGNIN_NOTICES,
    home,
    sign_in,
    sign_in_form,
    sign_in_page,
    sign_out,
    signin_nonce,
)
from infrastructure.http.dashboard.state import (
    _STATE_LOCK,
    Dashboard,
    dashboard_of,
)
from infrastructure.http.dashboard.store import (
    Session,
    SessionStore,
    _sha256,
    session_metadata,
    sessions_table,
    to_us_delta,
    used_forms_table,
)
from infrastructure.http.dashboard.usage import (
    parse_since,
    spend_by_day,
    usage_page_view,
)

__all__ = [
    "BASE",
    "CHART_COLOURS",
    "CHART_DAYS",
    "COOKIE",
    "EVENT_NAMES",
    "HERE",
    "KEY_NOTICES",
    "MAX_FORM_BYTES",
    "MAX_FORM_FIELDS",
    "MAX_GRACE_SECONDS",
    "MAX_MANAGEMENT_KEY_FIELD",
    "ROTATE_AFTER",
    "SECURITY_HEADERS",
    "SESSION_LIFETIME",
    "SIGNIN_COOKIE",
    "SIGNIN_FORM_LIFETIME",
    "SIGNIN_NOTICES",
    "STATIC",
    "STATIC_DIR",
    "TEMPLATE_DIR",
    "USAGE_PAGE_SIZE",
    "_STATE_LOCK",
    "Bar",
    "Chart",
    "Dashboard",
    "Handler",
    "HistoryRow",
    "KeyRow",
    "Refusal",
    "ScopeForm",
    "Session",
    "SessionStore",
    "Stop",
    "T",
    "UsageRow",
    "_pages",
    "_sha256",
    "age_text",
    "call",
    "catalogue_models",
    "catalogue_regions",
    "catch_up_usage",
    "changeable_key",
    "clear_cookie",
    "client_address",
    "create_key",
    "credits_text",
    "csrf_refusal",
    "current_session",
    "daily_chart",
    "dashboard_of",
    "dashboard_routes",
    "history_row",
    "home",
    "install_dashboard",
    "is_https",
    "iso",
    "key_history",
    "key_id_of",
    "key_notice",
    "key_row",
    "keys_page",
    "limit_text",
    "models_text",
    "new_form_id",
    "new_key_form",
    "new_key_page",
    "nice_ceiling",
    "not_found",
    "not_found_page",
    "own_key",
    "page",
    "parse_since",
    "posted",
    "read_form",
    "redirect_home",
    "region_text",
    "rename_key",
    "rename_page",
    "render",
    "revoke_key",
    "rotate_key",
    "rotate_page",
    "scope_changes",
    "scope_key",
    "scope_page",
    "see_other",
    "session_metadata",
    "sessions_table",
    "set_cookie",
    "sign_in",
    "sign_in_form",
    "sign_in_page",
    "sign_out",
    "signed_in",
    "signin_nonce",
    "spend_by_day",
    "templates",
    "to_us_delta",
    "token_page",
    "usage_page_view",
    "usage_row",
    "use_form_once",
    "used_forms_table",
    "when",
]


class _Package(types.ModuleType):
    """Setting a name on the package also sets it in the dashboard modules that share it, as it did
    when the dashboard was one module (so `monkeypatch.setattr(dashboard, "USAGE_PAGE_SIZE", 2)`
    still reaches the usage page)."""

    def __setattr__(self, name: str, value: Any) -> None:
        missing = object()
        old = self.__dict__.get(name, missing)
        if old is not missing:
            prefix = self.__name__ + "."
            for module_name, module in list(sys.modules.items()):
                if module_name.startswith(prefix) and getattr(module, name, missing) is old:
                    setattr(module, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
