"""Read models built from the event log."""

from projections.base import Projection
from projections.forensics import ForensicsProjection
from projections.keys import KeyLookupProjection
from projections.refusals import RefusalsProjection
from projections.usage import UsageProjection
from projections.webhooks import WebhooksProjection


def all_projections() -> list[Projection]:
    # The webhook outbox reads the forensics flags: it comes after forensics.
    return [
        KeyLookupProjection(),
        UsageProjection(),
        ForensicsProjection(),
        RefusalsProjection(),
        WebhooksProjection(),
    ]
