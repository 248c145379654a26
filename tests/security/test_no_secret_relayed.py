"""No secret relayed or printed: an upstream's error body is ours to word (its message, with
credentials and token-like strings removed), and database passwords are masked everywhere."""

import subprocess
from pathlib import Path

import httpx
import orjson

from domain.redaction import REDACTED, redact
from domain.tokens import TokenKind, generate_token
from tests.security.hostile import UPSTREAM_SECRET, hostile_gateway
from tests.support.processes import (
    LOWROUTER,
    free_port,
    serve_environment,
    start_serve,
    wait_until_up,
)

CHAT = {"model": "hostile/model", "messages": [{"role": "user", "content": "hi"}]}
# The token-shaped string the hostile upstream echoes (generated: none is committed).
CLIENT_TOKEN_ECHO = generate_token(TokenKind.INFERENCE).value


def test_a_credential_echoing_upstream_error_is_relayed_sanitized(
    tmp_path: Path, sqlite_url: str
) -> None:
    with hostile_gateway(tmp_path, sqlite_url) as (gateway, upstream):
        _, _, token = gateway.account("echoed")
        auth = {"Authorization": f"Bearer {token}"}
        bodies = [
            (
                400,
                orjson.dumps(
                    {
                        "error": {
                            "message": (
                                f"Incorrect API key provided: {UPSTREAM_SECRET}. Sent header "
                                f"'Authorization: Bearer {UPSTREAM_SECRET}', "
                                f"client {CLIENT_TOKEN_ECHO}, "
                                "max_tokens too large for gpt-4o-mini-2024-07-18"
                            )
                        }
                    }
                ),
            ),
            (422, f"upstream debug: api_key={UPSTREAM_SECRET[:20]}xx\x1b[31m {token}".encode()),
            (401, orjson.dumps({"error": {"message": f"bad credential {UPSTREAM_SECRET}"}})),
        ]
        for status, body in bodies:
            upstream.status, upstream.raw = status, body
            response = httpx.post(gateway.api + "/chat/completions", json=CHAT, headers=auth)
            text = response.text
            assert response.status_code == (502 if status == 401 else status), text
            assert UPSTREAM_SECRET not in text and UPSTREAM_SECRET[:20] not in text
            assert token not in text and CLIENT_TOKEN_ECHO not in text and "\x1b" not in text
            message = response.json()["error"]["message"]
            assert message.startswith("The upstream provider hostile refused the request")
            assert REDACTED in message


def test_redaction_keeps_ordinary_words_and_removes_key_shapes() -> None:
    text = (
        "model gpt-4o-mini-2024-07-18 request 123e4567-e89b-12d3-a456-426614174000: "
        "key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx0123 jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.x"
    )
    cleaned = redact(text)
    assert "gpt-4o-mini-2024-07-18" in cleaned and "123e4567-e89b-12d3-a456-426614174000" in cleaned
    assert "AbCdEfGhIjKlMnOpQrStUvWx0123" not in cleaned and "eyJhbGciOiJIUzI1NiJ9" not in cleaned
    assert len(redact("x" * 5000)) <= 300


def test_database_passwords_are_masked_at_start_up_in_errors_and_in_status(
    tmp_path: Path, postgres_url: str
) -> None:
    password = "hunter2-database-password"
    with_password = postgres_url.replace("://postgres@", f"://postgres:{password}@", 1)
    assert password in with_password
    port = free_port()
    env = serve_environment(
        tmp_path, LOWROUTER_DATABASE_URL=with_password, LOWROUTER_BACKGROUND="inline"
    )
    process = start_serve(
        env,
        port,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_up(port, process)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "postgres:***@" in output and password not in output

    status = subprocess.run(
        [LOWROUTER, "projections", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert "postgres:***@" in status.stderr and password not in status.stdout + status.stderr

    for url in (
        f"postgresql://postgres:{password}@127.0.0.1:1/nowhere",  # cannot connect
        f"postgresql://postgres:{password}@127.0.0.1:5432",  # no database: a settings error
    ):
        failed = subprocess.run(
            [LOWROUTER, "--database-url", url, "projections", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode != 0
        assert password not in failed.stdout + failed.stderr, failed.stderr
        assert "***" in failed.stderr, failed.stderr
