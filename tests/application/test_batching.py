"""The batch worker behind group commit and group lookup: everything queued while it was busy
is served as one batch, no caller is ever left waiting, nothing is served after close()."""

import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

import pytest

from application.batching import BatchWorker, Closed

TIMEOUT = 10


@dataclass
class Item:
    value: int
    future: "Future[int]" = field(default_factory=Future)


def test_what_queues_while_a_batch_is_served_is_the_next_batch_and_cancelled_items_drop() -> None:
    gate, serving, batches = threading.Event(), threading.Event(), []

    def handle(batch: list[Item]) -> None:
        serving.set()
        gate.wait(TIMEOUT)
        batches.append([item.value for item in batch])
        for item in batch:
            item.future.set_result(item.value * 2)

    worker: BatchWorker[Item] = BatchWorker("test-worker", handle, max_batch=3)
    first = Item(0)
    worker.submit(first)
    assert serving.wait(TIMEOUT)
    waiting = [Item(n) for n in range(1, 6)]
    for item in waiting:
        worker.submit(item)
    assert waiting[1].future.cancel()
    gate.set()
    assert [i.future.result(TIMEOUT) for i in waiting if i is not waiting[1]] == [2, 6, 8, 10]
    with pytest.raises(CancelledError):
        waiting[1].future.result(TIMEOUT)
    worker.close()
    assert batches == [[0], [1, 3], [4, 5]]  # at most 3 taken per turn, the cancelled one dropped


def test_a_failing_batch_fails_only_its_unanswered_items_and_the_worker_goes_on() -> None:
    gate, serving = threading.Event(), threading.Event()

    def handle(batch: list[Item]) -> None:
        serving.set()
        gate.wait(TIMEOUT)
        for item in batch:
            if item.value < 0:
                raise RuntimeError("disk on fire")
            item.future.set_result(item.value)

    worker: BatchWorker[Item] = BatchWorker("test-worker", handle, max_batch=8)
    worker.submit(Item(0))
    assert serving.wait(TIMEOUT)
    answered, broken, unanswered = Item(1), Item(-1), Item(2)
    for item in (answered, broken, unanswered):  # one batch
        worker.submit(item)
    gate.set()
    assert answered.future.result(TIMEOUT) == 1  # answered before the failure: kept
    for item in (broken, unanswered):
        with pytest.raises(RuntimeError, match="disk on fire"):
            item.future.result(TIMEOUT)
    later = Item(7)
    worker.submit(later)
    assert later.future.result(TIMEOUT) == 7
    worker.close()


def test_after_close_a_submission_is_refused_at_once() -> None:
    worker: BatchWorker[Item] = BatchWorker("test-worker", lambda batch: None, max_batch=8)
    worker.close()
    late = Item(1)
    worker.submit(late)
    with pytest.raises(Closed):
        late.future.result(TIMEOUT)
