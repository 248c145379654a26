"""Who is calling: the bearer token, checked for the common mistakes before any lookup.

The product page: the header is exactly `Bearer ` followed by the token. When it is not, the 401
says which mistake was made — without ever echoing the token.
"""

import ipaddress
import re
from collections.abc import Callable, Sequence
from datetime import datetime

from domain.access import NOT_CHECKED, ClientIp
from domain.tokens import Token, TokenFormatError, TokenKind, hash_token, parse_token
from infrastructure.http.errors import ApiError
from projections.lookup import KeyRecord

HOW = "send `Authorization: Bearer lr-sk-…` (exactly `Bearer `, a space, then the key)"


_SCHEME = re.compile(r"(\S*)(\s*)(.*)", re.DOTALL)  # scheme, the gap after it, the rest


def unauthorized(message: str, code: str = "invalid_api_key") -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def token_from_header(header: str | None) -> str:
    """The token text, or a 401 naming what is wrong with the header."""
    if header is None or not header.strip():
        raise unauthorized(f"No API key: {HOW}.", "missing_api_key")
    match = _SCHEME.fullmatch(header)
    assert match is not None  # every group may be empty, so the pattern matches any string
    scheme, gap, rest = match.groups()
    if gap not in ("", " ") and scheme.lower() == "bearer":
        raise unauthorized(
            f"Stray whitespace or a newline around the key (check how it was copied): {HOW}."
        )
    if scheme.lower().startswith("bearer") and scheme.lower() != "bearer":
        if "=" in scheme or rest.startswith("="):
            raise unauthorized(f"Remove the '=' after Bearer: {HOW}.")
        raise unauthorized(f"Malformed Authorization header: {HOW}.")
    if scheme.lower() != "bearer":
        if header.strip().strip("'\"").startswith(("lr-sk-", "lr-mk-")):
            raise unauthorized(f"The header is missing `Bearer `: {HOW}.")
        raise unauthorized(f"The Authorization header is not a bearer token: {HOW}.")
    if rest.startswith("="):
        raise unauthorized(f"Remove the '=' after Bearer: {HOW}.")
    if rest != rest.strip() or any(c.isspace() for c in rest):
        raise unauthorized(
            f"Stray whitespace or a newline around the key (check how it was copied): {HOW}."
        )
    if (len(rest) >= 2 and rest[0] in "'\"" and rest[-1] in "'\"") or rest[:1] in ("'", '"'):
        raise unauthorized(f"Remove the quotes around the key: {HOW}.")
    if not rest:
        raise unauthorized(f"No API key after `Bearer `: {HOW}.", "missing_api_key")
    return rest


def authenticate(
    header: str | None,
    pepper: bytes,
    find_key: Callable[[str], KeyRecord | None],
    now: datetime,
    kind: TokenKind,
    on_refused_use: Callable[[KeyRecord], None] | None = None,
    client_ip: ClientIp = NOT_CHECKED,
) -> KeyRecord:
    """Parse, check the checksum, then one indexed lookup; refuse what the access policy
    refuses (revoked, grace ended, expired, an address outside the allowlist)."""
    token, token_hash = presented_token(header, pepper, kind)
    record = find_key(token_hash)
    if on_refused_use is not None and refused_use(record, now):
        assert record is not None
        on_refused_use(record)
    return admitted(record, token, now, client_ip)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in trusted)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> str | None:
    """Who is calling: the TCP peer, unless the peer is a trusted proxy; then the right-most
    address of X-Forwarded-For that is not a trusted proxy (each proxy appends the address it
    saw, so everything left of the first untrusted hop could have been written by the client)."""
    if peer is None or not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop[:64]
    return hops[0][:64] if hops else peer


def presented_token(header: str | None, pepper: bytes, kind: TokenKind) -> tuple[Token, str]:
    """The token in the header and its hash, or a 401 saying what is wrong with it (format,
    checksum, or a key of the other kind), before any lookup."""
    text = token_from_header(header)
    try:
        token = parse_token(text)
    except TokenFormatError as error:
        raise unauthorized(f"Malformed API key: {error}.") from None
    if token.kind is not kind:
        if kind is TokenKind.INFERENCE:
            raise unauthorized(
                "This is a management key (lr-mk-…); completions need an inference key (lr-sk-…)."
            )
        raise unauthorized(
            "This is an inference key (lr-sk-…); the management API needs a management key "
            "(lr-mk-…)."
        )
    return token, hash_token(pepper, token)


def refused_use(record: KeyRecord | None, now: datetime) -> bool:
    """A use of a key that stopped working (revoked, grace ended, expired): worth recording for
    the security team."""
    return record is not None and record.access_at(now).ended


def admitted(
    record: KeyRecord | None, token: Token, now: datetime, client_ip: ClientIp = NOT_CHECKED
) -> KeyRecord:
    """The key if the access policy lets it be used now, from this address; else the 401 or 403
    that says why not."""
    if record is None:
        raise unauthorized(f"Unknown API key {token.display}: it was never issued by this gateway.")
    access = record.access_at(now, client_ip)
    if access.reason == "revoked":
        raise unauthorized(f"API key {record.display} has been revoked.", "revoked_api_key")
    if access.reason == "grace_ended":
        raise unauthorized(
            f"API key {record.display} was rotated and its grace period has ended; "
            "use the new key.",
            "expired_api_key",
        )
    if access.reason == "expired":
        assert access.ended_at is not None
        raise unauthorized(
            f"API key {record.display} expired at "
            f"{access.ended_at.isoformat().replace('+00:00', 'Z')}; rotate it or ask its owner "
            "for a later expiry.",
            "key_expired",
        )
    if access.reason == "ip_not_allowed":
        raise ApiError(
            403,
            "ip_not_allowed",
            f"API key {record.display} may not be used from {client_ip or 'an unknown address'}: "
            "the address is not in the key's allowed_ips.",
        )
    return record
