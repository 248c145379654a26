"""Read models built from the event log."""

from projections.forensics import ForensicsProjection
from projections.keys import KeyLookupProjection
from projections.usage import UsageProjection
from projections.webhooks import WebhooksProjection


def all_projections() -> list:  # type: ignore[type-arg]
    # The webhook outbox reads the forensics flags: it comes after forensics.
    return [KeyLookupProjection(), UsageProjection(), ForensicsProjection(), WebhooksProjection()]
