"""The fake upstream the faults tests face, unless a module needs another (test_kills,
test_upstream_faults): a stream takes about 0.3 s, fake/slow answers after 1 s (a request
certainly in flight when the store goes away)."""

from collections.abc import Iterator

import pytest

from tests.fake_upstream import FakeUpstream, run_fake_upstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(chunk_delay=0.05, slow_seconds=1.0) as upstream:
        yield upstream
