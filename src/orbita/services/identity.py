"""Identity resolution: which customer a message belongs to, and merging profiles.

A customer is known by user ids (current and aliased) and anonymous ids. A message's ids are
looked up; unknown ids create a customer or join the one they came with; an anonymous
profile that turns out to be a known user is merged into that user (its events move too).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update

from orbita.model.events import EventRecord
from orbita.store.state import customers, identities

USER = "user"
ANONYMOUS = "anonymous"


class IdentityRef(NamedTuple):
    """What identity resolution reads of a message (an EventRecord has the same fields)."""

    type: str
    user_id: str | None
    anonymous_id: str | None
    previous_id: str | None
    micros: int  # the event time in microseconds since the epoch (UTC)

    @property
    def timestamp(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.micros)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


Identified = EventRecord | IdentityRef


class IdentityResolver:
    """Resolves ids to customer ids inside one state transaction, with a cache across batches.

    The cache is only trusted while this process is the only writer of identities (the
    embedded default, and the one ingest writer of a server); `forget` drops it.
    """

    def __init__(self, *, cache_size: int = 2_000_000) -> None:
        self._cache: dict[tuple[str, str], int] = {}
        self._user_of: dict[int, str | None] = {}
        # Ids the last warm-up found in no profile: they need no second look-up.
        self._absent: set[tuple[str, str]] = set()
        self._cache_size = cache_size
        # Merges found in this batch, (source, target) in order: written at its end.
        self._pending: list[tuple[int, int]] = []

    def forget(self) -> None:
        self._cache.clear()
        self._user_of.clear()
        self._absent.clear()

    def resolve(
        self, connection: Connection, records: Iterable[Identified]
    ) -> tuple[list[int], dict[int, int]]:
        """Customer id per record, creating customers as needed; and the merges done (from → to).

        Records resolved before a merge in the same batch still carry the merged id: map
        them through the returned merges.
        """
        batch = list(records)
        self._warm(connection, batch)
        self._create_unknown(connection, batch)
        merges: dict[int, int] = {}
        self._pending = []
        resolved = [self._one(connection, record, merges) for record in batch]
        self._write_merges(connection, merges)
        if merges:
            resolved = [follow_merges(merges, cid) for cid in resolved]
        if len(self._cache) > self._cache_size:
            self.forget()
        return resolved, merges

    def _warm(self, connection: Connection, records: list[Identified]) -> None:
        """One query for every id the batch names that the cache does not know yet."""
        wanted: set[tuple[str, str]] = set()
        for record in records:
            for key in _keys(record):
                if key not in self._cache:
                    wanted.add(key)
        self._absent = set(wanted)
        by_kind: dict[str, list[str]] = defaultdict(list)
        for kind, value in wanted:
            by_kind[kind].append(value)
        for kind, values in by_kind.items():
            # kind = ? AND value IN (…) walks the primary key; a row-value IN list does not.
            for start in range(0, len(values), 500):
                rows = connection.execute(
                    select(identities.c.value, identities.c.customer_id).where(
                        identities.c.kind == kind,
                        identities.c.value.in_(values[start : start + 500]),
                    )
                ).all()
                for value, customer_id in rows:
                    self._cache[(kind, value)] = int(customer_id)
                    self._absent.discard((kind, value))

    def _create_unknown(self, connection: Connection, records: list[Identified]) -> None:
        """Create, in two statements, the customers of records whose every id is new.

        The same as creating them one by one in `_one`, which then finds them, but bulk
        imports and first-time visitors cost two round trips a batch, not two a customer.
        """
        plans: list[tuple[Identified, list[tuple[str, str]]]] = []
        claimed: set[tuple[str, str]] = set()
        for record in records:
            keys = _keys(record)
            if record.type == "alias" or not keys:
                continue
            if all(key in self._absent and key not in claimed for key in keys):
                claimed.update(keys)
                plans.append((record, keys))
        if not plans:
            return
        created = _allocate_customer_ids(connection, len(plans))
        connection.execute(
            insert(customers),
            [
                {
                    "customer_id": customer_id,
                    "user_id": record.user_id,
                    "traits": {},
                    "created_at": record.timestamp,
                    "updated_at": record.timestamp,
                }
                for (record, _), customer_id in zip(plans, created, strict=True)
            ],
        )
        links = []
        for (record, keys), customer_id in zip(plans, created, strict=True):
            self._user_of[int(customer_id)] = record.user_id
            for kind, value in keys:
                links.append({"kind": kind, "value": value, "customer_id": int(customer_id)})
                self._cache[(kind, value)] = int(customer_id)
        connection.execute(insert(identities), links)
        self._absent -= claimed

    def _one(self, connection: Connection, record: Identified, merges: dict[int, int]) -> int:
        if record.type == "alias" and record.previous_id and record.user_id:
            return self._alias(connection, record, merges)
        user_id, anonymous_id = record.user_id, record.anonymous_id
        by_user = self._find(connection, USER, user_id, merges)
        by_anonymous = self._find(connection, ANONYMOUS, anonymous_id, merges)
        if by_user is None and by_anonymous is None:
            customer_id = self._create(connection, user_id=user_id, at=record.timestamp)
            if user_id:
                self._link(connection, USER, user_id, customer_id)
            if anonymous_id:
                self._link(connection, ANONYMOUS, anonymous_id, customer_id)
            return customer_id
        if by_user is None:
            assert by_anonymous is not None
            if user_id is None:
                return by_anonymous
            if self._user_id(connection, by_anonymous) is None:
                # The anonymous visitor has identified: the profile becomes that user's.
                self._set_user_id(connection, by_anonymous, user_id)
                self._link(connection, USER, user_id, by_anonymous)
                return by_anonymous
            # A shared device: the anonymous id stays with the first user.
            customer_id = self._create(connection, user_id=user_id, at=record.timestamp)
            self._link(connection, USER, user_id, customer_id)
            return customer_id
        if by_anonymous is None:
            if anonymous_id:
                self._link(connection, ANONYMOUS, anonymous_id, by_user)
            return by_user
        if by_anonymous != by_user and self._user_id(connection, by_anonymous) is None:
            self._merge(connection, source=by_anonymous, target=by_user, merges=merges)
        return by_user

    def _alias(self, connection: Connection, record: Identified, merges: dict[int, int]) -> int:
        """`alias`: previousId (an anonymous or older user id) becomes known as userId."""
        assert record.previous_id is not None and record.user_id is not None
        previous, user_id = record.previous_id, record.user_id
        current = self._find(connection, USER, user_id, merges)
        earlier = self._find(connection, USER, previous, merges)
        if earlier is None:
            earlier = self._find(connection, ANONYMOUS, previous, merges)
        if earlier is None and current is None:
            customer_id = self._create(connection, user_id=user_id, at=record.timestamp)
            self._link(connection, USER, user_id, customer_id)
            self._link_previous(connection, previous, customer_id)
            return customer_id
        if earlier is None:
            assert current is not None
            self._link_previous(connection, previous, current)
            return current
        if current is None:
            if self._user_id(connection, earlier) in (None, previous):
                self._set_user_id(connection, earlier, user_id)
            self._link(connection, USER, user_id, earlier)
            return earlier
        if earlier != current:
            self._merge(connection, source=earlier, target=current, merges=merges)
        return current

    def _link_previous(self, connection: Connection, previous: str, customer_id: int) -> None:
        # An unknown previousId may be either kind of id: it is found as either from now on.
        self._link(connection, USER, previous, customer_id)
        self._link(connection, ANONYMOUS, previous, customer_id)

    def _find(
        self, connection: Connection, kind: str, value: str | None, merges: Mapping[int, int]
    ) -> int | None:
        if value is None:
            return None
        found = self._cache.get((kind, value))
        if found is None and (kind, value) not in self._absent:
            # Not warmed (the cache was dropped mid-batch by a merge): ask the store.
            found = connection.execute(
                select(identities.c.customer_id).where(
                    identities.c.kind == kind, identities.c.value == value
                )
            ).scalar_one_or_none()
            if found is not None:
                self._cache[(kind, value)] = found = int(found)
        if found is None:
            return None
        return follow_merges(merges, found)

    def _create(self, connection: Connection, *, user_id: str | None, at: datetime) -> int:
        customer_id = connection.execute(
            insert(customers)
            .values(user_id=user_id, traits={}, created_at=at, updated_at=at)
            .returning(customers.c.customer_id)
        ).scalar_one()
        self._user_of[int(customer_id)] = user_id
        return int(customer_id)

    def _link(self, connection: Connection, kind: str, value: str, customer_id: int) -> None:
        connection.execute(
            insert(identities).values(kind=kind, value=value, customer_id=customer_id)
        )
        self._cache[(kind, value)] = customer_id
        self._absent.discard((kind, value))

    def _user_id(self, connection: Connection, customer_id: int) -> str | None:
        if customer_id not in self._user_of:
            self._user_of[customer_id] = connection.execute(
                select(customers.c.user_id).where(customers.c.customer_id == customer_id)
            ).scalar_one_or_none()
        return self._user_of[customer_id]

    def _set_user_id(self, connection: Connection, customer_id: int, user_id: str) -> None:
        connection.execute(
            update(customers).where(customers.c.customer_id == customer_id).values(user_id=user_id)
        )
        self._user_of[customer_id] = user_id

    def _merge(
        self, connection: Connection, *, source: int, target: int, merges: dict[int, int]
    ) -> None:
        """Fold profile `source` into `target`: ids, missing traits and fields, first-seen time.
        Noted now (later records of the batch follow `merges`), written with the batch's
        other merges by `_write_merges`: five statements a batch instead of five a merge
        (anonymous visitors who sign in make a merge each)."""
        merges[source] = target
        self._pending.append((source, target))
        self._user_of.pop(source, None)

    def _write_merges(self, connection: Connection, merges: Mapping[int, int]) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        involved = sorted({customer_id for pair in pending for customer_id in pair})
        rows: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(involved):
            for row in connection.execute(
                select(customers).where(customers.c.customer_id.in_(chunk))
            ):
                rows[int(row.customer_id)] = dict(row._mapping)
        # In the batch's order, each on the profiles as the merges before it left them
        # (a profile merged into another may take in a third first).
        for source, target in pending:
            kept, gone = rows[target], rows[source]
            kept["traits"] = {**(gone["traits"] or {}), **(kept["traits"] or {})}
            kept["created_at"] = min(kept["created_at"], gone["created_at"])
            for column in _FILLED:
                if kept[column] is None and gone[column] is not None:
                    kept[column] = gone[column]
        sources = [source for source, _ in pending]
        final = {source: follow_merges(merges, source) for source in sources}
        moved: list[tuple[str, str, int]] = []
        for chunk in _chunks(sources):
            moved += [
                (kind, value, final[int(customer_id)])
                for kind, value, customer_id in connection.execute(
                    select(identities.c.kind, identities.c.value, identities.c.customer_id).where(
                        identities.c.customer_id.in_(chunk)
                    )
                )
            ]
        connection.execute(
            update(identities)
            .where(identities.c.customer_id == bindparam("b_source"))
            .values(customer_id=bindparam("b_target")),
            [{"b_source": source, "b_target": final[source]} for source in sources],
        )
        for chunk in _chunks(sources):
            connection.execute(delete(customers).where(customers.c.customer_id.in_(chunk)))
        gone_ids = set(sources)
        targets = sorted({target for _, target in pending if target not in gone_ids})
        connection.execute(
            update(customers)
            .where(customers.c.customer_id == bindparam("b_id"))
            .values(
                traits=bindparam("b_traits"),
                created_at=bindparam("b_created_at"),
                **{column: bindparam(f"b_{column}") for column in _FILLED},
            ),
            [
                {
                    "b_id": target,
                    "b_traits": rows[target]["traits"],
                    "b_created_at": rows[target]["created_at"],
                    **{f"b_{column}": rows[target][column] for column in _FILLED},
                }
                for target in targets
            ],
        )
        # Every id of the merged profiles was in `moved`: the cache stays exact, not dropped.
        for kind, value, customer_id in moved:
            self._cache[(kind, value)] = customer_id


_FILLED = ("email", "phone", "telegram_chat_id", "timezone", "locale")


def _chunks(values: list[int], size: int = 500) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _allocate_customer_ids(connection: Connection, count: int) -> list[int]:
    """Ids for new customers, so that they can be inserted in one executemany.

    PostgreSQL hands out a block of its sequence; SQLite has one writer at a time, and the
    write lock is taken first so that the block cannot be handed out twice.
    """
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('customers', 'customer_id')) "
                "FROM generate_series(1, :count)"
            ),
            {"count": count},
        ).scalars()
        return [int(value) for value in rows]
    connection.execute(text("UPDATE customers SET customer_id = customer_id WHERE 0"))
    highest = connection.execute(select(func.max(customers.c.customer_id))).scalar_one()
    first = int(highest or 0) + 1
    return list(range(first, first + count))


def _keys(record: Identified) -> list[tuple[str, str]]:
    keys = []
    if record.user_id:
        keys.append((USER, record.user_id))
    if record.anonymous_id:
        keys.append((ANONYMOUS, record.anonymous_id))
    if record.previous_id:
        keys += [(USER, record.previous_id), (ANONYMOUS, record.previous_id)]
    return keys


def follow_merges(merges: Mapping[int, int], customer_id: int) -> int:
    while customer_id in merges:
        customer_id = merges[customer_id]
    return customer_id
