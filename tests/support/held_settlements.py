"""`lowrouter serve` with the window between an answer and its settlement's commit held open: the
ledger writer sleeps before committing any batch with a settlement (or a release) in it, after
touching a marker file, so a test can kill the process inside that window
(tests/spend/test_settle_after_answer.py).

A test seam, never a setting: nothing in lowrouter reads it, tests/ is not part of the installed
package, and it works only when started explicitly, from the repository's root, as
`python -m tests.support.held_settlements SECONDS MARKER serve [serve's options]`. The worker
runs in this process (`--workers 1`); the background process `serve` starts is a fresh
interpreter without the seam.
"""

import sys
import time
from pathlib import Path
from typing import Any

from application.spend import SpendControl
from infrastructure.cli import main


def hold_settlements(seconds: float, marker: Path) -> None:
    commit = SpendControl._commit

    def held(self: SpendControl, batch: list[Any]) -> None:
        if any(command.durable for command in batch):
            marker.write_text(f"{len(batch)} commands held\n")
            time.sleep(seconds)
        commit(self, batch)

    SpendControl._commit = held  # type: ignore[method-assign]


if __name__ == "__main__":
    seconds, marker, *argv = sys.argv[1:]
    hold_settlements(float(seconds), Path(marker))
    sys.exit(main(argv))
