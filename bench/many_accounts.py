"""The many-account load (issue 18): 1,000 keys over 100 accounts, skewed like real traffic (the
account of rank r carries a share ∝ 1/r: the top 5 carry ~44 % of requests, the top 20 ~70 %),
against lowrouter on PostgreSQL with one worker and with `--workers 2`, side by side; then the
same two gateways with every request on one hot account (one key), so what one account gets
from a second worker is measured too. Non-streaming, c=64.
"""

import os
import random
from itertools import accumulate
from typing import Any

from bench.fixtures import CREDITS, OPERATOR
from bench.matrix import Plan, Target, load_for, measure, running_lowrouter
from bench.processes import Server
from domain.scope import Scope

ACCOUNTS = 100
KEYS_PER_ACCOUNT = 10
SEQUENCE = 20_000  # the order keys are used in (drawn once, replayed by each connection)
CONCURRENCY = 64


def create_keys(runtime: Any) -> list[tuple[int, str]]:
    """(account rank, token) for every key: ACCOUNTS accounts of KEYS_PER_ACCOUNT keys each."""
    keys = []
    for rank in range(ACCOUNTS):
        opened = runtime.app.open_account(f"bench-{rank}", OPERATOR, credits=CREDITS)
        for k in range(KEYS_PER_ACCOUNT):
            issued = runtime.app.create_key(opened.account.id, f"k{k}", Scope(), OPERATOR)
            keys.append((rank, issued.token.value))
    runtime.projections.catch_up()
    return keys


def skewed_sequence(keys: list[tuple[int, str]], length: int = SEQUENCE) -> tuple[str, ...]:
    """Tokens in the order they are used: an account by its 1/rank weight, then one of its keys."""
    chooser = random.Random(18)
    by_account: dict[int, list[str]] = {}
    for rank, token in keys:
        by_account.setdefault(rank, []).append(token)
    ranks = sorted(by_account)
    cumulative = list(accumulate(1 / (r + 1) for r in ranks))
    picked = chooser.choices(ranks, cum_weights=cumulative, k=length)
    return tuple(chooser.choice(by_account[rank]) for rank in picked)


def ledger_contention(server: Server) -> dict[str, float]:
    """The gateway's ledger conflict counters, summed over its workers (GET /metrics)."""
    import urllib.request

    wanted = ("lowrouter_ledger_conflicts_total", "lowrouter_ledger_locked_batches_total")
    found = dict.fromkeys(wanted, 0.0)
    try:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] += float(value)
    return {"conflicts": found[wanted[0]], "locked_batches": found[wanted[1]]}


def run_on(plan: Plan, workers: int, upstream: Server) -> dict[str, Any]:
    target = Target(f"lowrouter-pg-w{workers}-accounts", "lowrouter", "aiohttp", "postgres")
    target = Target(target.name, target.kind, target.transport, target.store, workers=workers)
    out: dict[str, Any] = {"load_average": [os.getloadavg()[0]]}
    with running_lowrouter(target, upstream, plan.work_dir, plan.nice) as (server, rt, tenant):
        keys = create_keys(rt)
        plan.log(f"  {target.name}: {len(keys)} keys over {ACCOUNTS} accounts")
        many = load_for(server, None, stream=False)
        many = type(many)(many.url, many.body, many.headers, skewed_sequence(keys))
        before = ledger_contention(server)
        row = measure(plan, server, many, CONCURRENCY)
        after = ledger_contention(server)
        out["many"] = {**row.as_dict(), "rps": round(row.result.rps, 1), **_delta(before, after)}
        hot = load_for(server, tenant.token, stream=False)
        row = measure(plan, server, hot, CONCURRENCY)
        before, after = after, ledger_contention(server)
        out["hot"] = {**row.as_dict(), "rps": round(row.result.rps, 1), **_delta(before, after)}
        out["load_average"].append(os.getloadavg()[0])
    for name in ("many", "hot"):
        r = out[name]
        plan.log(
            f"  {target.name} {name:<4} c={CONCURRENCY}: {r['rps']:.0f} req/s, p50 "
            f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}, "
            f"CPU {r['cpu_ms_per_request']} ms/r, box {r['machine_busy_percent']} %, "
            f"ledger conflicts {r.get('conflicts')}, locked batches {r.get('locked_batches')}"
        )
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counter increases over one run (measured with its warm-up)."""
    return {name: after[name] - before.get(name, 0.0) for name in after}


def many_account_profile(plan: Plan, upstream: Server) -> dict[str, Any]:
    plan.log(f"many-account load: {ACCOUNTS * KEYS_PER_ACCOUNT} keys over {ACCOUNTS} accounts")
    return {"w1": run_on(plan, 1, upstream), "w2": run_on(plan, 2, upstream)}


def verdicts(figures: dict[str, Any]) -> list[Any]:
    from bench.report import Verdict

    if "w1" not in figures or "w2" not in figures:
        return [Verdict("many-account load", figures.get("error", "not measured"), None)]
    many = figures["w2"]["many"]["rps"] / figures["w1"]["many"]["rps"]
    hot = figures["w2"]["hot"]["rps"] / figures["w1"]["hot"]["rps"]
    return [
        Verdict(
            "many-account --workers 2 vs 1 at c=64 (json)",
            f"{many:.2f}x ({figures['w2']['many']['rps']:.0f} vs {figures['w1']['many']['rps']:.0f}"
            " req/s; target >= 1.7x)",
            many >= 1.7,
        ),
        Verdict(
            "one hot account --workers 2 vs 1 at c=64 (json; reported, no target)",
            f"{hot:.2f}x ({figures['w2']['hot']['rps']:.0f} vs {figures['w1']['hot']['rps']:.0f}"
            " req/s)",
            None,
        ),
    ]
