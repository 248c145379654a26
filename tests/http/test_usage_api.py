"""Usage history over HTTP, on SQLite and PostgreSQL: completions go through a real server (the
demo upstream is called over HTTP), then the history is paged, filtered and checked."""

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from domain.money import format_credits, parse_credits
from infrastructure.catalogue import DEMO_BASE_URL
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings
from tests.support.management_api import CHAT, Api, assert_error, build_app
from tests.support.servers import LiveServer

USAGE_FIELDS = {
    "request_id",
    "at",
    "key_id",
    "key_name",
    "model",
    "provider",
    "region",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "status",
    "latency_ms",
    "streamed",
    "client_ip",
    "user_agent",
    # release 0.3
    "api",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_source",
    "upstream_cost",
    "over_hold",
    "unbilled",
}


@pytest.fixture
def served(settings: Settings) -> Iterator[Api]:
    """The app under uvicorn on a free port, with an httpx client pointed at it."""
    runtime = open_runtime(settings)
    app = build_app(runtime, DEMO_BASE_URL)  # the demo upstream runs in-process
    with LiveServer(app, name="usage-api") as url, httpx.Client(base_url=url, timeout=30) as client:
        api = Api(client, runtime)
        yield api
    api.seen.check_no_token_leaked()


def complete(api: Api, token: str, stream: bool = False, agent: str = "usage-test/1") -> str:
    """One completion through the gateway; returns its request id."""
    body = {**CHAT, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    response = api.client.post(
        "/api/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}", "User-Agent": agent},
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def pages(api: Api, mk: str, path: str, limit: int, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page, following next_cursor until it is null."""
    result: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = api.call("GET", path, mk, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"data", "next_cursor"}
        result.append(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return result
        assert len(body["data"]) == limit


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["request_id"] for row in rows]


def flat(all_pages: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for page in all_pages for row in page]


def test_usage_rows_have_the_usage_shape_and_feed_key_and_credit_figures(served: Api) -> None:
    api = served
    mk = api.open_account("acme", credits="10")
    token, key = api.create_key(mk, name="shape")
    plain = complete(api, token)
    streamed = complete(api, token, stream=True, agent="streamer/2")
    rows = api.call("GET", "/api/v1/usage", mk).json()["data"]
    assert ids(rows) == [streamed, plain]  # newest first
    for row in rows:
        assert set(row) == USAGE_FIELDS
        assert (row["key_id"], row["key_name"]) == (key["id"], "shape")
        assert (row["model"], row["provider"], row["region"]) == (
            "lowrouter/echo",
            "lowrouter-demo",
            "local",
        )
        assert row["status"] == "ok" and row["client_ip"] == "127.0.0.1"
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert parse_credits(row["cost"]) > 0 and isinstance(row["latency_ms"], int)
        assert row["at"].endswith("Z")
        assert (row["api"], row["cost_source"], row["upstream_cost"]) == (
            "chat.completions",
            "reported",
            None,
        )
    assert [r["streamed"] for r in rows] == [True, False]
    assert [r["user_agent"] for r in rows] == ["streamer/2", "usage-test/1"]

    spent = sum(parse_credits(r["cost"]) for r in rows)
    listed = api.call("GET", "/api/v1/keys", mk).json()["data"][0]
    assert listed["spent_today"] == format_credits(spent)
    assert listed["last_used_at"] is not None
    assert datetime.fromisoformat(listed["last_used_at"]) == datetime.fromisoformat(rows[0]["at"])
    one = api.call("GET", f"/api/v1/keys/{key['id']}", mk).json()
    assert one["spent_today"] == format_credits(spent) and one["last_used_at"]
    credits = api.call("GET", "/api/v1/credits", mk).json()
    assert credits["spent_today"] == format_credits(spent)
    assert credits["balance"] == format_credits(parse_credits("10") - spent)
    assert credits["held"] == "0.000000"


def test_paging_has_no_gaps_or_repeats_even_while_rows_arrive(served: Api) -> None:
    api = served
    mk = api.open_account("acme")
    token_1, _ = api.create_key(mk, name="one")
    token_2, _ = api.create_key(mk, name="two")
    sent = [complete(api, token_1 if i % 3 else token_2, stream=i % 2 == 0) for i in range(11)]

    every = pages(api, mk, "/api/v1/usage", limit=3)
    assert [len(page) for page in every] == [3, 3, 3, 2]
    assert ids(flat(every)) == sent[::-1]

    # rows arriving between pages never show up in later pages, and nothing is skipped
    first = api.call("GET", "/api/v1/usage", mk, params={"limit": 4}).json()
    later = [complete(api, token_1) for _ in range(3)]
    rest = pages(api, mk, "/api/v1/usage", limit=4, cursor=first["next_cursor"])
    assert ids(first["data"]) + ids(flat(rest)) == sent[::-1]
    newest = api.call("GET", "/api/v1/usage", mk, params={"limit": 3}).json()["data"]
    assert ids(newest) == later[::-1]

    # an exact fit ends with next_cursor null rather than an empty page
    all_rows = api.call("GET", "/api/v1/usage", mk, params={"limit": 14}).json()
    assert len(all_rows["data"]) == 14 and all_rows["next_cursor"] is None


def test_filters_by_key_model_and_time(served: Api) -> None:
    api = served
    mk = api.open_account("acme")
    token_1, key_1 = api.create_key(mk, name="one")
    token_2, key_2 = api.create_key(mk, name="two")
    by_key = {key_1["id"]: [complete(api, token_1) for _ in range(4)]}
    by_key[key_2["id"]] = [complete(api, token_2) for _ in range(3)]
    by_key[key_1["id"]] += [complete(api, token_1) for _ in range(2)]

    for key_id, sent in by_key.items():
        via_query = flat(pages(api, mk, "/api/v1/usage", limit=2, key=key_id))
        via_path = flat(pages(api, mk, f"/api/v1/keys/{key_id}/usage", limit=2))
        assert ids(via_query) == ids(via_path) == sent[::-1]
        assert {row["key_id"] for row in via_query} == {key_id}

    everything = flat(pages(api, mk, "/api/v1/usage", limit=500))
    assert len(everything) == 9
    by_model = flat(pages(api, mk, "/api/v1/usage", limit=4, model="lowrouter/echo"))
    assert ids(by_model) == ids(everything)
    assert api.call("GET", "/api/v1/usage", mk, params={"model": "x/y"}).json()["data"] == []

    # since is inclusive, until exclusive: they split the history without overlap
    middle = everything[4]["at"]
    newer = flat(pages(api, mk, "/api/v1/usage", limit=2, since=middle))
    older = flat(pages(api, mk, "/api/v1/usage", limit=2, until=middle))
    assert ids(newer) + ids(older) == ids(everything)
    assert ids(newer)[-1] == everything[4]["request_id"]
    window = flat(pages(api, mk, "/api/v1/usage", limit=2, since=everything[6]["at"],
                        until=everything[2]["at"]))  # fmt: skip
    assert ids(window) == ids(everything[3:7])
    one_key_window = api.call(
        "GET", f"/api/v1/keys/{key_2['id']}/usage", mk, params={"until": middle}
    ).json()["data"]
    assert {r["key_id"] for r in one_key_window} <= {key_2["id"]}
    assert ids(one_key_window) == [r["request_id"] for r in older if r["key_id"] == key_2["id"]]


def test_a_rename_after_use_does_not_rewrite_history(served: Api) -> None:
    api = served
    mk = api.open_account("acme")
    token, key = api.create_key(mk, name="before")
    old = [complete(api, token) for _ in range(2)]
    renamed = api.call("PATCH", f"/api/v1/keys/{key['id']}", mk, json={"name": "after"})
    assert renamed.status_code == 200
    new = complete(api, token)
    rows = api.call("GET", f"/api/v1/keys/{key['id']}/usage", mk).json()["data"]
    assert [(r["request_id"], r["key_name"]) for r in rows] == [
        (new, "after"),
        (old[1], "before"),
        (old[0], "before"),
    ]


def test_usage_is_private_to_the_account(served: Api) -> None:
    api = served
    mk_a = api.open_account("alice")
    mk_b = api.open_account("bob")
    token_a, key_a = api.create_key(mk_a)
    complete(api, token_a)
    assert len(api.call("GET", "/api/v1/usage", mk_a).json()["data"]) == 1
    assert api.call("GET", "/api/v1/usage", mk_b).json() == {"data": [], "next_cursor": None}
    other = api.call("GET", "/api/v1/usage", mk_b, params={"key": key_a["id"]}).json()
    assert other == {"data": [], "next_cursor": None}
    assert_error(api.call("GET", f"/api/v1/keys/{key_a['id']}/usage", mk_b), 404, "key_not_found")
    # a cursor taken from another account's page reveals nothing either
    complete(api, token_a)
    cursor = api.call("GET", "/api/v1/usage", mk_a, params={"limit": 1}).json()["next_cursor"]
    assert cursor is not None
    leaked = api.call("GET", "/api/v1/usage", mk_b, params={"cursor": cursor}).json()
    assert leaked == {"data": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": "0"}, "limit", "invalid_value"),
        ({"limit": "501"}, "limit", "invalid_value"),
        ({"limit": "ten"}, "limit", "invalid_value"),
        ({"limit": "-1"}, "limit", "invalid_value"),
        ({"since": "yesterday"}, "since", "invalid_value"),
        ({"until": "2026-13-01"}, "until", "invalid_value"),
        ({"cursor": "not-a-cursor"}, "cursor", "invalid_cursor"),
        ({"cursor": "cDp4"}, "cursor", "invalid_cursor"),  # base64 of "p:x"
        ({"key": "not-a-key-id"}, "key", "invalid_value"),
        ({"from": "2026-01-01"}, "from", "unknown_parameter"),
    ],
)
def test_bad_usage_queries_are_refused(
    served: Api, params: dict[str, str], param: str, code: str
) -> None:
    api = served
    mk = api.open_account("acme")
    assert_error(api.call("GET", "/api/v1/usage", mk, params=params), 422, code, param)
    _, key = api.create_key(mk)
    path = f"/api/v1/keys/{key['id']}/usage"
    expected = "unknown_parameter" if param == "key" else code
    assert_error(api.call("GET", path, mk, params=params), 422, expected, param)


def test_paging_during_concurrent_completions_is_a_gap_free_suffix(served: Api) -> None:
    api = served
    mk = api.open_account("acme")
    token, _ = api.create_key(mk, name="busy")
    before = [complete(api, token) for _ in range(8)]
    done = threading.Event()
    errors: list[BaseException] = []

    def keep_completing() -> None:
        try:
            with httpx.Client(base_url=str(api.client.base_url), timeout=30) as client:
                other = Api(client, api.runtime)
                for _ in range(12):
                    complete(other, token)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=keep_completing)
    writer.start()
    seen = flat(pages(api, mk, "/api/v1/usage", limit=2))
    writer.join(timeout=60)
    assert done.is_set() and not errors, errors
    final = ids(flat(pages(api, mk, "/api/v1/usage", limit=500)))
    assert len(final) == 20 and len(set(ids(seen))) == len(seen)
    start = final.index(seen[0]["request_id"])
    assert ids(seen) == final[start:]  # everything older than the first row, once, in order
    assert ids(seen)[-len(before) :] == before[::-1]
