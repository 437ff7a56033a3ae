"""Delivery (admin key): the outbox's state, dead letters and their retry; and the bounce
webhook providers call (admin key, or the workspace's bounce webhook secret).

    GET  /v1/delivery/status                     messages per status, latest dead letters
    GET  /v1/delivery/dead-letters               newest first; ?channel= &journey= &limit= &cursor=
    POST /v1/delivery/dead-letters/{id}/retry    back in the queue, due now
    POST /v1/webhooks/bounces                    bounces and complaints from a provider

The webhook takes Orbita's shape `{"events": [{"type": "bounce", "email": "a@b.org",
"bounce": "hard", "status": "5.1.1", "reason": "…", "message_id": "<key@domain>", "id":
"…"}]}`, an Amazon SES notification through SNS, or SendGrid's event list. It is called
with `Authorization: Bearer <admin key>`, or `X-Orbita-Signature: sha256=<HMAC-SHA256 of
the body with the secret>`, or `?token=<the secret>` (SNS can only call a URL);
`orbita bounces secret` prints the secret.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from orbita.api.auth import AdminKey, bearer_scheme, require_admin, unauthorized
from orbita.api.deps import context_of
from orbita.api.errors import ApiError
from orbita.channels.email.bounces import BounceMailbox, parse_webhook
from orbita.core.errors import FieldProblem, InvalidInputError
from orbita.core.settings import Settings
from orbita.model.bounces import Bounce
from orbita.services.bounces import check_webhook_call, process_bounces, webhook_secret_for
from orbita.services.dead_letters import MAX_PAGE, dead_letters, retry_dead_letters
from orbita.services.delivery import outbox_status
from orbita.services.work import LiveJourneys
from orbita.services.workspace import Workspace

router = APIRouter(tags=["delivery"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot read or change delivery."},
}
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024


class DeadLetterOut(BaseModel):
    outbox_id: int
    key: str
    journey: str
    node: str
    template: str | None
    channel: str | None
    customer_id: int
    attempts: int
    reason: str
    created_at: str


class DeadLetterPageOut(BaseModel):
    items: list[DeadLetterOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class RetryResult(BaseModel):
    requeued: int


class BounceWebhookResult(BaseModel):
    received: int
    suppressed: int
    counted: int
    duplicate: int
    unmatched: int


@router.get("/v1/delivery/status", dependencies=[AdminKey], responses=_ERRORS)
async def delivery_status(request: Request) -> dict[str, Any]:
    """Messages per status and the latest dead letters (as `orbita deliver status`)."""
    found: dict[str, Any] = await run_in_threadpool(
        outbox_status, workspace=context_of(request).workspace
    )
    return found


@router.get(
    "/v1/delivery/dead-letters",
    dependencies=[AdminKey],
    response_model=DeadLetterPageOut,
    responses=_ERRORS,
)
async def list_dead_letters(
    request: Request,
    channel: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    journey: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None,
) -> DeadLetterPageOut:
    """Messages given up on, newest first, with the reason each was."""
    page = await run_in_threadpool(
        dead_letters,
        workspace=context_of(request).workspace,
        channel=channel,
        journey=journey,
        limit=limit,
        after=int(cursor) if cursor is not None else None,
    )
    return DeadLetterPageOut(
        items=[
            DeadLetterOut(**{**asdict(item), "created_at": item.created_at.isoformat()})
            for item in page.items
        ],
        next_cursor=str(page.next_cursor) if page.next_cursor is not None else None,
    )


@router.post(
    "/v1/delivery/dead-letters/{outbox_id}/retry",
    dependencies=[AdminKey],
    response_model=RetryResult,
    responses={**_ERRORS, 404: {"description": "No dead letter with this id."}},
)
async def retry_dead_letter(request: Request, outbox_id: Annotated[int, Path(ge=1)]) -> RetryResult:
    """Put one dead letter back in the queue, due now, its attempts counted afresh."""
    context = context_of(request)
    requeued = await run_in_threadpool(
        retry_dead_letters,
        workspace=context.workspace,
        ids=[outbox_id],
        now=context.workspace.clock.now(),
    )
    return RetryResult(requeued=requeued)


async def _webhook_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    signature: Annotated[str | None, Header(alias="X-Orbita-Signature")] = None,
    token: Annotated[str | None, Query(max_length=128)] = None,
) -> bytes:
    """The body, once the caller is known: an admin key, or the webhook secret."""
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise ApiError(status_code=413, code="too_large", message="the body is over 5 MB")
    if credentials is not None:
        await require_admin(request, credentials)
        return body
    if signature is None and token is None:
        raise unauthorized(
            scheme="Bearer",
            message="an admin key (Bearer), X-Orbita-Signature or ?token= is required",
        )
    secret = await run_in_threadpool(webhook_secret_for, settings=context_of(request).settings)
    if not check_webhook_call(secret=secret, body=body, signature=signature, token=token):
        raise unauthorized(scheme="Bearer", message="the signature or token is not valid")
    return body


@router.post(
    "/v1/webhooks/bounces",
    response_model=BounceWebhookResult,
    responses={**_ERRORS, 400: {"description": "The body is no shape this endpoint knows."}},
)
async def bounce_webhook(
    request: Request, body: Annotated[bytes, Depends(_webhook_caller)]
) -> BounceWebhookResult:
    """Bounces and complaints from an email provider: suppress, count, record events."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInputError(
            [FieldProblem(field="", message="not JSON")], summary="invalid bounce webhook"
        ) from None
    bounces = parse_webhook(parsed)
    context = context_of(request)
    report = await run_in_threadpool(
        process_bounces,
        workspace=context.workspace,
        bounces=bounces,
        now=context.workspace.clock.now(),
        on_stored=context.journeys.on_stored,
    )
    counts = report.counts
    return BounceWebhookResult(
        received=len(bounces),
        **{
            name: counts.get(name, 0)
            for name in ("suppressed", "counted", "duplicate", "unmatched")
        },
    )


def bounce_mailbox(
    settings: Settings, workspace: Workspace, journeys: LiveJourneys
) -> BounceMailbox | None:
    """`orbita serve`'s bounce mailbox when ORBITA_BOUNCE_PORT is set: the embedded event
    store admits one process, so the server takes the reports itself."""
    if not settings.bounce_port:
        return None

    def process(bounces: list[Bounce]) -> None:
        process_bounces(
            workspace=workspace,
            bounces=bounces,
            now=workspace.clock.now(),
            on_stored=journeys.on_stored,
        )

    return BounceMailbox(
        process, domains=settings.bounce_domains, host=settings.host, port=settings.bounce_port
    )
