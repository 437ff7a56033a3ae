"""Bulk import: customers and events from CSV, JSON Lines and Parquet files.

Every row is validated exactly as the HTTP API validates a message (`parse_message`), and a
file with any invalid row stores nothing: the whole file is validated first, then stored in
chunks through `store_records`, the one path by which events enter a workspace. Import is
idempotent on messageId; rows without one get an id derived from their content, so
importing the same file again stores nothing new.

Tabular rows (CSV, Parquet) are flat: known columns map to message fields, any other column
is a trait (customers) or a property (events). JSON Lines hold Segment messages as the API
takes them; a customers line without `traits` is read as a flat row.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson

from orbita.core.errors import FieldProblem, InvalidInputError, UserError
from orbita.model.events import EventRecord
from orbita.model.messages import parse_message
from orbita.services.identity import IdentityResolver
from orbita.services.ingest import IngestResult, store_records
from orbita.services.workspace import Workspace

Kind = Literal["customers", "events"]
FORMATS = ("csv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Rows stored per `store_records` call: large writes are what the event store is fast at.
CHUNK_ROWS = 20_000
# Files up to this many rows keep their validated records for the store pass (no re-read).
KEEP_ROWS = 200_000
# Problems reported in full; the rest are counted.
MAX_PROBLEMS = 100

# (phase, rows done, rows in total or 0 when not known); phase is "validating" or "storing".
ImportProgress = Callable[[str, int, int], None]

# Message fields a flat row may carry; everything else is a trait or a property.
_ENVELOPE = frozenset(
    {
        "messageId",
        "type",
        "userId",
        "anonymousId",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "context",
        "integrations",
    }
)
_EVENT_FIELDS = _ENVELOPE | {
    "event",
    "name",
    "category",
    "properties",
    "traits",
    "previousId",
    "groupId",
}
# Columns whose text holds a JSON object.
_JSON_COLUMNS = frozenset({"properties", "context", "traits", "integrations"})


@dataclass(frozen=True, slots=True)
class ImportReport:
    kind: Kind
    path: Path
    format: str
    rows: int
    stored: int
    duplicates: int
    seconds: float
    vectorised: bool = False  # validated column by column (Parquet track events)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


def import_customers(
    *,
    workspace: Workspace,
    path: Path,
    fmt: str | None = None,
    progress: ImportProgress | None = None,
) -> ImportReport:
    """Import customer profiles: each row becomes an identify message."""
    return _import(
        workspace=workspace,
        path=path,
        fmt=fmt,
        kind="customers",
        progress=progress,
        vectorised=False,
    )


def import_events(
    *,
    workspace: Workspace,
    path: Path,
    fmt: str | None = None,
    progress: ImportProgress | None = None,
    vectorised: bool | None = None,
) -> ImportReport:
    """Import behavioural events: each row becomes a message (`track` unless `type` says).

    A Parquet file of track events with typed columns is validated column by column
    (`vectorised`, chosen automatically when None); rows it cannot vouch for go through the
    per-row path, so both give the same records and the same errors.
    """
    return _import(
        workspace=workspace,
        path=path,
        fmt=fmt,
        kind="events",
        progress=progress,
        vectorised=vectorised,
    )


def file_format(path: Path, fmt: str | None = None) -> str:
    """The format named, or the one the file's extension implies."""
    if fmt is not None:
        chosen = fmt.lower().removeprefix(".")
        chosen = "jsonl" if chosen in ("json", "ndjson") else chosen
        if chosen not in FORMATS:
            raise UserError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return chosen
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise UserError(
            f"cannot tell the format of {path} from its extension: "
            f"name it with --format ({', '.join(FORMATS)})"
        )
    return found


def _import(
    *,
    workspace: Workspace,
    path: Path,
    fmt: str | None,
    kind: Kind,
    progress: ImportProgress | None,
    vectorised: bool | None,
) -> ImportReport:
    started = time.perf_counter()
    chosen = file_format(path, fmt)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    # One receive time for the whole file: both passes build identical records.
    received_at = workspace.clock.now()
    parser = _RowParser(
        kind=kind,
        fmt=chosen,
        received_at=received_at,
        max_bytes=workspace.settings.max_message_bytes,
    )
    notify = progress or (lambda _phase, _done, _total: None)
    vectorised = _use_vectorised(path, chosen, kind, vectorised)

    # Pass 1: validate everything; keep the records when the file is small.
    kept, rows = _validate(
        path, chosen, parser, vectorised=vectorised, keep=KEEP_ROWS, notify=notify
    )
    notify("validating", rows, rows)

    # Pass 2: store in chunks, one identity cache across them.
    resolver = IdentityResolver()
    result = IngestResult(received=0, stored=0, duplicates=0)
    notify("storing", 0, rows)
    records = kept if kept is not None else _reparse(path, chosen, parser, vectorised=vectorised)
    for chunk in _chunks(records):
        result += store_records(workspace=workspace, records=chunk, resolver=resolver)
        notify("storing", result.received, rows)
    return ImportReport(
        kind=kind,
        path=path,
        format=chosen,
        rows=rows,
        stored=result.stored,
        duplicates=result.duplicates,
        seconds=time.perf_counter() - started,
        vectorised=vectorised,
    )


def _validate(
    path: Path,
    fmt: str,
    parser: _RowParser,
    *,
    vectorised: bool,
    keep: int | None,
    notify: ImportProgress | None = None,
) -> tuple[list[EventRecord] | None, int]:
    """Every row checked: (the records, unless more than `keep`; the row count). A file
    with bad rows raises them all (up to MAX_PROBLEMS), with their lines."""
    total = _estimate_rows(path, fmt)
    kept: list[EventRecord] | None = []
    problems: list[FieldProblem] = []
    bad = rows = 0
    for line, parsed in _parsed(path, fmt, parser, vectorised=vectorised):
        rows += 1
        if isinstance(parsed, InvalidInputError):
            bad += 1
            room = MAX_PROBLEMS - len(problems)
            if room > 0:
                problems.extend(_at_line(parsed.problems[:room], line))
            kept = None
            continue
        if kept is not None:
            kept.append(parsed)
            if keep is not None and len(kept) > keep:
                kept = None
        if notify is not None and rows % CHUNK_ROWS == 0:
            notify("validating", rows, max(total, rows))
    if bad:
        raise InvalidInputError(
            problems,
            summary=f"{path.name}: {bad} of {rows} rows are invalid, nothing was imported",
        )
    return kept, rows


def read_events(*, workspace: Workspace, path: Path, fmt: str | None = None) -> list[EventRecord]:
    """An events file's rows as records, checked as an import checks them, in time order:
    what `orbita import events FILE --replay` plays through the journeys."""
    chosen = file_format(path, fmt)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    parser = _RowParser(
        kind="events",
        fmt=chosen,
        received_at=workspace.clock.now(),
        max_bytes=workspace.settings.max_message_bytes,
    )
    vectorised = _use_vectorised(path, chosen, "events", None)
    records, _ = _validate(path, chosen, parser, vectorised=vectorised, keep=None)
    assert records is not None  # keep=None keeps every record
    return sorted(records, key=lambda record: record.timestamp)


Parsed = tuple[int, EventRecord | InvalidInputError]


def _parsed(path: Path, fmt: str, parser: _RowParser, *, vectorised: bool) -> Iterator[Parsed]:
    """(line, record or the error that rejects it) for every row, in file order."""
    if vectorised:
        yield from _vectorised_rows(path, parser)
        return
    for line, raw in _read_rows(path, fmt):
        try:
            yield line, parser.parse(raw, line=line)
        except InvalidInputError as error:
            yield line, error


def _reparse(
    path: Path, fmt: str, parser: _RowParser, *, vectorised: bool
) -> Iterator[EventRecord]:
    for line, parsed in _parsed(path, fmt, parser, vectorised=vectorised):
        if isinstance(parsed, InvalidInputError):
            # Valid a moment ago: the file was changed while it was being imported.
            raise UserError(f"{path}: line {line} changed during the import ({parsed})")
        yield parsed


def _chunks(records: Sequence[EventRecord] | Iterator[EventRecord]) -> Iterator[list[EventRecord]]:
    chunk: list[EventRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _at_line(problems: Sequence[FieldProblem], line: int) -> list[FieldProblem]:
    return [FieldProblem(field=p.field, message=p.message, index=None, line=line) for p in problems]


class _RowParser:
    """One row (a dict, or a problem found while reading it) to a validated EventRecord."""

    def __init__(self, *, kind: Kind, fmt: str, received_at: datetime, max_bytes: int) -> None:
        self.kind = kind
        self.tabular = fmt != "jsonl"
        self.received_at = received_at
        self.max_bytes = max_bytes

    def parse(self, raw: dict[str, Any] | FieldProblem, *, line: int) -> EventRecord:
        if isinstance(raw, FieldProblem):
            raise InvalidInputError([raw])
        message = self.message(raw)
        return parse_message(
            message,
            received_at=self.received_at,
            kind="identify" if self.kind == "customers" else None,
            max_bytes=self.max_bytes,
        )

    def message(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The Segment message a row stands for (still unvalidated)."""
        message = self._customer(raw) if self.kind == "customers" else self._event(raw)
        if message.get("messageId") is None:
            message["messageId"] = derived_message_id(message)
        return message

    def _customer(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        if not self.tabular and "traits" in raw:
            return {"type": "identify", **raw}  # a full identify message
        message: dict[str, Any] = {"type": "identify"}
        traits: dict[str, Any] = {}
        for key, value in raw.items():
            value = _cell(value) if self.tabular else value
            if value is None:
                continue
            if key == "traits":
                traits = {**_json_object(value, key), **traits}
            elif key in _ENVELOPE:
                message[key] = _json_object(value, key) if key in _JSON_COLUMNS else value
            else:
                traits[key] = value
        message["traits"] = traits
        return message

    def _event(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in raw.items():
            value = _cell(value) if self.tabular else value
            if value is None:
                continue
            if key in _JSON_COLUMNS:
                message[key] = _json_object(value, key)
            elif key in _EVENT_FIELDS or not self.tabular:
                message[key] = value
            else:
                extra[key] = value
        message.setdefault("type", "track")
        if extra:
            properties = message.get("properties")
            if properties is None or isinstance(properties, dict):
                message["properties"] = {**extra, **(properties or {})}
        return message


def derived_message_id(message: Mapping[str, Any]) -> str:
    """A messageId from a row's content: the same row imported again is the same message."""
    content = orjson.dumps(
        message, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
    )
    return "import-" + hashlib.blake2b(content, digest_size=16).hexdigest()


def _cell(value: Any) -> Any:
    """A tabular cell as a JSON value: empty cells are missing, decimals are numbers."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Decimal):
        return float(value)
    return value


def _json_object(value: Any, field: str) -> Any:
    """A JSON column's text as a value; objects pass through (validation checks the type)."""
    if not isinstance(value, str | bytes):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(
            [FieldProblem(field=field, message=f"is not valid JSON ({error.msg})")]
        ) from None


# --- reading files -------------------------------------------------------------------------

Row = tuple[int, dict[str, Any] | FieldProblem]


def _read_rows(path: Path, fmt: str) -> Iterator[Row]:
    """(line or row number, row) for every row of the file; unreadable rows as problems."""
    if fmt == "csv":
        return _csv_rows(path)
    if fmt == "jsonl":
        return _jsonl_rows(path)
    return _parquet_rows(path)


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames
        except (csv.Error, UnicodeDecodeError) as error:
            raise UserError(f"{path}: not a readable CSV file ({error})") from None
        if not header:
            return
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as error:
                yield start, FieldProblem(field="", message=f"unreadable CSV ({error})", line=start)
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if None in row:
                problem = FieldProblem(field="", message="has more fields than the header")
                yield line, problem
                continue
            yield line, row


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open("rb") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                yield number, FieldProblem(field="", message=f"is not valid JSON ({error.msg})")
                continue
            if not isinstance(value, dict):
                yield number, FieldProblem(field="", message="must be a JSON object")
                continue
            yield number, value


def _parquet_rows(path: Path) -> Iterator[Row]:
    number = 0
    for batch in _parquet_batches(path):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _parquet_batches(path: Path) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise UserError(f"{path}: not a readable Parquet file ({error})") from None
    yield from parquet.iter_batches(batch_size=CHUNK_ROWS)


def _estimate_rows(path: Path, fmt: str) -> int:
    """Rows in the file for the progress bar: exact for Parquet, counted lines otherwise."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # a damaged file is reported when it is read
            return 0
    lines = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return max(lines - 1, 0) if fmt == "csv" else lines


# --- the vectorised path: Parquet track events ---------------------------------------------

# Columns the vectorised path understands, and the Arrow types it takes them in.
_VECTOR_COLUMNS = frozenset(
    {"messageId", "type", "event", "userId", "anonymousId", "timestamp", "properties", "context"}
)
_TEXT_COLUMNS = _VECTOR_COLUMNS - {"timestamp"}
# Room left in a message for its keys, quotes and the timestamp when judging its size.
_ENVELOPE_BYTES = 512
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _use_vectorised(path: Path, fmt: str, kind: Kind, wanted: bool | None) -> bool:
    if wanted is False or kind != "events" or fmt != "parquet":
        if wanted:
            raise UserError("the vectorised import reads Parquet events files only")
        return False
    eligible = _vector_schema_ok(path)
    if wanted and not eligible:
        raise UserError(
            f"{path}: the vectorised import needs string columns from "
            f"{', '.join(sorted(_VECTOR_COLUMNS))} and an Arrow timestamp"
        )
    return eligible


def _vector_schema_ok(path: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):
        return False  # the per-row path reports the damage
    for field in schema:
        if field.name not in _VECTOR_COLUMNS:
            return False  # another column would be a property: the per-row path maps it
        if field.name == "timestamp":
            if not pa.types.is_timestamp(field.type) or field.type.unit == "ns":
                return False
        elif not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            return False
    return "event" in schema.names


def _vectorised_rows(path: Path, parser: _RowParser) -> Iterator[Parsed]:
    """Rows of a Parquet events file; checks done on whole columns with Arrow compute.

    A row is accepted here only when `parse_message` would accept it and would build the
    same record; any other row goes through the per-row path, which then gives exactly the
    per-row record or error. JSON columns are parsed (and their size measured) per row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    first = 1
    for batch in _parquet_batches(path):
        n = batch.num_rows
        text = _TextColumns(batch)
        message_id, kind, event = text["messageId"], text["type"], text["event"]
        user_id, anonymous_id = text["userId"], text["anonymousId"]
        clean = pc.and_(
            pc.and_(pc.is_valid(message_id), _fits(message_id, 255)),
            pc.and_(pc.is_valid(event), _fits(event, 200)),
        )
        clean = pc.and_(clean, pc.fill_null(pc.equal(kind, "track"), True))
        clean = pc.and_(clean, pc.or_(pc.is_valid(user_id), pc.is_valid(anonymous_id)))
        clean = pc.and_(clean, pc.and_(_fits(user_id, 255), _fits(anonymous_id, 255)))

        if "timestamp" in batch.schema.names:
            # Integers, not datetimes, out of Arrow: 5x faster than its aware datetimes.
            micros = batch.column("timestamp").cast(pa.timestamp("us", tz="UTC"))
            stamps = micros.cast(pa.int64()).to_pylist()
        else:
            stamps = [None] * n
        ok = clean.to_pylist()
        ids, events = message_id.to_pylist(), event.to_pylist()
        users, anonymous = user_id.to_pylist(), anonymous_id.to_pylist()
        properties, contexts = text["properties"].to_pylist(), text["context"].to_pylist()
        received_at, limit = parser.received_at, parser.max_bytes - _ENVELOPE_BYTES
        for i in range(n):
            line = first + i
            record = None
            if ok[i]:
                props = _object_or_none(properties[i])
                ctx = _object_or_none(contexts[i])
                if props is not None and ctx is not None:
                    # A bound, not a measurement: a character is at most 6 bytes once
                    # written as JSON ("\\u0001", or 4.5 for a number such as 1e15). A row
                    # over it is measured exactly by the per-row path.
                    chars = len(ids[i]) + len(events[i]) + len(users[i] or "")
                    chars += len(anonymous[i] or "")
                    chars += len(properties[i] or "") + len(contexts[i] or "")
                    if 6 * chars <= limit:
                        stamp = stamps[i]
                        record = EventRecord(
                            message_id=ids[i],
                            type="track",
                            name=events[i],
                            user_id=users[i],
                            anonymous_id=anonymous[i],
                            properties=props,
                            context=ctx,
                            timestamp=received_at
                            if stamp is None
                            else _EPOCH + timedelta(microseconds=stamp),
                            received_at=received_at,
                        )
            if record is not None:
                yield line, record
                continue
            # Not vouched for: the per-row path decides, with its exact record or error.
            raw = batch.slice(i, 1).to_pylist()[0]
            try:
                yield line, parser.parse(raw, line=line)
            except InvalidInputError as error:
                yield line, error
        first += n


class _TextColumns:
    """A batch's text columns with empty cells as missing (absent columns: all missing)."""

    def __init__(self, batch: Any) -> None:
        self._batch = batch

    def __getitem__(self, name: str) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        if name not in self._batch.schema.names:
            return pa.nulls(self._batch.num_rows, pa.string())
        column = self._batch.column(name)
        return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _fits(column: Any, most: int) -> Any:
    """Missing, or at most `most` characters (pydantic's max_length counts characters too)."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.less_equal(pc.utf8_length(column), most), True)


def _object_or_none(text: str | None) -> dict[str, Any] | None:
    """A JSON column's object ({} when empty); None when it is not a JSON object."""
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
