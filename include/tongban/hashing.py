"""Per-element content hashes of item frames, vectorised: equal element values give equal hashes.

Computed once per item (at validation and reconciliation), they let 五级N同 checks and
reconciliation compare eight-byte numbers instead of long texts.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tongban.model import COMPARED, Element, Item

LIST_FIELDS: tuple[str, ...] = tuple(
    name for name, f in Item.model_fields.items() if typing.get_origin(f.annotation) is list
)


def _serialised(s: pd.Series) -> pd.Series:
    """Canonical JSON of list values: equal exactly when the values are, whatever their key order
    (records read back from the platform need not keep the order normalisation wrote them in)."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)

    return pd.Series([dump(v) for v in s.tolist()], index=s.index, dtype=object)


def _plain(s: pd.Series) -> pd.Series:
    """Arrow-backed columns as numpy-backed ones, which pandas' hashing handles."""
    return s.astype(object) if isinstance(s.dtype, pd.ArrowDtype) else s


def element_hash_frame(
    frame: pd.DataFrame, elements: Sequence[Element] = COMPARED, list_digests: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """One uint64 column per element key, on the index of ``frame`` (canonical item columns).

    ``list_digests``: already computed stand-ins for list-valued fields (one hashable value per row,
    equal exactly when the lists are), for callers that have them; otherwise canonical JSON is used.
    """
    digests = dict(list_digests or {})
    for name in LIST_FIELDS:
        if name not in digests and any(name in e.fields for e in elements):
            digests[name] = _serialised(frame[name])
    out: dict[str, pd.Series] = {}
    for element in elements:
        parts = pd.DataFrame(
            {f: digests[f] if f in digests else _plain(frame[f]) for f in element.fields},
            index=frame.index,
        )
        out[element.key] = pd.util.hash_pandas_object(parts, index=False).astype(np.uint64)
    return pd.DataFrame(out, index=frame.index)
