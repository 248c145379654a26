"""Guessing management keys at the dashboard's sign-in is throttled per client address, like
the API's failed authentications (issue 15)."""

from starlette.testclient import TestClient

from domain.throttle import FailureThrottle
from domain.tokens import TokenKind, generate_token
from tests.dashboard.conftest import Browser, Dash


def test_a_burst_of_wrong_keys_bans_the_address_from_signing_in(dash: Dash) -> None:
    dash.app.state.gateway.throttle = FailureThrottle(burst=3, ban=60)
    account = dash.open_account()
    browser = dash.browser()
    for _ in range(3):
        wrong = browser.sign_in(generate_token(TokenKind.MANAGEMENT).value)
        assert wrong.status_code == 401
    banned = browser.sign_in(account.management_key)  # even the right key waits
    assert banned.status_code == 429 and "Too many failed sign-ins" in banned.text
    other = Browser(TestClient(dash.app, client=("198.51.100.9", 1234)))  # another address
    assert other.sign_in(account.management_key).status_code == 303
