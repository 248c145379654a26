"""An upstream's refusal, in our own words: its status and a sanitized version of its message.

An upstream error body is outside text: it may echo our provider credential (a misconfigured
proxy, a debugging upstream) or a token. We relay only the message field (or the start of a body
that is not JSON), with the provider's credential, bearer values and token-like strings removed
(domain.redaction), never the body itself.
"""

from typing import Any

import orjson

from domain.redaction import redact
from infrastructure.catalogue import Provider


def upstream_message(content: bytes, provider: Provider) -> str:
    """The sanitized message of an upstream error body ("" when it has none)."""
    message: Any
    try:
        data = orjson.loads(content)
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data["error"]
    except (ValueError, KeyError, TypeError, AttributeError):
        message = content[:1000].decode("utf-8", "replace")
    if not isinstance(message, str):
        message = ""
    return redact(message, [provider.api_key])


def refusal_text(provider: Provider, status: int, content: bytes) -> str:
    message = upstream_message(content, provider)
    detail = f": {message}" if message else ""
    return f"The upstream provider {provider.name} refused the request ({status}){detail}"
