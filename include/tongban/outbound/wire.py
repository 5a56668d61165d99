"""The offer endpoint's wire format: what a partner's ``offer`` block in formats.yaml means.

Both sides use this module: the pipeline encodes its batches and decodes the read-back, the partner
simulator decodes the batches and encodes its configured list. A configured or offered item travels as
the format's catalogue record (its ``fields``, codes and encodings, :class:`~tongban.simulators.wire.WireEncoder`
rules) plus ``modes_field``: the handling modes offered for it, coded through the format's
``handling_mode`` dictionary and joined by its ``multi_value_separator``. A write adds ``op_field``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tongban.normalise import Quarantined, RecordMapper
from tongban.registry import OfferEndpoint, Partner, Registry, WireFormat

MODES = "offer_modes"  # canonical name of the offered handling modes (sorted canonical codes)


def home_region(registry: Registry, items: int = 0) -> Partner:
    """沅江 as a region of the item model: its items validate like a partner's (province 430000), and the
    offer endpoint's records are read back as its items."""
    return Partner(division=registry.home["division"], name=registry.home["name"], items=items, format="national_json")


def endpoint(fmt: WireFormat) -> OfferEndpoint:
    if fmt.offer is None:
        raise ValueError(f"format {fmt.name} declares no offer endpoint")
    return fmt.offer


def readback_format(fmt: WireFormat) -> WireFormat:
    """The format of the configured list (``GET offer.path``): the catalogue's, with the modes field and
    without incremental reads (the list is small and always read whole)."""
    offer = endpoint(fmt)
    return fmt.model_copy(
        update={"path": offer.path, "fields": {**fmt.fields, MODES: offer.modes_field}, "incremental": None}
    )


def encode_modes(fmt: WireFormat, modes: Iterable[str]) -> str:
    wire = fmt.to_wire("handling_mode")
    return fmt.multi_value_separator.join(str(wire.get(m, m)) for m in sorted(set(modes)))


def decode_modes(fmt: WireFormat, value: Any) -> list[str]:
    """Canonical mode codes of a wire value; raises ValueError (in Chinese) for a code not in the format."""
    codes = fmt.to_canonical("handling_mode")
    offer = endpoint(fmt)
    out = set()
    for part in str(value or "").split(fmt.multi_value_separator):
        if not part.strip():
            continue
        if part.strip() not in codes:
            raise ValueError(f"字段 {offer.modes_field} 的值 {part!r} 不在{fmt.name}办理模式代码表中")
        out.add(codes[part.strip()])
    return sorted(out)


@dataclass(frozen=True)
class Operation:
    """One operation of a batch, canonical: an upsert carries the record and its modes."""

    op: str  # upsert | delete
    task_code: str
    record: Mapping[str, Any] | None = None
    modes: tuple[str, ...] = ()


def _encoder(fmt: WireFormat) -> Any:
    from tongban.simulators.wire import WireEncoder  # the one canonical -> wire encoder

    return WireEncoder(fmt)


def encode_batch(fmt: WireFormat, operations: Sequence[Operation]) -> tuple[bytes, str]:
    """A batch's request body and content type: JSON ``{items_field: [...]}`` or, for CSV formats, the
    export's columns plus the modes and operation columns, one line per operation, in the format's encoding."""
    encoder, offer = _encoder(fmt), endpoint(fmt)
    rows: list[dict[str, Any]] = []
    for op in operations:
        if op.op == "upsert":
            assert op.record is not None
            row = encoder.encode(dict(op.record)) | {offer.modes_field: encode_modes(fmt, op.modes)}
        else:
            row = {fmt.fields["task_code"]: op.task_code}
        rows.append(row | {offer.op_field: offer.ops[op.op]})  # type: ignore[index]
    if fmt.media == "csv":
        columns = [*fmt.fields.values(), offer.modes_field, offer.op_field]
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
        return out.getvalue().encode(fmt.encoding), f"text/csv; charset={fmt.encoding.upper()}"
    body = json.dumps({offer.items_field: rows}, ensure_ascii=False).encode(fmt.encoding)
    return body, f"application/json; charset={fmt.encoding}"


def decode_batch(fmt: WireFormat, body: bytes) -> list[dict[str, Any]]:
    """The wire rows of a batch body (the partner side); raises ValueError (in Chinese) for a malformed body."""
    offer = endpoint(fmt)
    try:
        text = body.decode(fmt.encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"请求正文不是 {fmt.encoding.upper()} 编码") from exc
    if fmt.media == "csv":
        lines = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
        if not lines:
            raise ValueError("CSV 为空")
        header = [h.strip() for h in lines[0]]
        if offer.op_field not in header or fmt.fields["task_code"] not in header:
            raise ValueError(f"CSV 表头缺少 {offer.op_field} 或 {fmt.fields['task_code']}")
        if any(len(r) != len(header) for r in lines[1:]):
            raise ValueError("CSV 行的列数与表头不一致")
        return [dict(zip(header, r, strict=True)) for r in lines[1:]]
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"请求正文不是合法的 JSON：{exc}") from exc
    rows = payload.get(offer.items_field) if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"请求正文缺少操作列表 {offer.items_field}")
    return rows


@dataclass
class Decoded:
    """A wire row read back as canonical: the item (None when it could not be mapped) and its modes."""

    task_code: str | None
    op: str | None
    record: dict[str, Any] | None
    modes: list[str]
    problems: list[str]


def decode_rows(fmt: WireFormat, rows: Sequence[Any], home: Partner, where: str = "") -> list[Decoded]:
    """Map wire rows (configured items, or the operations of a batch) onto canonical records and modes.

    ``home``: the region whose items these are (沅江): records come back as its items. A delete needs the
    task code only; anything else must map as a catalogue record does, with readable modes.
    """
    offer = endpoint(fmt)
    mapper = RecordMapper(fmt, home)
    ops = {v: k for k, v in offer.ops.items()}
    out: list[Decoded] = []
    for index, raw in enumerate(rows, start=1):
        if not isinstance(raw, dict):
            out.append(Decoded(None, None, None, [], [f"第{index}条不是对象"]))
            continue
        code = raw.get(fmt.fields["task_code"])
        code = code if isinstance(code, str) and code else None
        op = ops.get(str(raw.get(offer.op_field, ""))) if offer.op_field in raw else None
        if offer.op_field in raw and op is None:
            out.append(Decoded(code, None, None, [], [f"{offer.op_field} 的值 {raw.get(offer.op_field)!r} 无法识别"]))
            continue
        if op == "delete":
            out.append(Decoded(code, op, None, [], [] if code else [f"缺少 {fmt.fields['task_code']}"]))
            continue
        mapped = mapper.map({k: v for k, v in raw.items() if k not in (offer.op_field, offer.modes_field)}, where)
        problems = [p.reason for p in mapped.problems] if isinstance(mapped, Quarantined) else []
        try:
            modes = decode_modes(fmt, raw.get(offer.modes_field))
        except ValueError as exc:
            problems.append(str(exc))
            modes = []
        if not modes and not problems:
            problems.append(f"{offer.modes_field} 为空：至少要有一种办理模式")
        record = None if isinstance(mapped, Quarantined) else mapped.record()
        out.append(Decoded(code, op, None if problems else record, modes, problems))
    return out
