"""Canonical record -> partner wire record, driven by a :class:`~tongban.registry.WireFormat`.

The reverse of what the pipeline's normaliser does: field names through ``fields`` and
``material_fields``, coded values through ``WireFormat.to_wire(<dictionary>)``, datetimes through
``datetime_format`` in China local time. A canonical value the format has no wire code for goes out
unchanged, which is how an ``unmappable_code`` defect reaches the wire. CSV formats get every value
as text (empty for none) and the materials packed in one cell (``materials_cell``); :func:`csv_text`
renders the rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tongban.config import CHINA_TZ
from tongban.registry import CODED_FIELDS, WireFormat

MULTI_VALUED_FIELDS: dict[str, str] = {"service_objects": "service_object"}
NUMBER_FIELDS: frozenset[str] = frozenset({"legal_limit", "promised_limit"})
DATETIME_FIELDS: frozenset[str] = frozenset({"updated_at"})
MATERIAL_CODED_FIELDS: dict[str, str] = {"required": "material_required", "form": "material_form"}
MATERIAL_NUMBER_FIELDS: frozenset[str] = frozenset({"copies"})


class WireEncoder:
    """Encodes canonical records (``Item.record()`` dicts) into one wire format."""

    def __init__(self, wire_format: WireFormat) -> None:
        self.format = wire_format
        names = {*CODED_FIELDS.values(), *MULTI_VALUED_FIELDS.values(), *MATERIAL_CODED_FIELDS.values()}
        self.codes: dict[str, dict[Any, str]] = {name: wire_format.to_wire(name) for name in names}
        self.numbers_as_text = wire_format.numbers_as_text or wire_format.media == "csv"
        self.csv = wire_format.media == "csv"

    def encode(self, record: dict[str, Any]) -> dict[str, Any]:
        row = {wire: self._value(field, record.get(field)) for field, wire in self.format.fields.items()}
        if self.csv:
            row = {k: "" if v is None else str(v) for k, v in row.items()}
        return row

    def _code(self, dictionary: str, value: Any) -> Any:
        if value is None:
            return None
        return self.codes[dictionary].get(value, value)

    def _number(self, value: int | None) -> int | str | None:
        if value is None:
            return None
        return str(value) if self.numbers_as_text else int(value)

    def _value(self, field: str, value: Any) -> Any:
        if field in CODED_FIELDS:
            return self._code(CODED_FIELDS[field], value)
        if field in MULTI_VALUED_FIELDS:
            dictionary = MULTI_VALUED_FIELDS[field]
            return self.format.multi_value_separator.join(str(self._code(dictionary, v)) for v in value or [])
        if field in NUMBER_FIELDS:
            return self._number(value)
        if field in DATETIME_FIELDS:
            if value is None:
                return None
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            if moment.tzinfo is not None:  # partner systems send China local time without an offset
                moment = moment.astimezone(CHINA_TZ)
            return moment.strftime(self.format.datetime_format)
        if field == "materials":
            materials = [self._material(m) for m in value or []]
            return self._cell(materials) if self.format.materials_cell else materials
        return value

    def _cell(self, materials: list[dict[str, Any]]) -> str:
        cell = self.format.materials_cell
        assert cell is not None
        entries = []
        for material in materials:
            parts = ["" if v is None else str(v) for v in material.values()]
            for part in parts:
                if cell.entry_separator in part or cell.field_separator in part:
                    raise ValueError(f"material value {part!r} contains a separator of {self.format.name}")
            entries.append(cell.field_separator.join(parts))
        return cell.entry_separator.join(entries)

    def _material(self, material: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field, wire in self.format.material_fields.items():
            value = material.get(field)
            if field in MATERIAL_CODED_FIELDS:
                value = self._code(MATERIAL_CODED_FIELDS[field], value)
            elif field in MATERIAL_NUMBER_FIELDS:
                value = self._number(value)
            out[wire] = value
        return out


def csv_text(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    """A CSV export: a header row, then one line per record (CRLF line ends, quoted where needed)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return out.getvalue()
