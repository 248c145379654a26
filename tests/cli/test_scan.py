"""`lowrouter scan`: real-format tokens (prefix and checksum) in a tree of files and in a git
history, shown by file, line and display form only; exit 1 when any is found; `--check` and
`--revoke` against the database. The finder matches exactly the regex published for scanners."""

import subprocess
from pathlib import Path

import pytest

from domain.actor import Actor
from domain.scope import Scope
from domain.tokens import TokenKind, generate_token
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from tests.support.cli import Cli

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """`lowrouter …` in this process (scanning is offline: one store is enough)."""
    home = tmp_path / "home"
    home.mkdir()
    return Cli(f"sqlite:///{home}/lowrouter.db", home)


def wrong_checksum(token: str) -> str:
    return token[:-1] + ("0" if token[-1] != "0" else "1")


def tree(root: Path) -> tuple[str, str, str]:
    """A small project with a live-looking token, a management token and a near miss."""
    sk, mk = generate_token(TokenKind.INFERENCE).value, generate_token(TokenKind.MANAGEMENT).value
    near = wrong_checksum(generate_token(TokenKind.INFERENCE).value)
    (root / "src").mkdir(parents=True)
    (root / "src" / "settings.py").write_text(f'DEBUG = True\n\nAPI_KEY = "{sk}"\n')
    (root / "deploy.env").write_text(f"LOWROUTER_MANAGEMENT_KEY={mk}\nOTHER={near}\n")
    (root / "notes.md").write_text(f"longer strings are not tokens: x{sk}y, {sk}_suffix\n")
    (root / "image.bin").write_bytes(b"\x00\xff" * 1000)
    return sk, mk, near


def test_scan_finds_real_tokens_in_files_masked_and_exits_1(cli: Cli, tmp_path: Path) -> None:
    sk, mk, near = tree(tmp_path / "project")
    result = cli("scan", str(tmp_path / "project"))
    assert result.code == 1, result.stderr
    output = result.stdout + result.stderr
    for secret in (sk, mk, near, sk[6:], mk[6:]):
        assert secret not in output
    lines = result.stdout.splitlines()[1:]
    assert [line.split() for line in lines] == [
        [f"{tmp_path}/project/deploy.env:1", f"{mk[:10]}…{mk[-4:]}"],
        [f"{tmp_path}/project/src/settings.py:3", f"{sk[:10]}…{sk[-4:]}"],
    ]  # not the wrong checksum, nor the tokens inside longer words (notes.md)
    assert "MiB/s" in result.stderr

    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.txt").write_text(f"nothing here but {near}\n")
    assert cli("scan", str(clean)).code == 0


def test_scan_git_finds_a_token_removed_in_a_later_commit(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    token = generate_token(TokenKind.INFERENCE).value

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=repo, check=True, capture_output=True,
        )  # fmt: skip

    git("init", "-q")
    (repo / "app.py").write_text("import os\n")
    git("add", "app.py")
    git("commit", "-qm", "start")
    (repo / "app.py").write_text(f"import os\nKEY = '{token}'\n")
    git("commit", "-qam", "oops")
    (repo / "app.py").write_text("import os\nKEY = os.environ['LOWROUTER_API_KEY']\n")
    git("commit", "-qam", "fix")

    assert cli("scan", str(repo)).code == 0  # the working tree is clean now
    result = cli("scan", "--git", str(repo), "--format", "json")
    assert result.code == 1, result.stderr
    (hit,) = result.json()["data"]
    assert (hit["file"], hit["line"], hit["display"]) == ("app.py", 2, f"{token[:10]}…{token[-4:]}")
    assert len(hit["commit"]) == 40
    assert token not in result.stdout + result.stderr


def test_check_names_the_key_and_revoke_stops_it(cli: Cli, tmp_path: Path) -> None:
    runtime = open_runtime(
        load_settings(cli.environment(), database_url=cli.database_url), prepare_schema=True
    )
    operator = Actor("operator", "cli:test")
    account = runtime.app.open_account("acme", operator, credits=5).account.id
    issued = runtime.app.create_key(account, "leaky", Scope(), operator)
    token, key_id = issued.token.value, str(issued.key.id)
    stranger = generate_token(TokenKind.INFERENCE).value
    (tmp_path / "leak.txt").write_text(f"{token}\n{stranger}\n")

    checked = cli("scan", str(tmp_path / "leak.txt"), "--check", "--format", "json")
    assert checked.code == 1
    keys = [hit["key"] for hit in checked.json()["data"]]
    assert keys[0]["id"] == key_id and keys[0]["status"] == "active" and keys[1] is None

    revoked = cli("scan", str(tmp_path / "leak.txt"), "--revoke")
    assert revoked.code == 1 and "revoked (now)" in revoked.stdout
    assert token not in revoked.stdout + revoked.stderr
    key = runtime.app.get_key(issued.key.id)
    assert key.revoke_reason == "leak" and key.status_at(runtime.app.clock()) == "revoked"
    leak = next(e for e in runtime.app.events.get(issued.key.id) if hasattr(e, "url"))
    assert leak.url.endswith("leak.txt:1") and leak.source == "lowrouter scan"
    runtime.close()
    again = cli("scan", str(tmp_path / "leak.txt"), "--revoke", "--format", "json")
    assert again.json()["data"][0]["key"]["revoked_now"] is False


def test_the_repository_offers_the_pre_commit_hook() -> None:
    import yaml

    hooks = yaml.safe_load((README.parent / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "lowrouter-scan"]
    assert hook["entry"] == "lowrouter scan" and hook["language"] == "python"
