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
from datetime import datetime
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
    fast_path: bool = False

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
    return _import(workspace=workspace, path=path, fmt=fmt, kind="customers", progress=progress)


def import_events(
    *,
    workspace: Workspace,
    path: Path,
    fmt: str | None = None,
    progress: ImportProgress | None = None,
) -> ImportReport:
    """Import behavioural events: each row becomes a message (`track` unless `type` says)."""
    return _import(workspace=workspace, path=path, fmt=fmt, kind="events", progress=progress)


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
    total = _estimate_rows(path, chosen)
    notify = progress or (lambda _phase, _done, _total: None)

    # Pass 1: validate everything; keep the records when the file is small.
    kept: list[EventRecord] | None = []
    problems: list[FieldProblem] = []
    bad = rows = 0
    for line, raw in _read_rows(path, chosen):
        rows += 1
        try:
            record = parser.parse(raw, line=line)
        except InvalidInputError as error:
            bad += 1
            room = MAX_PROBLEMS - len(problems)
            if room > 0:
                problems.extend(_at_line(error.problems[:room], line))
            kept = None
            continue
        if kept is not None:
            kept.append(record)
            if len(kept) > KEEP_ROWS:
                kept = None
        if rows % CHUNK_ROWS == 0:
            notify("validating", rows, max(total, rows))
    notify("validating", rows, rows)
    if bad:
        raise InvalidInputError(
            problems,
            summary=f"{path.name}: {bad} of {rows} rows are invalid, nothing was imported",
        )

    # Pass 2: store in chunks, one identity cache across them.
    resolver = IdentityResolver()
    result = IngestResult(received=0, stored=0, duplicates=0)
    notify("storing", 0, rows)
    for chunk in _chunks(kept if kept is not None else _reparse(path, chosen, parser)):
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
    )


def _reparse(path: Path, fmt: str, parser: _RowParser) -> Iterator[EventRecord]:
    for line, raw in _read_rows(path, fmt):
        yield parser.parse(raw, line=line)


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
