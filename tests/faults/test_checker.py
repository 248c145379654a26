"""The checker itself can fail: a wrong told cost, an open hold, a refused request that was
charged are each caught from the raw log."""

from pathlib import Path

import pytest

from domain.scope import Scope
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from tests.support.faults import OPERATOR
from tests.support.ledger_check import check_books
from tests.support.spend import usage
from tests.support.stores import PEPPER

pytestmark = pytest.mark.faults


def test_the_checker_catches_each_broken_promise(sqlite_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=sqlite_url,
    )
    runtime = open_runtime(settings)
    try:
        account = runtime.app.open_account("checked", OPERATOR, credits=10**6).account
        key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key
        runtime.spend.admit(account.id, "a", key.id, "m", 100, None).result(10)
        runtime.spend.settle(account.id, "a", 40, usage()).result(10)
        check_books(runtime, {"a": 40})
        with pytest.raises(AssertionError, match="told 41, charged 40"):
            check_books(runtime, {"a": 41}, verify=False)
        with pytest.raises(AssertionError, match="0 settlements"):
            check_books(runtime, {"never": 0}, verify=False, wait=0)
        with pytest.raises(AssertionError, match="refused, yet charged"):
            check_books(runtime, {}, refused={"a"}, verify=False)
        runtime.spend.admit(account.id, "b", key.id, "m", 100, None).result(10)
        with pytest.raises(AssertionError, match="holds still open"):
            check_books(runtime, {}, verify=False)
    finally:
        runtime.close()
