"""Holds are true upper bounds (issue 15): over generated chat requests and upstream answers,
through the real parse → hold → upstream body → settle path on the in-memory store:

- what is charged is min(real cost, hold), and anything beyond is recorded as unbilled;
- an upstream that obeys the cap it was sent (whichever cap field it reads) and tokenizes no
  worse than one token per UTF-8 byte (plus a few per message) never costs more than the hold.
"""

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from application.app import Lowrouter
from application.metering import MeteredOutcome, Metering, Outcome
from application.spend import SpendControl
from domain.actor import Actor
from domain.policy import NO_POLICY, KeyPolicy
from domain.pricing import TokenCounts
from domain.routing import Catalogue, ModelEntry, Provider
from domain.scope import Scope
from infrastructure.http.apis.chat import CHAT, metered_chat, parse_chat_request
from infrastructure.persistence import eventsourcing_env
from tests.conftest import PEPPER

OPERATOR = Actor("operator", "hold-bound-tests")
BOTH = Provider("p-both", "http://127.0.0.1:9/v1", "", "us")
NEW_ONLY = Provider(
    "p-new", "http://127.0.0.1:9/v1", "", "us", cap_fields=("max_completion_tokens",)
)
CLAUDE = Provider("p-claude", "http://127.0.0.1:9/v1", "", "us", api="anthropic")
PROVIDERS = (BOTH, NEW_ONLY, CLAUDE)
MODELS = {
    p.name: ModelEntry(f"m/{p.name}", (p.name,), "up", 3_000_000, 15_000_000, 4096)
    for p in PROVIDERS
}
CATALOGUE = Catalogue({p.name: p for p in PROVIDERS}, {m.id: m for m in MODELS.values()})
UNCAPPED_DEFAULT = 1_000_000  # what an upstream produces at most when sent no cap at all
PER_MESSAGE = 4  # an honest chat template's tokens per message (OpenAI's cookbook: 3 or 4)
IDS = itertools.count()


@dataclass(frozen=True)
class Key:
    key_id: UUID
    account_id: UUID
    name: str
    scope: Scope
    policy: KeyPolicy = NO_POLICY
    lineage_id: UUID | None = None


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[MeteredOutcome] = []

    def reserving(self, *_: Any) -> None: ...
    def settling(self, *_: Any) -> None: ...
    def refused(self, *_: Any) -> None: ...

    def metered(self, outcome: MeteredOutcome) -> None:
        self.outcomes.append(outcome)


@pytest.fixture(scope="module")
def metered() -> Any:
    app = Lowrouter(eventsourcing_env("memory://"), pepper=PEPPER.encode())
    spend = SpendControl(app)
    opened = app.open_account("rich", OPERATOR, 10**15)
    issued = app.create_key(opened.account.id, "k", Scope(), OPERATOR)
    recorder = Recorder()
    yield Metering(spend, CATALOGUE, recorder), Key(issued.key.id, opened.account.id, "k", Scope())
    spend.close()


texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system"]), "content": texts}
    ),
    min_size=1,
    max_size=4,
)
caps = st.none() | st.integers(1, 100_000)
bodies = st.fixed_dictionaries(
    {"messages": messages},
    optional={
        "max_tokens": st.integers(1, 100_000),
        "max_completion_tokens": st.integers(1, 100_000),
        "n": st.integers(1, 3),
        "temperature": st.floats(0, 2),
        "stop": st.lists(st.text(max_size=5), max_size=2),
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": st.from_regex(r"[a-z]{1,10}", fullmatch=True)},
                        optional={"description": texts},
                    ),
                }
            ),
            max_size=2,
        ),
    },
)


def honest_prompt_tokens(sent: dict[str, Any]) -> int:
    """The most an honest upstream counts for the prompt it was sent: one token per UTF-8
    byte of every text (byte-level BPE never does worse) and PER_MESSAGE per message."""
    total = 3
    for value in (sent.get("messages"), sent.get("system"), sent.get("tools")):
        total += utf8_bytes(value)
    return total + PER_MESSAGE * len(sent.get("messages") or [])


def utf8_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return sum(utf8_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(utf8_bytes(v) for v in value)
    return 0


def up_to(most: int) -> st.SearchStrategy[int]:
    """Any count to `most`, and often `most` itself (an upstream using all it may)."""
    return st.just(most) | st.integers(0, most)


def cap_obeyed(sent: dict[str, Any], reads: str) -> int:
    """The cap an upstream obeys: the field it reads, else the other, else its own default."""
    other = "max_completion_tokens" if reads == "max_tokens" else "max_tokens"
    for name in (reads, other):
        if isinstance(sent.get(name), int):
            return int(sent[name])
    return UNCAPPED_DEFAULT


def run(
    metered: Any,
    body: dict[str, Any],
    provider: Provider,
    usage: Any,
) -> tuple[int, int, int, dict[str, Any]]:
    """One call through parse → hold → upstream body → settle; `usage(sent)` is the upstream's
    answer to what it was sent. (charged, real cost, hold, what was sent)."""
    metering, key = metered
    entry = MODELS[provider.name]
    body = parse_chat_request(orjson.dumps(body | {"model": entry.id}))

    async def scenario() -> tuple[int, int, int, dict[str, Any]]:
        call = await metering.begin(key, f"req-{next(IDS)}", metered_chat(body), started=0.0)
        [(routed, routed_provider)] = call.candidates
        exchange = CHAT.exchanges[routed_provider.api]
        sent = exchange.upstream_body(
            body, routed, routed_provider, stream=False, cap=call.output_cap(routed)
        )
        reported = usage(sent)
        charged = await call.finish(Outcome.ANSWERED, routed, routed_provider, reported=reported)
        return charged, routed.prices.cost(reported), call.hold, sent

    return asyncio.run(scenario())


def obedient(reads: str, choices: int) -> Any:
    """An upstream that uses all it may: the honest prompt bound, and its cap for each choice."""
    return lambda sent: TokenCounts(honest_prompt_tokens(sent), cap_obeyed(sent, reads) * choices)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    max_tokens=caps,
    max_completion_tokens=caps,
    provider=st.sampled_from(PROVIDERS),
    reads=st.sampled_from(["max_tokens", "max_completion_tokens"]),
    hostile=st.none() | st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
)
def test_charged_is_min_of_real_cost_and_hold_and_an_obedient_upstream_stays_within_it(
    metered: Any,
    body: dict[str, Any],
    max_tokens: int | None,
    max_completion_tokens: int | None,
    provider: Provider,
    reads: str,
    hostile: tuple[int, int] | None,
) -> None:
    body = body | {"max_tokens": max_tokens, "max_completion_tokens": max_completion_tokens}
    body = {k: v for k, v in body.items() if v is not None}
    if hostile is None:
        answer = obedient(reads, body.get("n") or 1)
    else:
        answer = lambda sent: TokenCounts(*hostile)  # noqa: E731 - any usage at all
    charged, real, hold, _ = run(metered, body, provider, answer)
    assert charged == min(real, hold)
    outcome = metered[0].observer.outcomes[-1]
    assert outcome.unbilled == max(0, real - hold)
    if hostile is None:
        assert real <= hold, "an upstream that obeyed its cap was served beyond the hold"


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
@pytest.mark.parametrize("reads", ["max_tokens", "max_completion_tokens"])
def test_the_findings_cap_pair_reaches_no_upstream(
    metered: Any, provider: Provider, reads: str
) -> None:
    """`max_completion_tokens: 1` with `max_tokens: 100000` was held for 1 token and produced
    3,001: now every cap field sent is the one held for."""
    body = {
        "messages": [{"role": "user", "content": "word " * 3000}],
        "max_completion_tokens": 1,
        "max_tokens": 100_000,
    }
    charged, real, hold, sent = run(metered, body, provider, obedient(reads, 1))
    assert {sent.get("max_tokens"), sent.get("max_completion_tokens")} - {None} == {1}
    assert real <= hold and charged == real


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.name)
def test_no_cap_from_the_client_sends_the_models_cap(metered: Any, provider: Provider) -> None:
    body = {"messages": [{"role": "user", "content": "a " * 30_000}]}
    charged, real, hold, sent = run(metered, body, provider, obedient("max_tokens", 1))
    entry = MODELS[provider.name]
    fields = ("max_tokens",) if provider.api == "anthropic" else provider.cap_fields
    assert all(sent[name] == entry.max_output_tokens for name in fields)
    assert real <= hold and charged == real
