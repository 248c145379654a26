"""One thread that serves queued work in batches: what the ledger writer (group commit) and the
gateway's key lookup (group lookup) share.

Callers submit items from any thread; each item carries the `concurrent.futures.Future` its caller
waits on. The thread takes everything queued since its last turn (up to `max_batch`) and hands it
to `handle` as one batch. An item whose future was cancelled before its turn is dropped (nothing
was done for it); the futures of the others are claimed (running futures cannot be cancelled
any more). `handle` resolves them; any it leaves unresolved when it raises get that error, so no
caller is left waiting. After close(), submissions are answered at once with an error.
"""

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("lowrouter.batching")


class HasFuture(Protocol):
    @property
    def future(self) -> "Future[Any]": ...


T = TypeVar("T", bound=HasFuture)


class Closed(RuntimeError):
    """Submitted to a worker that has been closed (the process is shutting down)."""


class BatchWorker(Generic[T]):
    def __init__(self, name: str, handle: Callable[[list[T]], None], max_batch: int) -> None:
        self.name = name
        self._handle = handle
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    def submit(self, item: T) -> None:
        if self._closed:
            item.future.set_exception(Closed(f"{self.name} is closed"))
            return
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
        self._queue.put(item)

    def take_queued(self, limit: int) -> list[T]:
        """From `handle`, on the worker's own thread: up to `limit` more items queued since the
        batch was taken (their futures claimed), to serve with it."""
        taken: list[T] = []
        while len(taken) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:  # closing: leave the marker for the loop
                self._queue.put(None)
                break
            if item.future.set_running_or_notify_cancel():
                taken.append(item)
        return taken

    def close(self, timeout: float = 10.0) -> None:
        """Serve what is queued, stop the thread, and refuse what comes after."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=timeout)
            self._thread = None
        while True:  # anything submitted while the thread was stopping
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item.future.set_running_or_notify_cancel():
                item.future.set_exception(Closed(f"{self.name} is closed"))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if batch:
                self._serve(batch)
            if stop:
                return

    def _serve(self, batch: list[T]) -> None:
        try:
            self._handle(batch)
        except BaseException as error:  # never leave a caller waiting forever
            log.exception("%s failed a batch", self.name)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
