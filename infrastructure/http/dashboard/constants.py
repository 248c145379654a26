"""Where the dashboard lives, its cookies, lifetimes, limits and security headers."""

from datetime import timedelta
from pathlib import Path

from domain.policy import ROTATE_AFTER as ROTATE_AFTER  # one home: domain.policy

BASE = "/dashboard"
STATIC = BASE + "/static"
HERE = Path(__file__).parent.parent
TEMPLATE_DIR = HERE / "templates" / "dashboard"
STATIC_DIR = HERE / "static"

COOKIE = "lr_dashboard"
SIGNIN_COOKIE = "lr_dashboard_signin"
SESSION_LIFETIME = timedelta(hours=12)
SIGNIN_FORM_LIFETIME = timedelta(hours=1)
USAGE_PAGE_SIZE = 50
CHART_DAYS = 30
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 500
MAX_MANAGEMENT_KEY_FIELD = 200

# The navigation: (nav id, label, path under BASE). A new page adds its line here and passes
# `nav=` its id to `render`.
NAV = [
    ("overview", "Overview", "/overview"),
    ("keys", "Keys", "/keys"),
    ("usage", "Usage", "/usage"),
    ("webhooks", "Webhooks", "/webhooks"),
    ("management-keys", "Management keys", "/management-keys"),
]

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
