"""`orbita generate`: write a generated store's customers, events and truth to files.

The simulation yields chunks of customers with their events (columnar numpy records); this
service formats them in bulk with Arrow and streams them to disk. Events must come out in
global time order although each chunk spans the whole period, so they are written in two
passes: each chunk's events go to a temporary Arrow file, one record batch per time window;
then every window is read back from all chunk files, put in order and appended to the
output. Memory stays at about one chunk plus one window, whatever the number of customers.

The files (the importer's contract):
- customers.<fmt>: one Segment identify per customer in sign-up order. Parquet and CSV rows
  are flat: userId, messageId ("gen-<store>-<seed>-identify-<userId>"), timestamp (sign-up;
  a UTC timestamp in Parquet, ISO 8601 text in CSV), then the traits as columns (email,
  phone, telegram_chat_id, timezone, locale, createdAt, first_name, ..., and the store's
  own). JSON Lines hold {"type": "identify", messageId, userId, timestamp, traits}.
- events.<fmt>: one Segment track per row in (timestamp, customer, ordinal) order:
  messageId ("gen-<store>-<seed>-<userId>-<n>", n counting the customer's events), type,
  event, userId (missing on anonymous visits), anonymousId, timestamp, properties and
  context (JSON text in Parquet and CSV, objects in JSON Lines).
- truth.json: the generating parameters, the campaigns' true effects and realised counts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from orbita.core.errors import UserError
from orbita.simulation import stores
from orbita.simulation.records import (
    DAY_MS,
    Column,
    CustomerBatch,
    EventBatch,
    Kind,
    ObjectList,
    Property,
)
from orbita.simulation.stores import STORES, Store, make_store, sum_counters

FORMATS = ("parquet", "jsonl", "csv")
# The generated history ends here unless `start` says otherwise: output is reproducible.
DEFAULT_END = datetime(2026, 11, 1, tzinfo=UTC)
# Chunks are made by several threads from this many chunks on.
PARALLEL_FROM_CHUNKS = 4
MAX_WORKERS = 4
# Parquet row groups of about this many rows: large enough for fast scans.
ROW_GROUP_ROWS = 500_000
_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_EVENT_SCHEMA = pa.schema(
    [
        ("messageId", pa.string()),
        ("type", pa.string()),
        ("event", pa.string()),
        ("userId", pa.string()),
        ("anonymousId", pa.string()),
        ("timestamp", _TIMESTAMP),
        ("properties", pa.string()),
        ("context", pa.string()),
    ]
)


@dataclass(frozen=True)
class GenerateReport:
    store: str  # "clothing-store" | "bank"
    customers: int
    events: int
    customers_path: Path
    events_path: Path
    truth_path: Path  # the known true effects (JSON)
    revenue: float


def generate_store(
    *,
    store: str,
    customers: int,
    days: int,
    seed: int,
    out: Path,
    start: datetime | None = None,
    fmt: str = "parquet",
    progress: Callable[[int, int], None] | None = None,
) -> GenerateReport:
    """Generate `customers` customers of `store` over `days` days and write them to `out`.

    Writes customers.<fmt>, events.<fmt> (in time order) and truth.json. The same arguments
    give byte-identical files. `start` defaults to `days` days before 2026-11-01T00:00Z.
    """
    if store not in STORES:
        raise UserError(f"unknown store {store!r}: use one of {', '.join(STORES)}")
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if customers < 1:
        raise UserError("customers must be at least 1")
    if days < 1:
        raise UserError("days must be at least 1")
    if seed < 0:
        raise UserError("seed must not be negative")
    if start is None:
        start = DEFAULT_END - timedelta(days=days)
    if start.tzinfo is None or start.utcoffset() is None:
        raise UserError("start must be time zone-aware (for example 2025-11-01T00:00:00Z)")
    start = start.astimezone(UTC)

    chunk_size = stores.CHUNK
    generator = make_store(
        store=store, seed=seed, customers=customers, start=start, days=days, chunk_size=chunk_size
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "customers": out / f"customers.{fmt}",
        "events": out / f"events.{fmt}",
        "truth": out / "truth.json",
    }
    message_prefix = f"gen-{store}-{seed}-"
    notify = progress or (lambda _done, _total: None)
    window_days = max(1, -(-days // 512))  # at most 512 windows (batches per chunk file)
    windows = -(-days // window_days)
    counters: list[Mapping[str, float]] = []

    with tempfile.TemporaryDirectory(dir=out, prefix=".generate-") as tmp:
        scratch = Path(tmp)
        jobs = [
            _Job(
                index=index,
                path=scratch / f"chunk-{index:06d}.arrow",
                fmt=fmt,
                prefix=message_prefix,
                window_ms=window_days * DAY_MS,
                windows=windows,
            )
            for index in range(generator.chunks)
        ]
        # Files are written in the scratch folder and moved into place when whole: a failed
        # run leaves no half-written file behind.
        done = 0
        with _writer(fmt, scratch / paths["customers"].name, "customers") as people:
            notify(0, customers)
            for made in _run(generator, jobs):
                people.write(made.customers)
                counters.append(made.counters)
                done += made.customers.num_rows
                notify(done, customers)
        total_events = 0
        with _writer(fmt, scratch / paths["events"].name, "events") as writer:
            for table in _merged_windows([job.path for job in jobs], windows):
                total_events += table.num_rows
                writer.write(table)
        for kind in ("customers", "events"):
            (scratch / paths[kind].name).replace(paths[kind])

    realised = sum_counters(counters)
    realised["events"] = float(total_events)
    truth = _truth(generator, seed=seed, realised=realised)
    paths["truth"].write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    return GenerateReport(
        store=store,
        customers=customers,
        events=total_events,
        customers_path=paths["customers"],
        events_path=paths["events"],
        truth_path=paths["truth"],
        revenue=round(realised.get("revenue", 0.0), 2),
    )


@dataclass(frozen=True)
class _Job:
    """One chunk to make: its customers come back, its events go to `path` by window."""

    index: int
    path: Path
    fmt: str
    prefix: str
    window_ms: int
    windows: int


@dataclass(frozen=True)
class _Made:
    customers: pa.Table
    counters: Mapping[str, float]


def _make(generator: Store, job: _Job) -> _Made:
    """Pass one for one chunk."""
    chunk = generator.chunk(job.index)
    events = _events_table(chunk.events, job.prefix)
    _write_windows(
        job.path,
        events,
        chunk.events.timestamp,
        start_ms=generator.calendar.start_ms,
        window_ms=job.window_ms,
        windows=job.windows,
    )
    customers = _customers_table(chunk.customers, job.prefix, job.fmt)
    return _Made(customers=customers, counters=chunk.counters)


def _run(generator: Store, jobs: Sequence[_Job]) -> Iterator[_Made]:
    """Chunks in order; with enough of them, made by a thread per core.

    numpy and Arrow release the GIL in their kernels, which is where the time goes, so
    threads use both cores without processes (no pickling, no re-imported __main__).
    """
    workers = min(MAX_WORKERS, len(os.sched_getaffinity(0)), len(jobs))
    if len(jobs) < PARALLEL_FROM_CHUNKS or workers < 2:
        yield from (_make(generator, job) for job in jobs)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # At most two chunks per thread in flight: memory stays bounded.
        pending = [pool.submit(_make, generator, job) for job in jobs[: 2 * workers]]
        for job in jobs[2 * workers :]:
            yield pending.pop(0).result()
            pending.append(pool.submit(_make, generator, job))
        for future in pending:
            yield future.result()


def _truth(generator: Store, *, seed: int, realised: Mapping[str, float]) -> dict[str, Any]:
    calendar = generator.calendar
    generated = {
        "seed": seed,
        "customers": generator.customers,
        "chunk_size": generator.chunk_size,  # part of the recipe: draws are per chunk
        "days": calendar.days,
        "start": _iso_text(calendar.start_ms),
        "end": _iso_text(calendar.end_ms),
        "operational_days": round(calendar.operational_days, 6),
    }
    counts = {k: (int(v) if float(v).is_integer() else round(v, 2)) for k, v in realised.items()}
    return {**generator.truth(), "generated": generated, "realised": counts}


def _iso_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


# --- columns to Arrow ---------------------------------------------------------------------


def _mask(column: Column | ObjectList) -> np.ndarray[Any, np.dtype[np.bool_]] | None:
    """Arrow's null mask (True = missing) for numpy-built arrays."""
    return None if column.valid is None else ~column.valid


def _vocabulary_json(vocabulary: Sequence[str]) -> pa.Array:
    return pa.array([orjson.dumps(v).decode() for v in vocabulary], pa.string())


def _id_strings(column: Column) -> pa.Array:
    values = np.asarray(column.values, dtype=np.int64)
    if column.width and len(values) and values.min() >= 0:
        # Zero-padding without utf8_lpad (slow): print value + 10**width, drop the leading 1.
        padded = np.maximum(values, 0) + 10**column.width
        digits = pa.array(padded, pa.int64(), mask=_mask(column)).cast(pa.string())
        wide = values >= 10**column.width
        digits = pc.utf8_slice_codeunits(digits, 1)
        if wide.any():  # more digits than the width: print as they are
            plain = pa.array(values, pa.int64(), mask=_mask(column)).cast(pa.string())
            digits = pc.if_else(pa.array(wide), plain, digits)
    else:
        digits = pa.array(values, pa.int64(), mask=_mask(column)).cast(pa.string())
        if column.width:
            digits = pc.utf8_lpad(digits, width=column.width, padding="0")
    if column.prefix:
        digits = pc.binary_join_element_wise(column.prefix, digits, "")
    return digits


def _time_strings(column: Column, *, date_only: bool = False) -> pa.Array:
    stamps = pa.array(column.values, pa.int64(), mask=_mask(column)).cast(_TIMESTAMP)
    if date_only:
        return pc.strftime(stamps, format="%Y-%m-%d")
    return _iso(stamps)


def _iso(stamps: pa.Array) -> pa.Array:
    """ISO 8601 in UTC with milliseconds: strftime's %S prints ".mmm" for ms timestamps."""
    return pc.binary_join_element_wise(pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%S"), "Z", "")


def _money(column: Column) -> pa.Array:
    # The shortest text of the double nearest to k/100 is k/100 itself: 12.5, 0.29, 240.
    euros = np.asarray(column.values, dtype=np.int64) / 100
    return pa.array(euros, pa.float64(), mask=_mask(column)).cast(pa.string())


Part: TypeAlias = "pa.Array | str"  # an Arrow string array, or a constant


def _json_parts(column: Column) -> list[Part]:
    """Pieces whose concatenation is each value's JSON text (null where missing).

    Constant pieces stay Python strings so that one join at the end writes the whole object.
    """
    mask = _mask(column)
    match column.kind:
        case Kind.INT:
            return [pa.array(column.values, pa.int64(), mask=mask).cast(pa.string())]
        case Kind.FLOAT:
            rounded = np.round(np.asarray(column.values, dtype=np.float64), 4)
            return [pa.array(rounded, pa.float64(), mask=mask).cast(pa.string())]
        case Kind.MONEY:
            return [_money(column)]
        case Kind.BOOL:
            flags = pa.array(column.values, pa.bool_(), mask=mask)
            return [pc.if_else(flags, "true", "false")]
        case Kind.TEXT:
            codes = pa.array(column.values, pa.int64(), mask=mask)
            return [_vocabulary_json(column.vocabulary).take(codes)]
        case Kind.ID:
            digits = pa.array(column.values, pa.int64(), mask=mask).cast(pa.string())
            if column.width:
                digits = pc.utf8_lpad(digits, width=column.width, padding="0")
            return ['"' + column.prefix, digits, '"']
        case Kind.TIME:
            stamps = pa.array(column.values, pa.int64(), mask=mask).cast(_TIMESTAMP)
            return ['"', pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%S"), 'Z"']
        case Kind.DATE:
            stamps = pa.array(column.values, pa.int64(), mask=mask).cast(_TIMESTAMP)
            return ['"', pc.strftime(stamps, format="%Y-%m-%d"), '"']
        case Kind.STR:
            return [
                pa.array(
                    [None if v is None else orjson.dumps(v).decode() for v in column.values],
                    pa.string(),
                    mask=mask,
                )
            ]


def _join(parts: Sequence[Part], *, nulls: str = "emit_null") -> pa.Array:
    merged: list[Part] = []
    for part in parts:  # neighbouring constants become one
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if not any(isinstance(p, pa.Array) for p in merged):
        raise ValueError("a join needs at least one array")
    return pc.binary_join_element_wise(*merged, "", null_handling=nulls, null_replacement="")


def _json_values(column: Column) -> pa.Array:
    """Each value as JSON text (null where missing)."""
    parts = _json_parts(column)
    return parts[0] if len(parts) == 1 and isinstance(parts[0], pa.Array) else _join(parts)


def _json_objects(properties: Mapping[str, Property], rows: int) -> pa.Array:
    """One JSON object per row from named columns; missing values leave their key out.

    Values that are always present go straight into one final join with their keys;
    a value that may be missing first becomes a `,"key":value` member that is null when
    the value is, and the final join replaces those nulls with nothing.
    """
    if not rows:
        return pa.array([], pa.string())
    parts: list[Part] = ["{"]
    optional = False
    first = True
    for key, prop in properties.items():
        values = [_json_lists(prop)] if isinstance(prop, ObjectList) else _json_parts(prop)
        label = ("" if first else ",") + orjson.dumps(key).decode() + ":"
        if prop.valid is None or bool(prop.valid.all()):
            parts.extend([label, *values])
        elif first:
            # A missing first member would leave a comma after the brace: join the object
            # with leading commas everywhere and cut the first one instead.
            return _json_objects_cut(properties, rows)
        else:
            optional = True
            parts.append(_join([label, *values]))
        first = False
    parts.append("}")
    if first:
        return pa.repeat("{}", rows)
    return _join(parts, nulls="replace" if optional else "emit_null")


def _json_objects_cut(properties: Mapping[str, Property], rows: int) -> pa.Array:
    members: list[Part] = []
    for key, prop in properties.items():
        values = [_json_lists(prop)] if isinstance(prop, ObjectList) else _json_parts(prop)
        members.append(_join(["," + orjson.dumps(key).decode() + ":", *values]))
    joined = _join([pa.repeat("", rows), *members], nulls="replace")
    return pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")


def _json_by_block(batch: EventBatch) -> pa.Array:
    """Each block's JSON objects (few properties, mostly all present), then put in row order."""
    rows = len(batch)
    if not rows:
        return pa.array([], pa.string())
    counts = np.bincount(batch.block, minlength=len(batch.blocks))
    pieces = [
        _json_objects(props, int(count)) for props, count in zip(batch.blocks, counts, strict=True)
    ]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    return pa.concat_arrays(pieces).take(pa.array(offsets[batch.block] + batch.block_row))


def _json_lists(prop: ObjectList) -> pa.Array:
    """A JSON array of objects per row (an order's products)."""
    items = _json_objects(prop.items, len(next(iter(prop.items.values()))))
    present = prop.present()
    count = np.where(present, prop.count, 0).astype(np.int64)
    owners = np.repeat(np.arange(len(count)), count)
    firsts = np.repeat(prop.start, count)
    within = np.arange(len(owners)) - np.repeat(np.cumsum(count) - count, count)
    values = items.take(pa.array(firsts + within))
    offsets = pa.array(np.concatenate([[0], np.cumsum(count)]).astype(np.int32))
    lists = pa.ListArray.from_arrays(offsets, values, mask=pa.array(~present))
    del owners
    return pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")


def _plain(column: Column) -> pa.Array:
    """A trait as a typed column for Parquet and CSV."""
    mask = _mask(column)
    match column.kind:
        case Kind.INT:
            return pa.array(column.values, pa.int64(), mask=mask)
        case Kind.FLOAT:
            return pa.array(column.values, pa.float64(), mask=mask)
        case Kind.MONEY:
            return pa.array(np.asarray(column.values) / 100, pa.float64(), mask=mask)
        case Kind.BOOL:
            return pa.array(column.values, pa.bool_(), mask=mask)
        case Kind.TEXT:
            codes = pa.array(column.values, pa.int64(), mask=mask)
            return pa.array(column.vocabulary, pa.string()).take(codes)
        case Kind.ID:
            return _id_strings(column)
        case Kind.TIME:
            return _time_strings(column)
        case Kind.DATE:
            return _time_strings(column, date_only=True)
        case Kind.STR:
            return pa.array(list(column.values), pa.string(), mask=mask)


def _customers_table(batch: CustomerBatch, prefix: str, fmt: str) -> pa.Table:
    """Customers as identify rows: envelope columns, then traits."""
    user_id = _id_strings(batch.user_id)
    message_id = pc.binary_join_element_wise(prefix + "identify-", user_id, "")
    stamps = pa.array(batch.signed_up, pa.int64()).cast(_TIMESTAMP)
    if fmt == "jsonl":
        traits = _json_objects(batch.traits, len(batch))
        line = pc.binary_join_element_wise(
            '{"type":"identify","messageId":"',
            message_id,
            '","userId":"',
            user_id,
            '","timestamp":"',
            _time_strings(Column(Kind.TIME, batch.signed_up)),
            '","traits":',
            traits,
            "}\n",
            "",
        )
        return pa.table({"line": line})
    columns: dict[str, pa.Array] = {"userId": user_id, "messageId": message_id}
    if fmt == "csv":
        columns["timestamp"] = _time_strings(Column(Kind.TIME, batch.signed_up))
    else:
        columns["timestamp"] = stamps
    for key, column in batch.traits.items():
        columns[key] = _plain(column)
    return pa.table(columns)


def _events_table(batch: EventBatch, prefix: str) -> pa.Table:
    """Events as track rows in the canonical (Parquet) shape."""
    rows = len(batch)
    # A chunk has few customers and many events: print each userId once, then look it up.
    first = int(batch.customer.min()) if rows else 0
    local = batch.customer - first
    numbers = np.arange(first + 1, first + 2 + int(local.max() if rows else 0), dtype=np.int64)
    users = _id_strings(
        Column(Kind.ID, numbers, prefix=batch.user_id.prefix, width=batch.user_id.width)
    )
    user_ids = users.take(pa.array(local, pa.int64(), mask=_mask(batch.user_id)))
    message_id = pc.binary_join_element_wise(
        prefix.removesuffix("-"),
        users.take(pa.array(local)),
        pa.array(batch.ordinal, pa.int64()).cast(pa.string()),
        "-",
    )
    anonymous = batch.anonymous_id
    return pa.table(
        [
            message_id,
            pa.repeat("track", rows),
            pa.array(batch.event.vocabulary, pa.string()).take(pa.array(batch.event.values)),
            user_ids,
            pa.array(anonymous.vocabulary, pa.string()).take(
                pa.array(anonymous.values, pa.int64(), mask=_mask(anonymous))
            ),
            pa.array(batch.timestamp, pa.int64()).cast(_TIMESTAMP),
            _json_by_block(batch),
            _json_objects(batch.context, rows),
        ],
        schema=_EVENT_SCHEMA,
    )


# --- two passes over time windows ----------------------------------------------------------


def _write_windows(
    path: Path,
    table: pa.Table,
    timestamps: np.ndarray[Any, np.dtype[np.int64]],
    *,
    start_ms: int,
    window_ms: int,
    windows: int,
) -> None:
    """One record batch per time window (maybe empty), so pass two can read window w alone."""
    edges = start_ms + window_ms * np.arange(windows + 1, dtype=np.int64)
    bounds = np.searchsorted(timestamps, edges, side="left")
    options = ipc.IpcWriteOptions(compression="lz4")
    with (
        pa.OSFile(str(path), "wb") as sink,
        ipc.new_file(sink, _EVENT_SCHEMA, options=options) as w,
    ):
        for window in range(windows):
            lo, hi = int(bounds[window]), int(bounds[window + 1])
            w.write_batch(_one_batch(table.slice(lo, hi - lo)))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    batches = table.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=_EVENT_SCHEMA)
    return batches[0]


def _merged_windows(paths: Sequence[Path], windows: int) -> Iterator[pa.Table]:
    """Each window's events from every chunk file, in (timestamp, customer, ordinal) order.

    Chunks hold increasing customer numbers and each chunk's window is already in that
    order, so a stable sort by timestamp alone gives the global order. The next window is
    read and sorted in a second thread while the caller writes this one.
    """
    # Plain reads, not memory maps: mapped pages would count against the process as it runs.
    readers = [ipc.open_file(pa.OSFile(str(p))) for p in paths]

    def merged(window: int) -> pa.Table:
        pieces = [r.get_batch(window) for r in readers]
        table = pa.Table.from_batches(pieces, schema=_EVENT_SCHEMA)
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
        order = np.argsort(stamps, kind="stable")
        return table.take(pa.array(order)).combine_chunks()

    with ThreadPoolExecutor(max_workers=1) as reader:
        ahead = reader.submit(merged, 0) if windows else None
        for window in range(windows):
            assert ahead is not None
            table = ahead.result()
            ahead = reader.submit(merged, window + 1) if window + 1 < windows else None
            if table.num_rows:
                yield table


# --- writers ---------------------------------------------------------------------------------


class _Writer:
    def write(self, table: pa.Table) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ParquetWriter(_Writer):
    """Buffers tables into row groups of about ROW_GROUP_ROWS rows."""

    def __init__(self, path: Path, schema: pa.Schema | None) -> None:
        self.path = path
        self.schema = schema
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[pa.Table] = []
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                str(self.path), table.schema, compression="zstd", compression_level=3
            )
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.pending, self.rows = [], 0

    def close(self) -> None:
        self._flush()
        if self.writer is None:  # nothing was written: still leave a valid (empty) file
            empty = self.schema.empty_table() if self.schema is not None else pa.table({})
            pq.write_table(empty, str(self.path))
            return
        self.writer.close()


class _JsonlWriter(_Writer):
    """Tables of one `line` column, each line ending in a newline: written as bytes."""

    def __init__(self, path: Path, kind: str) -> None:
        self.handle: IO[bytes] = path.open("wb")
        self.kind = kind

    def write(self, table: pa.Table) -> None:
        lines = table.column("line") if "line" in table.column_names else _track_lines(table)
        for chunk in lines.chunks if isinstance(lines, pa.ChunkedArray) else [lines]:
            _write_strings(self.handle, chunk)

    def close(self) -> None:
        self.handle.close()


class _CsvWriter(_Writer):
    def __init__(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.writer: pacsv.CSVWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self.kind == "events":
            table = _csv_events(table)
        if self.writer is None:
            self.writer = pacsv.CSVWriter(str(self.path), table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        elif not self.path.exists():
            self.path.write_bytes(b"")


def _writer(fmt: str, path: Path, kind: str) -> _Writer:
    if fmt == "parquet":
        return _ParquetWriter(path, _EVENT_SCHEMA if kind == "events" else None)
    if fmt == "jsonl":
        return _JsonlWriter(path, kind)
    return _CsvWriter(path, kind)


def _write_strings(handle: IO[bytes], strings: pa.Array) -> None:
    """The concatenated bytes of a string array: its data buffer between the end offsets."""
    if len(strings) == 0:
        return
    strings = strings.cast(pa.large_string()) if strings.type != pa.large_string() else strings
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[
        strings.offset : strings.offset + len(strings) + 1
    ]
    data = strings.buffers()[2]
    handle.write(memoryview(data)[int(offsets[0]) : int(offsets[-1])])


def _track_lines(table: pa.Table) -> pa.Array:
    """Segment track messages, one JSON object per line; missing ids are left out."""
    columns = {name: table.column(name).combine_chunks() for name in table.column_names}

    def member(key: str, values: pa.Array) -> pa.Array:
        return pc.binary_join_element_wise(f',"{key}":"', values, '"', "")

    parts = [
        pc.binary_join_element_wise('{"type":"track","messageId":"', columns["messageId"], '"', ""),
        member("event", columns["event"]),
        member("userId", columns["userId"]),
        member("anonymousId", columns["anonymousId"]),
        member("timestamp", _iso(columns["timestamp"])),
        pc.binary_join_element_wise(',"properties":', columns["properties"], ""),
        pc.binary_join_element_wise(',"context":', columns["context"], ""),
        pa.repeat("}\n", len(table)),
    ]
    return pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")


def _csv_events(table: pa.Table) -> pa.Table:
    stamps = table.column("timestamp").combine_chunks()
    index = table.schema.get_field_index("timestamp")
    return table.set_column(index, "timestamp", _iso(stamps))
