"""Merges found in one batch are written together at its end (services/identity.py): the
profiles, ids and events come out as when each message is stored on its own, including a
profile merged into one that is merged in turn."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from orbita.model.events import EventRecord
from orbita.model.messages import parse_batch
from orbita.services.ingest import store_records
from orbita.services.workspace import Workspace
from orbita.store.state import customers, identities

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def messages() -> list[dict[str, Any]]:
    return [
        # Three anonymous visitors and two known users, with traits and fields to fold.
        {"type": "identify", "anonymousId": "a1", "traits": {"size": "M", "email": "a@x.org"}},
        {"type": "track", "anonymousId": "a2", "event": "Product Viewed"},
        {"type": "identify", "userId": "u1", "traits": {"tier": "gold"}},
        {"type": "identify", "userId": "u2", "traits": {"size": "L"}},
        {"type": "track", "anonymousId": "a3", "event": "Product Viewed"},
        # a1 signs in as u1 (a1's profile folds into u1's), then u1 is aliased to u2 (u1's
        # profile, holding a1's, folds into u2's); a2 signs in as u2; a3 stays anonymous.
        {"type": "track", "userId": "u1", "anonymousId": "a1", "event": "Signed In"},
        {"type": "alias", "previousId": "u1", "userId": "u2"},
        {"type": "track", "userId": "u2", "anonymousId": "a2", "event": "Signed In"},
        {"type": "track", "userId": "u1", "event": "Order Completed"},
        {"type": "track", "anonymousId": "a1", "event": "Product Viewed"},
    ]


def records() -> list[EventRecord]:
    stamped = [
        {**message, "messageId": f"m{i}", "timestamp": f"2026-04-01T09:{i:02d}:00Z"}
        for i, message in enumerate(messages())
    ]
    return parse_batch({"batch": stamped}, received_at=T0)


def outcome(workspace: Workspace) -> tuple[Any, ...]:
    with workspace.state.connect() as connection:
        profiles = sorted(
            (row.user_id or "", sorted((row.traits or {}).items()), row.email, str(row.created_at))
            for row in connection.execute(select(customers))
        )
        owners = {
            int(row.customer_id): row.user_id or ""
            for row in connection.execute(select(customers.c.customer_id, customers.c.user_id))
        }
        ids = sorted(
            (kind, value, owners[int(customer_id)])
            for kind, value, customer_id in connection.execute(
                select(identities.c.kind, identities.c.value, identities.c.customer_id)
            )
        )
    events = workspace.events.ibis().to_pyarrow(
        workspace.events.ibis().table("events").select("message_id", "customer_id")
    )
    by_message = sorted(
        (message, owners.get(int(customer), "?"))
        for message, customer in zip(
            events.column("message_id").to_pylist(),
            events.column("customer_id").to_pylist(),
            strict=True,
        )
    )
    return profiles, ids, by_message


def test_one_batch_of_merges_ends_as_one_message_at_a_time(
    workspace: Workspace, tmp_path: Any
) -> None:
    store_records(workspace=workspace, records=records())
    together = outcome(workspace)
    profiles, ids, by_message = together
    # u1 (with a1's profile) went into u2; a2 went into u2; a3 is the one anonymous profile.
    assert [p[0] for p in profiles] == ["", "u2"]
    kept = profiles[1]
    # u2's own size wins over a1's; a1's email and u1's tier are folded in.
    assert dict(kept[1]) == {"size": "L", "tier": "gold", "email": "a@x.org"}
    assert {owner for _, owner in by_message} == {"", "u2"}
    assert ("anonymous", "a1", "u2") in ids and ("user", "u1", "u2") in ids

    from orbita.core.settings import Settings
    from orbita.services.workspace import init_workspace, open_workspace

    settings = Settings(
        workspace=tmp_path / "one-by-one",
        database_url=workspace.settings.database_url,
        events_url=workspace.settings.events_url,
    )
    if settings.database_url is not None:
        return  # PostgreSQL: one database a test; the embedded run below compares
    init_workspace(settings=settings)
    with open_workspace(settings=settings) as alone:
        for record in records():
            store_records(workspace=alone, records=[record])
        assert outcome(alone) == together
