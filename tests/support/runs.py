"""How long a property-based test runs: in full under `make test`, briefly under `make
test-fast` (LOWROUTER_TEST_FAST=1), so the pyramid's base still drives the in-memory state
machines without paying their full count."""

import os

FAST_GUARD = "LOWROUTER_TEST_FAST"  # set by `make test-fast` (tests/conftest.py's guard reads it)


def examples(full: int) -> int:
    """`full` Hypothesis examples; a tenth of them (at least 5) under `make test-fast`."""
    return max(5, full // 10) if os.environ.get(FAST_GUARD) == "1" else full
