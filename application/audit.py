"""The auditor's use cases in one import: replay (application.replay), the books recomputed from
the events (application.books) and verify-balances (application.verification). Each name has its
home in one of those modules; this module only gathers them for the CLI, the API and the tests.
"""

from application.books import LEDGER_TOPICS, Books, DaySpend
from application.replay import (
    AccountHistory,
    Event,
    KeyHistory,
    PageHistory,
    account_history,
    is_key,
    key_history,
    rebuild,
    up_to,
)
from application.verification import (
    SCAN_BATCH,
    BalanceCheck,
    Difference,
    Figures,
    LedgerScan,
    RecordedFigures,
    Where,
    compare,
    expected_holds,
    expected_spend,
    page_balance,
    scan_ledger,
    verify_balances,
    verify_books,
)

__all__ = [
    "LEDGER_TOPICS",
    "SCAN_BATCH",
    "AccountHistory",
    "BalanceCheck",
    "Books",
    "DaySpend",
    "Difference",
    "Event",
    "Figures",
    "KeyHistory",
    "LedgerScan",
    "PageHistory",
    "RecordedFigures",
    "Where",
    "account_history",
    "compare",
    "expected_holds",
    "expected_spend",
    "is_key",
    "key_history",
    "page_balance",
    "rebuild",
    "scan_ledger",
    "up_to",
    "verify_balances",
    "verify_books",
]
