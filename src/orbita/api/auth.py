"""API keys: write keys (HTTP Basic, or `writeKey` in a body) for ingestion, admin keys (Bearer).

Keys are secrets: never logged, never echoed in an error. The workspace holds their hashes in
memory, so a check costs no store query on the hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from orbita.api.deps import context_of
from orbita.api.errors import ApiError
from orbita.services.workspace import Workspace, check_key

# `auto_error=False`: a missing header is ours to answer (a body may carry the write key).
basic_scheme = HTTPBasic(
    auto_error=False,
    description="Segment style: the write key as the user name, an empty password.",
)
bearer_scheme = HTTPBearer(auto_error=False, description="`Authorization: Bearer <admin key>`.")


def unauthorized(*, scheme: str, message: str) -> ApiError:
    return ApiError(
        status_code=401,
        code="unauthorized",
        message=message,
        headers={"WWW-Authenticate": f'{scheme} realm="orbita"'},
    )


def require_write_key(*, workspace: Workspace, key: str | None) -> None:
    if not key:
        raise unauthorized(
            scheme="Basic",
            message="a write key is required: HTTP Basic (write key as user name) or writeKey",
        )
    if not check_key(workspace=workspace, key=key, kind="write"):
        raise unauthorized(scheme="Basic", message="the write key is not valid")


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Admin endpoints: no key or an unknown key is 401, a write key is 403."""
    workspace = context_of(request).workspace
    if credentials is None or not credentials.credentials:
        raise unauthorized(scheme="Bearer", message="an admin key is required (Bearer)")
    key = credentials.credentials
    if check_key(workspace=workspace, key=key, kind="admin"):
        return
    if check_key(workspace=workspace, key=key, kind="write"):
        raise ApiError(status_code=403, code="forbidden", message="this needs an admin key")
    raise unauthorized(scheme="Bearer", message="the admin key is not valid")


BasicCredentials = Annotated[HTTPBasicCredentials | None, Depends(basic_scheme)]
AdminKey = Depends(require_admin)
