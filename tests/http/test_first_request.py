"""The first request after start costs what the next ones do: nothing it needs is built on its
time. In a fresh interpreter (a subprocess: this one has imported everything already), a
gateway on the demo catalogue answers its first completion without importing a module (before,
anyio's asyncio backend and the demo upstream were imported then: 100-200 ms on a 2-core
machine)."""

import json
import subprocess
import sys
from pathlib import Path

from tests.support.stores import PEPPER

SCRIPT = """
import json, socket, sys
from domain.actor import Actor
from domain.scope import Scope
from infrastructure.http.app import create_app
from infrastructure.runtime import open_runtime
from infrastructure.server import load_catalogue_for
from infrastructure.settings import load_settings
from tests.support.servers import LiveServer

directory, pepper = sys.argv[1], sys.argv[2]
settings = load_settings(
    {"LOWROUTER_TOKEN_PEPPER": pepper, "LOWROUTER_DATA_DIR": directory},
    database_url=f"sqlite:///{directory}/lowrouter.db",
)
runtime = open_runtime(settings)
operator = Actor("operator", "first-request")
account = runtime.app.open_account("first", operator, credits=10**9).account
token = runtime.app.create_key(account.id, "k", Scope(), operator).token.value
server = LiveServer(create_app(runtime, load_catalogue_for(settings), run_background=False))
port = int(server.start().rsplit(":", 1)[1])
body = json.dumps({"model": "lowrouter/echo", "messages": [{"role": "user", "content": "Hi"}]})
request = (
    "POST /api/v1/chat/completions HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n"
    f"Authorization: Bearer {token}\\r\\nContent-Type: application/json\\r\\n"
    f"Content-Length: {len(body)}\\r\\n\\r\\n{body}"
).encode()
"127.0.0.1".encode("idna")  # what the client's connect imports (encodings.idna), beforehand
before = set(sys.modules)
with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
    client.sendall(request)
    answer = b""
    while chunk := client.recv(65536):
        answer += chunk
imported = sorted(set(sys.modules) - before)
server.stop()
print(json.dumps({"status": answer.split(b" ", 2)[1].decode(), "imported": imported}))
"""


def test_the_first_completion_after_start_imports_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), PEPPER],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"status": "200", "imported": []}, outcome
