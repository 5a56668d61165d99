"""Per-element content hashes of item tables, vectorised: equal element values give equal hashes.

The project has two equality hashes, each where the other would not do:

- :func:`tongban.model.content_hash` / :func:`~tongban.model.element_hashes`: BLAKE2b over one record's
  canonical JSON (16 and 8 bytes). For single records whose hash is *kept or sent*: the item store's
  ``content_hash``, idempotency keys of batches, the read-back after publishing, the outbound diff.
  Any process, machine or version computes the same value from the same record.
- this module: 64-bit hashes of whole columns at once (no Python per row), for comparisons *within
  one task* over many rows: reconciliation, 五级N同 inside a partner (the validation frame's ``_h_*``
  columns) and across a province. Never stored; a collision (2^-64 per pair) could at worst hide one
  difference for one run.

Python's built-in ``hash()`` is not used for content: it is salted per process (strings) and folds
values together (``hash(-1) == hash(-2)``, ``hash(1) == hash(True)``).

Computed once per item, they let 五级N同 checks and reconciliation compare eight-byte numbers
instead of long texts. Columns are hashed in Arrow form whatever their type: strings through
pandas' SipHash of their UTF-8 bytes, numbers and booleans through a 64-bit mixer, structs field
by field and lists element by element (position-sensitive) with a segmented sum, so a list of
materials costs no Python per row. Nulls hash to their own value, apart from every empty string,
empty list and zero.

The hashes depend only on the values and :data:`tongban.table.ITEM_SCHEMA`, so they are the same in
every process and on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tongban.model import COMPARED, Element
from tongban.table import ITEM_SCHEMA

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_NULL = np.uint64(0x9E3779B97F4A7C15)  # the hash of a null, at any nesting level


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective avalanche of uint64 values (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def column_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per value of an Arrow column (string, integer, boolean, struct or list)."""
    if isinstance(values, pa.ChunkedArray):
        parts = [column_hash(chunk) for chunk in values.chunks]
        return np.concatenate(parts) if parts else np.empty(0, np.uint64)
    kind = values.type
    if pa.types.is_null(kind):
        return np.full(len(values), _NULL, np.uint64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        raw = pc.fill_null(values, "").cast(pa.binary()).to_numpy(zero_copy_only=False)
        hashed = pd.util.hash_array(raw, categorize=False).astype(np.uint64, copy=False)
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        hashed = _mix(pc.fill_null(values.cast(pa.int64()), 0).to_numpy(zero_copy_only=False).view(np.uint64))
    elif pa.types.is_struct(kind):
        hashed = np.zeros(len(values), np.uint64)
        for field in values.flatten():  # children with the struct's offset applied
            hashed = _mix(hashed ^ column_hash(field))
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        hashed = _list_hash(values)
    else:
        raise TypeError(f"no content hash for Arrow type {kind}")
    if values.null_count:
        hashed = np.where(values.is_valid().to_numpy(zero_copy_only=False), hashed, _NULL)
    return hashed


def _list_hash(values: pa.ListArray) -> np.ndarray:
    offsets = values.offsets.to_numpy().astype(np.int64)
    child = values.values.slice(offsets[0], offsets[-1] - offsets[0])
    offsets -= offsets[0]
    lengths = np.diff(offsets)
    position = np.arange(len(child), dtype=np.uint64) - np.repeat(offsets[:-1], lengths).astype(np.uint64)
    mixed = _mix(column_hash(child) ^ _mix(position + np.uint64(1)))
    sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(mixed, dtype=np.uint64)])
    return _mix((sums[offsets[1:]] - sums[offsets[:-1]]) ^ _mix(lengths.astype(np.uint64)))


def element_hash_table(table: pa.Table, elements: Sequence[Element] = COMPARED) -> dict[str, np.ndarray]:
    """One uint64 array per element key, row for row with ``table`` (columns of ``ITEM_SCHEMA``)."""
    cache: dict[str, np.ndarray] = {}

    def field(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = column_hash(table.column(name))
        return cache[name]

    out: dict[str, np.ndarray] = {}
    for element in elements:
        first, *rest = element.fields
        hashed = field(first)
        for name in rest:
            hashed = _mix(hashed ^ _mix(field(name)))
        out[element.key] = hashed
    return out


def _arrow_column(series: pd.Series, name: str) -> pa.Array:
    """A frame column in its ``ITEM_SCHEMA`` type; values that do not fit it (malformed items, which
    validation reports) make the whole column hash through canonical JSON instead."""
    kind = ITEM_SCHEMA.field(name).type
    if isinstance(series.dtype, pd.ArrowDtype) and series.dtype.pyarrow_dtype == kind:
        return series.array._pa_array.combine_chunks()
    values = series.astype(object).where(series.notna(), None).tolist()
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        dumped = [json.dumps(v, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str) for v in values]
        return pa.array(dumped, pa.string())


def element_hash_frame(frame: pd.DataFrame, elements: Sequence[Element] = COMPARED) -> pd.DataFrame:
    """:func:`element_hash_table` of a pandas frame of canonical item columns, on the frame's index."""
    names = list(dict.fromkeys(f for e in elements for f in e.fields))
    columns = {name: _arrow_column(frame[name], name) for name in names}
    hashes = element_hash_table(pa.table(columns), elements) if len(frame) else {}
    return pd.DataFrame(
        {e.key: hashes.get(e.key, np.empty(0, np.uint64)) for e in elements}, index=frame.index, dtype=np.uint64
    )


def keyed_hashes(table: pa.Table, elements: Sequence[Element] = COMPARED) -> pa.Table:
    """``task_code`` and one uint64 hash column per element: what reconciliation compares."""
    hashes = element_hash_table(table, elements)
    return pa.table({"task_code": table.column("task_code"), **{k: pa.array(v) for k, v in hashes.items()}})
