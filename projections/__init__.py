"""Read models built from the event log."""

from projections.base import Projection
from projections.forensics import ForensicsProjection
from projections.keys import KeyLookupProjection
from projections.usage import UsageProjection


def all_projections() -> list[Projection]:
    return [KeyLookupProjection(), UsageProjection(), ForensicsProjection()]
