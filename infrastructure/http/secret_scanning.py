"""GitHub's secret-scanning partner endpoint (API.md, Leaked keys).

GitHub POSTs a JSON array of `{token, type, url, source}` it found in public content, signed with
ECDSA P-256 / SHA-256: the base64 DER signature of the raw body in `Github-Public-Key-Signature`,
made with the key named in `Github-Public-Key-Identifier`. The public keys are read from the file
LOWROUTER_GITHUB_SCANNING_KEYS names (GitHub's `{"public_keys": [...]}` shape, as served by its
`/meta/public_keys/secret_scanning` API), on every report so a rotated file takes effect at once.

The signature is verified before anything else is read: a bad or missing one is a 401 and
changes nothing. Then each token is answered `true_positive` (a key of this gateway) or
`false_positive`; every true positive is recorded on the key (the URL where it was found) and,
under LOWROUTER_LEAK_POLICY=revoke (the default), revoked with reason `leak` by the actor
"GitHub secret scanning" (application/leaks.py).
"""

import base64
import binascii
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from application.leaks import FoundKey, LeakReport, handle_reports
from domain.actor import Actor
from domain.leaks import MAX_SOURCE_LENGTH, MAX_URL_LENGTH
from infrastructure.http.errors import ApiError
from infrastructure.http.gateway import Gateway
from infrastructure.http.jsonresponse import json_response
from projections.queries.forensics import match_of_token_hash

GITHUB = Actor("system", "GitHub secret scanning")
MAX_REPORTS = 1000  # tokens in one report
MAX_TOKEN_LENGTH = 200
MAX_TYPE_LENGTH = 100


class BadSignature(Exception):
    pass


def load_public_keys(path: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    """Key identifier -> P-256 public key, from GitHub's public keys document."""
    document = orjson.loads(path.read_bytes())
    found: dict[str, ec.EllipticCurvePublicKey] = {}
    for entry in document.get("public_keys", []):
        key = load_pem_public_key(entry["key"].encode())
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            found[str(entry["key_identifier"])] = key
    return found


def verify_signature(
    keys: dict[str, ec.EllipticCurvePublicKey],
    identifier: str | None,
    signature: str | None,
    body: bytes,
) -> None:
    if not identifier or not signature:
        raise BadSignature("the report is not signed")
    key = keys.get(identifier)
    if key is None:
        raise BadSignature("the report is signed with a key this gateway does not know")
    try:
        key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise BadSignature("the report's signature does not match") from None


def parse_reports(body: bytes) -> list[LeakReport]:
    """GitHub's array, each field bounded before it goes further."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "The report is not valid JSON.") from None
    if not isinstance(items, list) or len(items) > MAX_REPORTS:
        raise ApiError(
            422, "invalid_body", f"The report must be a JSON array of at most {MAX_REPORTS}."
        )
    reports = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise ApiError(422, "invalid_body", "Each entry needs a string 'token'.")
        url, source, kind = item.get("url"), item.get("source"), item.get("type")
        reports.append(
            LeakReport(
                token=item["token"][:MAX_TOKEN_LENGTH],
                url=url[:MAX_URL_LENGTH] if isinstance(url, str) else "",
                source=source[:MAX_SOURCE_LENGTH] if isinstance(source, str) else "",
                token_type=kind[:MAX_TYPE_LENGTH] if isinstance(kind, str) else "",
            )
        )
    return reports


def find_key(gateway: Gateway, token_hash: str) -> FoundKey | None:
    match = gateway.runtime.reads.best_effort.ask(match_of_token_hash, token_hash)
    if match is None:
        return None
    return FoundKey(match.kind, UUID(match.key_id), UUID(match.account_id))


async def github_report(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    settings = gateway.runtime.settings
    if settings.github_scanning_keys is None:
        raise ApiError(
            503,
            "secret_scanning_not_configured",
            "Set LOWROUTER_GITHUB_SCANNING_KEYS to GitHub's secret-scanning public keys file.",
        )
    body = await gateway.read_body(request)
    try:
        keys = await run_in_threadpool(load_public_keys, settings.github_scanning_keys)
        verify_signature(
            keys,
            request.headers.get("github-public-key-identifier"),
            request.headers.get("github-public-key-signature"),
            body,
        )
    except BadSignature as error:
        raise ApiError(401, "invalid_signature", str(error)) from None
    reports = parse_reports(body)
    answers = await run_in_threadpool(
        handle_reports,
        gateway.runtime.app,
        lambda token_hash: find_key(gateway, token_hash),
        reports,
        GITHUB,
        settings.leak_policy,
    )
    return json_response([_answer(item, real) for item, real in zip(reports, answers, strict=True)])


def _answer(report: LeakReport, real: bool) -> dict[str, Any]:
    """GitHub's response shape. `token_raw` is GitHub's own find, returned to GitHub only."""
    return {
        "token_raw": report.token,
        "token_type": report.token_type,
        "label": "true_positive" if real else "false_positive",
    }


secret_scanning_routes = [
    Route("/api/v1/secret-scanning/github", github_report, methods=["POST"], name="github-scanning")
]
