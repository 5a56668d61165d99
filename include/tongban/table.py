"""Canonical items as Arrow tables: one schema for every columnar copy of :class:`tongban.model.Item`.

A fixed schema (not one inferred from the data) is what makes columnar hashes comparable between
catalogues: a partner whose materials all lack ``copies`` must still give the column the same type
as one whose materials have it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from tongban.model import Element

MATERIAL_TYPE = pa.struct(
    [
        pa.field("name", pa.string()),
        pa.field("required", pa.bool_()),
        pa.field("form", pa.string()),
        pa.field("copies", pa.int64()),
        pa.field("source", pa.string()),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        pa.field("partner", pa.string()),
        pa.field("task_code", pa.string()),
        pa.field("catalog_code", pa.string()),
        pa.field("name", pa.string()),
        pa.field("legal_basis", pa.string()),
        pa.field("item_type", pa.string()),
        pa.field("accept_conditions", pa.string()),
        pa.field("service_objects", pa.list_(pa.string())),
        pa.field("procedure", pa.string()),
        pa.field("materials", pa.list_(MATERIAL_TYPE)),
        pa.field("legal_limit", pa.int64()),
        pa.field("legal_limit_unit", pa.string()),
        pa.field("promised_limit", pa.int64()),
        pa.field("promised_limit_unit", pa.string()),
        pa.field("result", pa.string()),
        pa.field("level", pa.string()),
        pa.field("dept_name", pa.string()),
        pa.field("dept_uscc", pa.string()),
        pa.field("handling_mode", pa.string()),
        pa.field("handle_type", pa.string()),
        pa.field("version", pa.string()),
        pa.field("updated_at", pa.string()),  # ISO 8601, as Item.record() writes it
        pa.field("source_ref", pa.string()),
    ]
)


def items_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Item records (``Item.record()`` dicts) as a table of :data:`ITEM_SCHEMA`."""
    return pa.Table.from_pylist(list(records), schema=ITEM_SCHEMA)


def write_ipc(table: pa.Table, path: Any) -> None:
    """An uncompressed Arrow IPC file: readers memory-map it and touch only the rows they take."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)


def read_ipc(path: Any) -> pa.Table:
    """A memory-mapped Arrow IPC file (zero copy: columns are read from the page cache when used)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def take_rows(column: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """``column[rows]``, chunk by chunk: a memory-mapped column is never concatenated whole."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")  # read each chunk front to back
    ordered = rows[order]
    bounds = np.cumsum([0, *(len(chunk) for chunk in column.chunks)])
    chunk_of = np.searchsorted(bounds, ordered, side="right") - 1
    parts = [column.chunk(k).take(pa.array(ordered[chunk_of == k] - bounds[k])) for k in np.unique(chunk_of)]
    gathered = pa.concat_arrays(parts) if parts else pa.array([], column.type)
    return gathered.take(pa.array(np.argsort(order, kind="stable")))


def element_values(table: pa.Table, rows: np.ndarray, element: Element) -> list[Any]:
    """The values of one element (``tongban.model.element_value``'s form) at the given rows."""
    columns = {name: take_rows(table.column(name), rows).to_pylist() for name in element.fields}
    if len(element.fields) == 1:
        return columns[element.fields[0]]
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
