"""The observability side of metering: application.metering's observer port, implemented by
noting each metered call's reservation and settlement in the request's observation (its log
line, metrics and trace: infrastructure.observability.context)."""

from concurrent.futures import Future

from application.metering import MeteredOutcome, MeteredRequest
from domain.ledger import Admission
from domain.usage import Api, Usage
from infrastructure.observability import context
from infrastructure.observability.context import track_reservation, track_settlement


class ObservedMetering:
    def reserving(self, future: "Future[Admission]", request: MeteredRequest) -> None:
        track_reservation(future, request.model)

    def settling(self, future: "Future[int | None]", usage: Usage) -> None:
        track_settlement(
            future,
            model=usage.model,
            provider=usage.provider,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            outcome=usage.status,
            streamed=usage.streamed,
            client_ip=usage.client_ip,
        )

    def metered(self, outcome: MeteredOutcome) -> None:
        # the rest was noted as it happened (settling): the middleware records it
        hook = context.unbilled_hook
        if outcome.unbilled > 0 and hook is not None:
            hook(outcome.model, outcome.unbilled)

    def refused(self, api: Api, reason: str) -> None:
        pass  # the error answer is noted by the middleware (note_error)
