"""The canonical service-item model and its ten 五级N同 elements.

Every partner format is normalised to :class:`Item`. Coded fields hold canonical codes from
``data/dictionaries.yaml``; labels are looked up through :mod:`tongban.dictionaries`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tongban.registry import label


class Material(BaseModel):
    """One entry of 申请材料."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    required: bool
    form: str
    copies: int | None = Field(default=None, ge=0)
    source: str | None = None


class Item(BaseModel):
    """A partner's service item (one 实施清单 entry), in canonical form."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    partner: str = Field(description="division code of the partner region")
    task_code: str = Field(description="实施编码")
    catalog_code: str = Field(description="基本编码")
    name: str = Field(description="事项名称")
    legal_basis: str = Field(description="设定依据")
    item_type: str = Field(description="事项类型 (canonical code)")
    accept_conditions: str = Field(description="受理条件")
    service_objects: list[str] = Field(description="服务对象 (canonical codes, sorted)")
    procedure: str = Field(description="办理流程")
    materials: list[Material] = Field(description="申请材料")
    legal_limit: int | None = Field(description="法定办结时限")
    legal_limit_unit: str | None = Field(description="法定时限单位 (WD/ND)")
    promised_limit: int | None = Field(description="承诺办结时限")
    promised_limit_unit: str | None = Field(description="承诺时限单位 (WD/ND)")
    result: str = Field(description="办理结果")
    level: str = Field(description="行使层级 (canonical code)")
    dept_name: str = Field(description="实施主体")
    dept_uscc: str = Field(description="实施主体统一社会信用代码")
    handling_mode: str = Field(description="通办模式 (canonical code)")
    handle_type: str | None = Field(default=None, description="办件类型 (canonical code)")
    version: str = Field(description="事项版本")
    updated_at: datetime = Field(description="更新时间")
    source_ref: str = Field(default="", description="where the record came from: page and position")

    @field_validator("service_objects")
    @classmethod
    def _sorted_unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value))

    def record(self) -> dict[str, Any]:
        """A flat, JSON-safe dict (the row written to files and sent to the platform)."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class Element:
    key: str
    label: str
    fields: tuple[str, ...]


# The ten elements that must be the same at every level (五级N同), in the order DOMAIN.md gives.
ELEMENTS: tuple[Element, ...] = (
    Element("name", "事项名称", ("name",)),
    Element("code", "事项编码", ("catalog_code",)),
    Element("legal_basis", "设定依据", ("legal_basis",)),
    Element("item_type", "事项类型", ("item_type",)),
    Element("accept_conditions", "受理条件", ("accept_conditions",)),
    Element("service_objects", "服务对象", ("service_objects",)),
    Element("procedure", "办理流程", ("procedure",)),
    Element("materials", "申请材料", ("materials",)),
    Element("time_limit", "办结时限", ("legal_limit", "legal_limit_unit", "promised_limit", "promised_limit_unit")),
    Element("result", "办理结果", ("result",)),
)

# What else about an item the platform holds and a change to which must be published.
ATTRIBUTES: tuple[Element, ...] = (
    Element("level", "行使层级", ("level",)),
    Element("department", "实施主体", ("dept_name", "dept_uscc")),
    Element("handling_mode", "通办模式", ("handling_mode",)),
    Element("handle_type", "办件类型", ("handle_type",)),
)

COMPARED: tuple[Element, ...] = ELEMENTS + ATTRIBUTES
LABELS: dict[str, str] = {e.key: e.label for e in COMPARED}


def element_value(record: Mapping[str, Any], element: Element) -> Any:
    """The comparable value of one element of a record (a scalar, or a dict for multi-field ones)."""
    if len(element.fields) == 1:
        return record.get(element.fields[0])
    return {f: record.get(f) for f in element.fields}


def canonical_json(value: Any) -> bytes:
    """Compact UTF-8 JSON with the keys of every object sorted: equal values, equal bytes."""
    return msgspec.json.encode(value, order="sorted", enc_hook=str)


def element_hashes(record: Mapping[str, Any]) -> dict[str, str]:
    """A short content hash per compared element, computed once so comparisons stay cheap."""
    return {
        e.key: hashlib.blake2b(canonical_json(element_value(record, e)), digest_size=8).hexdigest() for e in COMPARED
    }


def content_hash(record: Mapping[str, Any]) -> str:
    """One hash over all compared elements of a record (their canonical JSON, hashed once)."""
    values = {e.key: element_value(record, e) for e in COMPARED}
    return hashlib.blake2b(canonical_json(values), digest_size=16).hexdigest()


def content_digests(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The :func:`content_hash` of each record by 实施编码. Publishing computes them once per item and run and
    passes them on: batch keys, the item store's ``content_hash``, the read-back's intended content."""
    return {r["task_code"]: content_hash(r) for r in records}


ITEM_FIELDS: tuple[str, ...] = tuple(Item.model_fields)
# the Chinese label of every canonical field (its description up to the first " (")
FIELD_LABELS: dict[str, str] = {name: (f.description or name).split(" (")[0] for name, f in Item.model_fields.items()}
MATERIAL_LABELS: dict[str, str] = {
    "name": "材料名称",
    "required": "是否必要",
    "form": "材料形式",
    "copies": "份数",
    "source": "来源渠道",
}

# elements whose value is one canonical code, and the dictionary it belongs to
_CODED_ELEMENTS: dict[str, str] = {
    "item_type": "item_type",
    "level": "level",
    "handling_mode": "handling_mode",
    "handle_type": "handle_type",
}


def element_text(element: str, value: Any) -> str:
    """A compared element's value (:func:`element_value`) as a partner reads it in a report: codes as their
    Chinese labels, 申请材料 one material after the other, 办结时限 with their units, 实施主体 with its code;
    text as it is. A value of another shape than the element's is shown as JSON, never dropped."""
    if value is None:
        return ""
    try:
        if element in _CODED_ELEMENTS:
            return label(_CODED_ELEMENTS[element], str(value))
        if element == "service_objects":
            return "、".join(label("service_object", str(code)) for code in value) or "（无）"
        if element == "materials":
            return "；".join(_material_text(m) for m in value) or "（无）"
        if element == "time_limit":
            return "；".join(
                f"{name} {_limit_text(value[f'{kind}_limit'], value[f'{kind}_limit_unit'])}"
                for kind, name in (("legal", "法定办结时限"), ("promised", "承诺办结时限"))
            )
        if element == "department":
            return f"{value['dept_name']}（{value['dept_uscc']}）" if value.get("dept_uscc") else value["dept_name"]
    except (AttributeError, KeyError, TypeError):
        pass
    return value if isinstance(value, str) else canonical_json(value).decode()


def _limit_text(limit: Any, unit: Any) -> str:
    return "无" if limit is None else f"{limit} 个{label('time_unit', unit)}"


def _material_text(material: Mapping[str, Any]) -> str:
    """``居民户口簿（必要，纸质，1 份，政府部门核发）``."""
    parts = ["必要" if material["required"] else "非必要", label("material_form", material["form"])]
    if material.get("copies") is not None:
        parts.append(f"{material['copies']} 份")
    if material.get("source"):
        parts.append(material["source"])
    return f"{material['name']}（{'，'.join(parts)}）"
