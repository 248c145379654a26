"""Prometheus metrics with `prometheus-client`, correct across `lowrouter serve --workers N`.

Every process (each worker and the background process) records into prometheus-client's
multiprocess files when `PROMETHEUS_MULTIPROC_DIR` is set (`serve` sets it to a fresh directory
of its own, unless the operator did); a scrape, served by any worker, adds up all of them. The
projection lag and the open holds are read from the store at scrape time, so they are right
wherever the background process runs.

prometheus-client decides between in-memory and multiprocess values when it is imported, so this
module imports it only when the first metric is built (after `serve` prepared the directory), and
`use_multiprocess_dir` re-decides if something imported it earlier.

Labels are few and bounded: the API, the catalogue model, the HTTP status, the provider, the
refusal code. Never a key: a gateway has as many keys as it has users.
"""

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select

from domain.money import MICRO
from infrastructure.observability import context

log = logging.getLogger("lowrouter.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. The overhead is usually well under a millisecond: resolve it in tenths.
OVERHEAD_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
COMMIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The process's metric objects (one set per process, shared by every app in it)."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # `_created` series double the output for nothing we use
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # In multiprocess mode the values live in files and a scrape reads them all; the
        # objects themselves are registered nowhere.
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "lowrouter_requests",
            "Requests answered, by API, catalogue model (empty before routing) and HTTP status.",
            ["api", "model", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "lowrouter_request_duration_seconds",
            "Time from the request's arrival to the end of its response (streams included).",
            ["api"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "lowrouter_overhead_seconds",
            "Time an inference request spent in lowrouter: its duration minus the time spent "
            "waiting on upstream providers.",
            ["api"],
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "lowrouter_upstream_errors",
            "Upstream calls that failed: connection errors, timeouts, 5xx answers, broken streams.",
            ["provider"],
            registry=registry,
        )
        self.refusals = Counter(
            "lowrouter_refusals",
            "Requests lowrouter refused, by error code (invalid_key, insufficient_credits, …).",
            ["reason"],
            registry=registry,
        )
        self.charged = Counter(
            "lowrouter_charged_credits",
            "Credits charged by settlements of requests, by catalogue model.",
            ["model"],
            registry=registry,
        )
        self.over_hold = Counter(
            "lowrouter_over_hold",
            "Settlements whose usage cost more than their hold (served, not charged), by model.",
            ["model"],
            registry=registry,
        )
        self.unbilled = Counter(
            "lowrouter_unbilled_credits",
            "Credits of usage beyond holds (over_hold): served and not charged, by model.",
            ["model"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "lowrouter_ledger_commit_seconds",
            "Time to save one batch of ledger commands in one transaction.",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.batch_commands = Histogram(
            "lowrouter_ledger_batch_commands",
            "Ledger commands saved together in one transaction (group commit).",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.conflicts = Counter(
            "lowrouter_ledger_conflicts",
            "Ledger saves refused because another process had written the page first.",
            registry=registry,
        )
        self.locked_batches = Counter(
            "lowrouter_ledger_locked_batches",
            "Ledger batches that took turns under the page lock (after a conflict or a read).",
            registry=registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered (labels() costs more than the increment)."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_request(self, observation: context.Observation, ended: float) -> None:
        api = observation.api
        self.child(self.requests, api, observation.model or "", str(observation.status)).inc()
        self.child(self.duration, api).observe(ended - observation.started)
        if observation.inference:
            self.child(self.overhead, api).observe(observation.overhead_seconds(ended))
        if observation.refusal is not None:
            self.child(self.refusals, observation.refusal).inc()

    def committed(self, seconds: float, commands: int) -> None:
        self.commit_seconds.observe(seconds)
        self.batch_commands.observe(commands)

    def charge(self, model: str, micro_credits: int) -> None:
        self.child(self.charged, model).inc(micro_credits / MICRO)

    def beyond_hold(self, model: str, micro_credits: int) -> None:
        self.child(self.over_hold, model).inc()
        self.child(self.unbilled, model).inc(micro_credits / MICRO)

    def upstream_error(self, provider: str) -> None:
        self.child(self.upstream_errors, provider).inc()


_metrics: Metrics | None = None
_building = threading.Lock()


def process_metrics() -> Metrics:
    """The process's metrics, built on first use (and the hooks that feed them installed)."""
    global _metrics
    if _metrics is None:
        with _building:
            if _metrics is None:
                _metrics = Metrics()
                context.charged_hook = _metrics.charge
                context.unbilled_hook = _metrics.beyond_hold
    return _metrics


def count_upstream_error(provider: str) -> None:
    if _metrics is not None:
        _metrics.upstream_error(provider)


def use_multiprocess_dir(directory: str) -> None:
    """Record into `directory` from now on (and in every process started with this
    environment). Call before the first metric is built."""
    os.environ[MULTIPROC_ENV] = directory
    import prometheus_client.values as values

    values.ValueClass = values.get_value_class()
    if _metrics is not None and not _metrics.multiprocess:
        raise RuntimeError("metrics were built before the multiprocess directory was set")


class LedgerMetrics:
    """The ledger writer's observer (application.spend.CommitObserver): commit time and batch
    size. Builds the metrics on the first commit, so a CLI command that never commits never
    imports prometheus-client."""

    def committed(self, seconds: float, commands: int) -> None:
        process_metrics().committed(seconds, commands)

    def conflicted(self, locked: bool) -> None:
        process_metrics().conflicts.inc()

    def took_turns(self) -> None:
        process_metrics().locked_batches.inc()


class StoreCollector:
    """The projection lag and the open holds, read from the store when scraped."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    def describe(self) -> list[Any]:
        return []  # known only when collected (and not worth a query at registration)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from projections.schema import holds

        runtime = self._runtime
        try:
            statuses = runtime.projections.status()
            with runtime.engine.connect() as conn:
                count, amount = conn.execute(
                    select(func.count(), func.coalesce(func.sum(holds.c.amount), 0))
                ).one()
        except Exception as error:
            log.warning(
                "metrics: cannot read the projections from the store: %s",
                type(error).__name__,
                extra={"event": "metrics_store_unreachable"},
            )
            return
        lag = GaugeMetricFamily(
            "lowrouter_projection_lag_events",
            "Events in the log that a projection has not applied yet.",
            labels=["projection"],
        )
        for status in statuses:
            lag.add_metric([status.name], status.lag)
        yield lag
        yield GaugeMetricFamily(
            "lowrouter_open_holds",
            "Reservations not settled or released yet (as projected).",
            value=int(count),
        )
        yield GaugeMetricFamily(
            "lowrouter_held_credits",
            "Credits held by open reservations (as projected).",
            value=int(amount) / MICRO,
        )


class Scrape:
    """What one scrape shows: every process's metrics and the store's figures."""

    def __init__(self, *collectors: Any) -> None:
        self._collectors = collectors

    def collect(self) -> Iterator[Any]:
        for collector in self._collectors:
            yield from collector.collect()


def render(runtime: Any) -> tuple[bytes, str]:
    """The exposition text (prometheus-client's), and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics = process_metrics()
    recorded: Any = MultiProcessCollector(None) if metrics.multiprocess else metrics.registry
    scrape: Any = Scrape(recorded, StoreCollector(runtime))  # generate_latest reads collect()
    return generate_latest(scrape), CONTENT_TYPE_LATEST
