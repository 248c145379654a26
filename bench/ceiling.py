"""The single-PostgreSQL ceiling: ledger events per second with several writer processes, each
with group commit, on accounts of its own (as many gateway hosts would write), on one database.

    .venv/bin/python -m bench.ceiling --processes 1 2 4 --seconds 10

Each process opens its own Runtime (its own pool, its own writer thread) and keeps `--in-flight`
reserve → settle pairs going for `--seconds`; the figure is all processes' events over the
wall-clock time. Only the ledger writes: no HTTP, no upstream, no projections (docs/scaling.md).
"""

import argparse
import json
import multiprocessing
import time
import uuid
from concurrent.futures import Future
from typing import Any

from bench.fixtures import MODEL, create_tenant, open_bench_runtime, postgres_database
from bench.ledger_figures import USAGE


def _writer(database_url: str, seconds: float, in_flight: int, start: Any, out: Any) -> None:
    runtime = open_bench_runtime(database_url, prepare_schema=False)
    tenant = create_tenant(runtime, f"ceiling-{uuid.uuid4().hex[:8]}")
    spend, pairs = runtime.spend, 0
    start.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        ids = [uuid.uuid4().hex for _ in range(in_flight)]
        holds: list[Future[Any]] = [
            spend.reserve(tenant.account_id, rid, tenant.key_id, MODEL, 100, None) for rid in ids
        ]
        for future in holds:
            future.result()
        settles = [spend.settle(tenant.account_id, rid, 50, key_name="k", **USAGE) for rid in ids]
        for future in settles:
            future.result()
        pairs += len(ids)
    out.put({"pairs": pairs, "batches": spend.batches, "commands": spend.commands})
    runtime.close()


def measure(processes: int, seconds: float, in_flight: int) -> dict[str, Any]:
    with postgres_database() as url:
        open_bench_runtime(url).close()  # the schema, once
        context = multiprocessing.get_context("spawn")
        start, out = context.Event(), context.Queue()
        workers = [
            context.Process(target=_writer, args=(url, seconds, in_flight, start, out))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        time.sleep(3 + processes)  # let every process open and create its account
        began = time.perf_counter()
        start.set()
        results = [out.get(timeout=seconds + 120) for _ in workers]
        wall = time.perf_counter() - began
        for worker in workers:
            worker.join(timeout=30)
    pairs = sum(r["pairs"] for r in results)
    commands = sum(r["commands"] for r in results)
    batches = sum(r["batches"] for r in results)
    return {
        "processes": processes,
        "in_flight_per_process": in_flight,
        "seconds": round(wall, 2),
        "events_per_s": round(2 * pairs / wall),
        "pairs_per_s": round(pairs / wall),
        "commands_per_batch": round(commands / max(1, batches), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    for count in args.processes:
        print(json.dumps(measure(count, args.seconds, args.in_flight)), flush=True)


if __name__ == "__main__":
    main()
