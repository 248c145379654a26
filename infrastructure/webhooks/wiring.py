"""Wiring the webhooks into a process: the use cases for the API, CLI and dashboard, and the
deliverer for the background process."""

from typing import TYPE_CHECKING

from application.webhooks import Webhooks
from domain.webhooks import RETRY_SCHEDULE
from infrastructure.webhooks.deliverer import Deliverer, DeliveryConfig
from infrastructure.webhooks.targets import check_target
from infrastructure.webhooks.vault import SecretVault

if TYPE_CHECKING:
    from infrastructure.runtime import Runtime


def vault(runtime: "Runtime") -> SecretVault:
    return SecretVault(runtime.engine, runtime.settings.pepper)


def webhook_use_cases(runtime: "Runtime") -> Webhooks:
    settings = runtime.settings
    return Webhooks(
        runtime.app,
        vault(runtime),
        lambda url: _check(url, settings.webhooks_allow_private),
        lambda position: runtime.projections.wait_for(position, names=("webhooks",)),
    )


def _check(url: str, allow_private: bool) -> None:
    check_target(url, allow_private)


def delivery_config(runtime: "Runtime") -> DeliveryConfig:
    settings = runtime.settings
    return DeliveryConfig(
        timeout=settings.webhooks_timeout_seconds,
        schedule=settings.webhooks_retry_schedule or RETRY_SCHEDULE,
        allow_private=settings.webhooks_allow_private,
    )


def deliverer_for(runtime: "Runtime") -> Deliverer:
    """The background process's deliverer: it sends while the process leads the background
    work (the projection runner's leadership), as the reconciler and the chain do."""
    return Deliverer(
        runtime.engine,
        vault(runtime),
        delivery_config(runtime),
        leading=lambda: runtime.projections.leading,
    )


def start_deliverer(runtime: "Runtime") -> Deliverer:
    return deliverer_for(runtime).start()
