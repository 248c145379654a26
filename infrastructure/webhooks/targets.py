"""Which webhook targets may be called: not loopback, private, link-local or otherwise
non-public addresses (a webhook must not become a way to reach the gateway's own network),
unless LOWROUTER_WEBHOOKS_ALLOW_PRIVATE=true.

Checked when an endpoint is added and again before every delivery (a name can be made to
resolve elsewhere later); the delivery connects to the very address that was checked.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from domain.webhooks import InvalidWebhook


class TargetRefused(InvalidWebhook):
    """The URL's host is, or resolves to, an address webhooks may not call."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise TargetRefused(f"the webhook host {host[:100]!r} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


def check_target(url: str, allow_private: bool) -> list[str]:
    """The addresses the URL's host resolves to; TargetRefused if any is not public."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise TargetRefused(
                f"the webhook host {host[:100]!r} is a loopback, private or link-local address "
                f"({refused[0]}); set LOWROUTER_WEBHOOKS_ALLOW_PRIVATE=true to allow it"
            )
    return addresses
