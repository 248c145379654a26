"""Webhook signing secrets at rest: AES-256-GCM under a key derived from the server secret.

The key is HKDF-SHA256 of LOWROUTER_TOKEN_PEPPER (the secret that already protects token
hashes), so a copy of the database alone cannot sign a webhook. Each ciphertext is bound to its
endpoint id (associated data): a ciphertext moved to another endpoint does not decrypt. Secrets
live in their own mutable table, not in the event log, so removing an endpoint erases its secret.
"""

import base64
import os
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Column, Engine, String, Table, Text, delete, insert, select

from projections.schema import metadata

NONCE_BYTES = 12

secrets_table = Table(
    "lr_webhook_secrets",
    metadata,
    Column("endpoint_id", String(36), primary_key=True),
    Column("ciphertext", Text, nullable=False),  # base64(nonce + AES-GCM ciphertext and tag)
)


def create_secrets_table(engine: Engine) -> None:
    metadata.create_all(engine, tables=[secrets_table])


class SecretMissing(LookupError):
    """No secret for this endpoint (it was removed)."""


def derive_key(pepper: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"lowrouter webhook secrets v1"
    ).derive(pepper)


class SecretVault:
    def __init__(self, engine: Engine, pepper: bytes) -> None:
        self.engine = engine
        self._aead = AESGCM(derive_key(pepper))

    def store(self, endpoint_id: UUID, secret: str) -> None:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), str(endpoint_id).encode())
        row = {
            "endpoint_id": str(endpoint_id),
            "ciphertext": base64.b64encode(nonce + sealed).decode(),
        }
        with self.engine.begin() as conn:
            conn.execute(insert(secrets_table).values(**row))

    def load(self, endpoint_id: str) -> str:
        with self.engine.connect() as conn:
            text = conn.execute(
                select(secrets_table.c.ciphertext).where(secrets_table.c.endpoint_id == endpoint_id)
            ).scalar_one_or_none()
        if text is None:
            raise SecretMissing(f"no secret for webhook {endpoint_id}")
        raw = base64.b64decode(text)
        nonce, sealed = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        return self._aead.decrypt(nonce, sealed, endpoint_id.encode()).decode()

    def delete(self, endpoint_id: UUID) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(secrets_table).where(secrets_table.c.endpoint_id == str(endpoint_id))
            )
