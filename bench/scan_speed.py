"""How fast `lowrouter scan` reads files: `python -m bench.scan_speed [MiB]`.

Writes MiB one-mebibyte files of random printable text (with a few real tokens) to a temporary
directory and scans them with the finder `lowrouter scan` uses, reporting MiB/s on one core.
"""

import random
import string
import sys
import tempfile
import time
from pathlib import Path

from domain.token_scan import find_tokens
from domain.tokens import TokenKind, generate_token


def main(mebibytes: int = 100) -> None:
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + "   \n=_-:\"'(){}.,"
    with tempfile.TemporaryDirectory() as directory:
        for number in range(mebibytes):
            text = "".join(rng.choices(alphabet, k=1024 * 1024 - 60))
            token = generate_token(TokenKind.INFERENCE).value
            Path(directory, f"{number:04d}.txt").write_text(f"{text}\nKEY={token}\n")
        started, found, size = time.perf_counter(), 0, 0
        for path in sorted(Path(directory).iterdir()):
            data = path.read_bytes()
            size += len(data)
            found += sum(1 for _ in find_tokens(data))
        seconds = time.perf_counter() - started
    mib = size / 2**20
    print(f"{mib:.0f} MiB, {found} tokens, {seconds:.2f} s: {mib / seconds:.0f} MiB/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
