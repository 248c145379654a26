"""--env-file: the token goes into a file, never to the terminal."""

import os
import subprocess
from pathlib import Path

from infrastructure.cli.context import Context
from infrastructure.cli.errors import Refused

# --env-file: the token goes into a file, never to the terminal ----------------------------------


class EnvFile:
    """`LOWROUTER_API_KEY=<token>` appended to a file created with mode 0600.

    Opened before the key is created, so a path that cannot be written refuses the command before
    a key exists whose token would be lost; a file this command created is removed if it fails.
    """

    def __init__(self, path: Path, force: bool = False) -> None:
        self.path = path
        self.force = force  # --force-env-file: follow a symlink, accept a loosely readable file
        self.existed = path.exists()
        self.loose_mode: int | None = None
        self.had_api_key = False
        self._fd = -1

    def __enter__(self) -> "EnvFile":
        if self.path.is_dir():
            raise Refused(f"--env-file {self.path} is a directory")
        if self.path.is_symlink() and not self.force:
            # A link could point the token anywhere (another user's file, a synced folder).
            raise Refused(
                f"--env-file {self.path} is a symbolic link; give the real path "
                "(or --force-env-file)"
            )
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (0 if self.force else os.O_NOFOLLOW)
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as error:
            raise Refused(f"cannot write --env-file {self.path}: {error.strerror}") from None
        mode = os.fstat(self._fd).st_mode & 0o777
        self.loose_mode = mode if mode & 0o077 else None
        if self.loose_mode is not None and not self.force:
            os.close(self._fd)
            raise Refused(
                f"--env-file {self.path} is readable by others (mode {mode:o}): run "
                f"chmod 600 {self.path} first (or --force-env-file)"
            )
        return self

    def write_api_key(self, token: str) -> None:
        before = self.path.read_bytes() if self.existed else b""
        self.had_api_key = any(
            line.strip().removeprefix(b"export ").startswith(b"LOWROUTER_API_KEY=")
            for line in before.splitlines()
        )
        separator = b"\n" if before and not before.endswith(b"\n") else b""
        os.write(self._fd, separator + f"LOWROUTER_API_KEY={token}\n".encode("ascii"))
        os.fsync(self._fd)

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        os.close(self._fd)
        if error_type is not None and not self.existed:
            self.path.unlink(missing_ok=True)


def warn_about_env_file(ctx: Context, env_file: EnvFile) -> None:
    path = env_file.path
    if env_file.loose_mode is not None:
        mode = f"{env_file.loose_mode:o}"
        ctx.warn(f"{path} is readable by others (mode {mode}); run: chmod 600 {path}")
    if env_file.had_api_key:
        ctx.warn(f"{path} already set LOWROUTER_API_KEY; the new line was added after it")
    if in_git_work_tree(path) and not git_ignored(path):
        ctx.warn(
            f"{path} is inside a git work tree and not git-ignored: add it to .gitignore "
            "so the token is never committed"
        )


def _git(path: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """Run git beside `path`; None when git is missing or does not answer."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=path.resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def in_git_work_tree(path: Path) -> bool:
    result = _git(path, "rev-parse", "--is-inside-work-tree")
    return result is not None and result.returncode == 0 and result.stdout.strip() == "true"


def git_ignored(path: Path) -> bool:
    result = _git(path, "check-ignore", "-q", path.resolve().name)
    return result is not None and result.returncode == 0
