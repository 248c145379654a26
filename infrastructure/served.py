"""The catalogue as the scope validator sees it (domain.scope.Served): one answer to "does this
gateway serve that model, that region?" for the management API, the dashboard and the CLI."""

from domain.scope import Served
from infrastructure.catalogue import Catalogue


def served(catalogue: Catalogue) -> Served:
    return Served(
        frozenset(catalogue.models),
        frozenset(provider.region for provider in catalogue.providers.values()),
    )
