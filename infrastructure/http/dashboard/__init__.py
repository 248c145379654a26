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

from infrastructure.http.dashboard.constants import COOKIE, ROTATE_AFTER, SESSION_LIFETIME
from infrastructure.http.dashboard.routes import dashboard_routes, install_dashboard

__all__ = ["COOKIE", "ROTATE_AFTER", "SESSION_LIFETIME", "dashboard_routes", "install_dashboard"]
