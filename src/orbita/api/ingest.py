"""Segment-compatible ingestion: `/v1/identify`, `/track`, `/page`, `/screen`, `/group`,
`/alias`, `/batch` (and `/import`, Segment's other name for batch).

A request is all or nothing: any invalid message rejects the whole request with a 400 that
names every bad item by index and field, and nothing of it is stored.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from orbita.api.auth import BasicCredentials, require_write_key
from orbita.api.bodies import read_body
from orbita.api.deps import context_of
from orbita.api.schemas import IngestAccepted, message_schema
from orbita.core.errors import InvalidInputError
from orbita.model.events import EventRecord
from orbita.model.messages import (
    Alias,
    Batch,
    Group,
    Identify,
    Page,
    Screen,
    Track,
    parse_batch,
    parse_json,
)
from orbita.model.messages import parse_message as parse_one
from orbita.services.ingest import PreparedEvents

router = APIRouter(prefix="/v1", tags=["ingestion"])

# Segment's clients only look at the status; the body is what Segment answers.
_ACCEPTED = b'{"success":true}'
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid JSON or an invalid message; nothing was stored."},
    401: {"description": "Missing or wrong write key."},
    413: {"description": "Over 32 KB a message or 500 KB a request."},
    415: {"description": "A Content-Encoding other than gzip."},
    503: {"description": "Starting, stopping or briefly overloaded: retry (Segment clients do)."},
}


async def _ingest(request: Request, credentials: BasicCredentials, kind: str | None) -> Response:
    context = context_of(request)
    settings = context.settings
    received_at = context.workspace.clock.now()
    key = credentials.username if credentials is not None else None
    if key is not None:
        # Checked before the body is read: an unauthorised sender costs no parsing.
        require_write_key(workspace=context.workspace, key=key)
    body = await read_body(request, limit=settings.max_batch_bytes)
    raw: object = None
    if key is None:
        # The key can only be in the body: until it is found, nothing in it is explained.
        try:
            raw = parse_json(body)
        except InvalidInputError:
            raw = None
        body_key = raw.get("writeKey") if isinstance(raw, dict) else None
        require_write_key(
            workspace=context.workspace, key=body_key if isinstance(body_key, str) else None
        )
    records: list[EventRecord] | PreparedEvents
    if kind is None and raw is None:
        records = await context.preparer.prepare(
            body, received_at=received_at, max_message_bytes=settings.max_message_bytes
        )
    elif kind is None:
        records = parse_batch(
            raw, received_at=received_at, max_message_bytes=settings.max_message_bytes
        )
    else:
        records = [
            parse_one(
                parse_json(body) if raw is None else raw,
                received_at=received_at,
                kind=kind,
                max_bytes=settings.max_message_bytes,
            )
        ]
    if records:
        await context.ingestor.ingest_async(records)
    return Response(_ACCEPTED, media_type="application/json")


def _route(path: str, kind: str | None, schema: dict[str, Any], summary: str) -> None:
    async def endpoint(request: Request, credentials: BasicCredentials) -> Response:
        return await _ingest(request, credentials, kind)

    endpoint.__name__ = f"ingest_{path.strip('/')}"
    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        summary=summary,
        response_model=IngestAccepted,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
        },
    )


_route("/identify", "identify", message_schema(Identify), "Identify a customer and set traits")
_route("/track", "track", message_schema(Track), "Record an event")
_route("/page", "page", message_schema(Page), "Record a page view")
_route("/screen", "screen", message_schema(Screen), "Record a screen view")
_route("/group", "group", message_schema(Group), "Put a customer in a group")
_route("/alias", "alias", message_schema(Alias), "Merge a previous id into a user id")
_route("/batch", None, message_schema(Batch), "Send many messages at once")
_route("/import", None, message_schema(Batch), "Send many messages at once (Segment's alias)")
