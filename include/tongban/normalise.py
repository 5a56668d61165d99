"""Map partner wire records onto the canonical :class:`~tongban.model.Item`.

A record that cannot be parsed or mapped is quarantined with its partner, position, field and reason;
it is never dropped silently. Reasons are in Chinese: partners read them in their reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from tongban.model import Item
from tongban.registry import Partner, WireFormat

CHINA_TZ = ZoneInfo("Asia/Shanghai")

# canonical field -> canonical dictionary its coded values belong to
CODED_FIELDS: dict[str, str] = {
    "item_type": "item_type",
    "level": "level",
    "handling_mode": "handling_mode",
    "handle_type": "handle_type",
    "legal_limit_unit": "time_unit",
    "promised_limit_unit": "time_unit",
}
INT_FIELDS = ("legal_limit", "promised_limit")
OPTIONAL_FIELDS = frozenset({"handle_type", *INT_FIELDS, "legal_limit_unit", "promised_limit_unit"})


@dataclass(frozen=True)
class Problem:
    field: str
    wire_field: str
    reason: str


@dataclass
class Quarantined:
    """A record set aside, with every reason it could not be taken in."""

    partner: str
    position: str
    task_code: str | None
    problems: list[Problem]
    raw: Any = field(repr=False)

    def record(self) -> dict[str, Any]:
        return asdict(self)


class _Mapper:
    def __init__(self, fmt: WireFormat, partner: Partner) -> None:
        self.fmt = fmt
        self.partner = partner
        names = set(CODED_FIELDS.values()) | {"service_object", "material_required", "material_form"}
        self.codes = {name: fmt.to_canonical(name) for name in names}

    def map(self, raw: Any, position: str) -> Item | Quarantined:
        if not isinstance(raw, dict):
            problem = Problem("*", "*", f"记录不是对象（JSON object），而是 {type(raw).__name__}")
            return Quarantined(self.partner.division, position, None, [problem], raw)
        problems: list[Problem] = []
        out: dict[str, Any] = {"partner": self.partner.division, "source_ref": position}
        for canonical, wire in self.fmt.fields.items():
            value = raw.get(wire)
            if value is None or value == "":
                if canonical not in OPTIONAL_FIELDS and wire not in raw:
                    problems.append(Problem(canonical, wire, f"缺少字段 {wire}"))
                    continue
                value = None if canonical in OPTIONAL_FIELDS else value
            try:
                out[canonical] = self._convert(canonical, value)
            except ValueError as exc:
                problems.append(Problem(canonical, wire, str(exc)))
        task_code = raw.get(self.fmt.fields["task_code"])
        task_code = task_code if isinstance(task_code, str) else None
        if not problems:
            try:
                return Item(**out)
            except ValidationError as exc:
                for err in exc.errors():
                    canonical = str(err["loc"][0]) if err["loc"] else "*"
                    wire = self.fmt.fields.get(canonical, canonical)
                    problems.append(Problem(canonical, wire, f"字段 {wire} 格式不符：{err['msg']}"))
        return Quarantined(self.partner.division, position, task_code, problems, raw)

    def _code(self, dictionary: str, wire_field: str, value: Any) -> Any:
        key = str(value).strip()
        if key not in self.codes[dictionary]:
            raise ValueError(f"字段 {wire_field} 的值 {value!r} 不在{self.fmt.name}代码表（{dictionary}）中，无法映射")
        return self.codes[dictionary][key]

    def _convert(self, canonical: str, value: Any) -> Any:
        wire = self.fmt.fields[canonical]
        if value is None:
            return None
        if canonical in CODED_FIELDS:
            return self._code(CODED_FIELDS[canonical], wire, value)
        if canonical == "service_objects":
            parts = [p for p in str(value).split(self.fmt.multi_value_separator) if p.strip()]
            return [self._code("service_object", wire, p) for p in parts]
        if canonical in INT_FIELDS:
            try:
                return int(str(value).strip())
            except ValueError:
                raise ValueError(f"字段 {wire} 的值 {value!r} 不是整数") from None
        if canonical == "updated_at":
            try:
                parsed = datetime.strptime(str(value), self.fmt.datetime_format)
            except ValueError:
                raise ValueError(f"字段 {wire} 的值 {value!r} 不符合时间格式 {self.fmt.datetime_format}") from None
            return parsed.replace(tzinfo=CHINA_TZ)
        if canonical == "materials":
            return self._materials(wire, value)
        if canonical == "version":
            return str(value)
        return value

    def _materials(self, wire: str, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ValueError(f"字段 {wire} 应为材料列表，实际为 {type(value).__name__}")
        mf = self.fmt.material_fields
        out = []
        for i, entry in enumerate(value, start=1):
            if not isinstance(entry, dict):
                raise ValueError(f"字段 {wire} 第 {i} 项不是对象")
            copies = entry.get(mf["copies"])
            out.append(
                {
                    "name": entry.get(mf["name"]),
                    "required": self._code(
                        "material_required", f"{wire}[{i}].{mf['required']}", entry.get(mf["required"])
                    ),
                    "form": self._code("material_form", f"{wire}[{i}].{mf['form']}", entry.get(mf["form"])),
                    "copies": int(copies) if copies not in (None, "") else None,
                    "source": entry.get(mf["source"]),
                }
            )
        return out


def normalise_records(
    pages: Iterable[tuple[int, list[Any]]], fmt: WireFormat, partner: Partner
) -> Iterator[Item | Quarantined]:
    """Map each record of each (page number, records) pair; yields an Item or a Quarantined per record."""
    mapper = _Mapper(fmt, partner)
    for number, records in pages:
        for index, raw in enumerate(records, start=1):
            yield mapper.map(raw, f"第{number}页第{index}条")
