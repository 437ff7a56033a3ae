"""Tracking links in sent messages: the open pixel, click redirects, and unsubscribe (the
one-click POST of RFC 8058 and a small preference page). No API key: the signed token in
the link is the authority, and it names one message, so one customer, and nothing else."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from orbita.api.deps import ApiContext, context_of
from orbita.api.errors import ApiError
from orbita.model.strategy import Strategy
from orbita.services.tracking import Hit, Preferences, Tracking, preferences, save_preferences
from orbita.services.tracking import track_click as record_click
from orbita.services.tracking import track_open as record_open
from orbita.services.tracking import unsubscribe as one_click_unsubscribe

T = TypeVar("T")
router = APIRouter(prefix="/t", tags=["tracking"])
Token = Annotated[str, Path(min_length=10, max_length=300, pattern=r"^[A-Za-z0-9._-]+$")]

PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not a link this server made, or its message is gone."}
}
# A preference form is a few topics: anything larger is not one.
_MAX_FORM_BYTES = 16 * 1024


def _tracking(request: Request, context: ApiContext) -> Tracking:
    """Made once per app: the signing key, bot rules, and recent clicks."""
    found: Tracking | None = getattr(request.app.state, "orbita_tracking", None)
    if found is None:
        found = Tracking.for_settings(context.settings)
        request.app.state.orbita_tracking = found
    return found


def _hit(request: Request, context: ApiContext) -> Hit:
    return Hit(
        method=request.method,
        user_agent=request.headers.get("user-agent", ""),
        ip=request.client.host if request.client is not None else None,
        at=context.workspace.clock.now(),
    )


def _strategy(context: ApiContext) -> Strategy | None:
    loaded = context.journeys.current()
    return loaded[0] if loaded is not None else None


async def _record(record: Callable[..., T], token: str, request: Request) -> T:
    """An open or a click, recorded by `record` (services.tracking) off the event loop."""
    context = context_of(request)
    tracking, hit = _tracking(request, context), _hit(request, context)

    def run() -> T:  # the applied strategy may be read again from the state store
        return record(
            workspace=context.workspace,
            tracking=tracking,
            token=token,
            hit=hit,
            strategy=_strategy(context),
            on_stored=context.journeys.on_stored,
        )

    return await run_in_threadpool(run)


def _gone() -> ApiError:
    return ApiError(status_code=404, code="not_found", message="no such link")


@router.get("/o/{token}.gif", responses=_NOT_FOUND)
@router.head("/o/{token}.gif", include_in_schema=False)  # prefetchers: recorded as bots
async def open_pixel(token: Token, request: Request) -> Response:
    """A 1x1 GIF; the message's open is recorded (a machine's, flagged as such)."""
    if not await _record(record_open, token, request):
        raise _gone()
    return Response(content=PIXEL_GIF, media_type="image/gif", headers=NO_CACHE)


@router.get("/c/{token}", status_code=302, responses=_NOT_FOUND)
@router.head("/c/{token}", status_code=302, include_in_schema=False)  # link scanners
async def click(token: Token, request: Request) -> Response:
    """302 to the link the message had at this index; the click is recorded."""
    url = await _record(record_click, token, request)
    if url is None:
        raise _gone()
    return Response(status_code=302, headers={"Location": url, **NO_CACHE})


@router.get("/u/{token}", responses=_NOT_FOUND, response_class=Response)
async def preference_page(token: Token, request: Request) -> Response:
    """The customer's subscription topics on the message's channel, to keep or drop."""
    context = context_of(request)
    strategy = await run_in_threadpool(_strategy, context)
    found = await run_in_threadpool(
        preferences,
        workspace=context.workspace,
        tracking=_tracking(request, context),
        token=token,
        strategy=strategy,
    )
    if found is None:
        raise _gone()
    return _page(found, saved=False)


@router.post("/u/{token}", responses=_NOT_FOUND, response_class=Response)
async def unsubscribe(token: Token, request: Request) -> Response:
    """RFC 8058 one-click (`List-Unsubscribe=One-Click`): the message's topic is dropped on
    its channel. The preference page's form (`form=preferences`) saves its choices."""
    context = context_of(request)
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise ApiError(status_code=413, code="too_large", message="the form is too large")
    form = parse_qs(body.decode("utf-8", errors="replace"))
    tracking = _tracking(request, context)
    strategy = await run_in_threadpool(_strategy, context)
    at = context.workspace.clock.now()
    if form.get("form") == ["preferences"]:
        saved = await run_in_threadpool(
            save_preferences,
            workspace=context.workspace,
            tracking=tracking,
            token=token,
            subscribed=form.get("topic", []),
            unsubscribe_all=form.get("action") == ["all"],
            at=at,
            strategy=strategy,
            on_stored=context.journeys.on_stored,
        )
        if saved is None:
            raise _gone()
        return _page(saved, saved=True)
    done = await run_in_threadpool(
        one_click_unsubscribe,
        workspace=context.workspace,
        tracking=tracking,
        token=token,
        at=at,
        strategy=strategy,
        on_stored=context.journeys.on_stored,
    )
    if not done:
        raise _gone()
    return _html("<h1>You are unsubscribed</h1><p>You will not get these messages again.</p>")


def _page(found: Preferences, *, saved: bool) -> Response:
    e = html.escape
    rows = "".join(
        f'<label><input type="checkbox" name="topic" value="{e(t.name)}"'
        f"{' checked' if t.subscribed and not found.unsubscribed_from_all else ''}> "
        f"{e(t.name.replace('_', ' '))}</label><br>"
        for t in found.topics
    )
    note = "<p><strong>Saved.</strong></p>" if saved else ""
    everything = (
        "<p>You are unsubscribed from everything on this channel.</p>"
        if found.unsubscribed_from_all
        else ""
    )
    return _html(
        f"<h1>Your subscriptions</h1>{note}"
        f"<p>Messages to {e(found.address)} on {e(found.channel)}.</p>{everything}"
        '<form method="post"><input type="hidden" name="form" value="preferences">'
        f"<fieldset>{rows or '<p>No topics to choose from.</p>'}</fieldset>"
        '<button type="submit" name="action" value="save">Save</button> '
        '<button type="submit" name="action" value="all">Unsubscribe from all</button>'
        "</form>"
    )


def _html(body: str) -> Response:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex"><title>Subscriptions</title>'
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;"
        "padding:0 1rem}fieldset{border:0;padding:0;margin:1rem 0}</style></head>"
        f"<body>{body}</body></html>"
    )
    return Response(content=page, media_type="text/html; charset=utf-8", headers=NO_CACHE)
