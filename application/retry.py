"""Optimistic concurrency: on a version conflict, reload and retry a bounded number of times."""

import random
import time
from collections.abc import Callable
from typing import TypeVar

from eventsourcing.persistence import IntegrityError

T = TypeVar("T")


class TooMuchContention(RuntimeError):
    """Other writers kept winning; the command did nothing and may be tried again."""


def retry_on_conflict(command: Callable[[], T], attempts: int = 20) -> T:
    for attempt in range(attempts):
        try:
            return command()
        except IntegrityError:
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
    raise TooMuchContention("too many concurrent changes; nothing was changed, try again")
