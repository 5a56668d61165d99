"""Map partner wire records onto the canonical :class:`~tongban.model.Item`.

A record that cannot be parsed or mapped is quarantined with its partner, position, field and reason;
it is never dropped silently. Reasons are in Chinese: partners read them in their reports.

Codes, numbers and times arrive with full-width digits and letters (１１４４…), non-breaking and
zero-width spaces: they are NFKC-normalised and stripped of invisible characters before any check
(:func:`clean_code`), and each value so changed is noted (:attr:`Normalised.normalised`) for the
partner's report. Messages name the partner's own field and the element's Chinese label, never an
internal name.

Repeated records (a page served twice): an exact copy of a record already read is counted once and
listed as a duplicate; copies of one 实施编码 that differ are all quarantined, since nothing says
which one is current (:class:`Deduper`, :func:`normalise_catalogue`).
"""

from __future__ import annotations

import hashlib
import json
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tongban.codes import TASK_CODE_LENGTH
from tongban.config import CHINA_TZ
from tongban.model import FIELD_LABELS, MATERIAL_LABELS, Item, canonical_json
from tongban.registry import CODED_FIELDS, DICTIONARY_LABELS, Partner, WireFormat

INT_FIELDS = ("legal_limit", "promised_limit")
OPTIONAL_FIELDS = frozenset({"handle_type", *INT_FIELDS, "legal_limit_unit", "promised_limit_unit"})
# values that are codes, numbers or times: cleaned (clean_code) before any check
CODE_FIELDS = frozenset(
    {"task_code", "catalog_code", "dept_uscc", "version", "updated_at", "service_objects", *CODED_FIELDS, *INT_FIELDS}
)
CLEANED_MATERIAL_FIELDS = ("required", "form", "copies")
WIDTH_ONLY = "（两者仅全角/半角或不可见字符不同）"


def clean_code(text: str) -> str:
    """NFKC (full-width digits and letters become ASCII, non-breaking and ideographic spaces plain spaces),
    then format characters removed (zero-width spaces and joiners, BOM, soft hyphen, direction marks)
    and the ends stripped."""
    return "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf").strip()


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def width_only_difference(a: Any, b: Any) -> bool:
    """True when two values differ, but not once both are cleaned (:func:`clean_code`): a message comparing
    them must say so, 「３」与「3」不一致 alone is unreadable."""
    x, y = _as_text(a), _as_text(b)
    return x != y and clean_code(x) == clean_code(y)


def _what_changed(value: str) -> str:
    kinds = []
    if any(unicodedata.category(c) == "Cf" for c in value):
        kinds.append("零宽或不可见字符")
    if unicodedata.normalize("NFKC", value) != value:
        kinds.append("全角字符或不换行空格")
    return "、".join(kinds) or "首尾空白"


def _named(canonical: str, wire: str) -> str:
    """A field as the partner reads it: its own name, with the element's Chinese label where there is one."""
    return f"{wire}（{FIELD_LABELS[canonical]}）" if canonical in FIELD_LABELS else wire


@dataclass(frozen=True)
class Problem:
    """Why a record could not be taken in: the canonical ``field`` (``*``: the whole record), the partner's
    own ``wire_field`` name, and the ``reason`` in Chinese. In ``quarantine.jsonl`` and the report."""

    field: str
    wire_field: str
    reason: str


@dataclass(frozen=True)
class Duplicate:
    """An exact copy of a record read earlier in the same pull, counted once: a line of ``duplicates.jsonl``,
    shown in the report as it is."""

    position: str  # where the copy was: 第N页第M条
    task_code: str | None
    first_position: str | None  # where the record was read first
    reason: str


@dataclass
class NormalisedValue:
    """A code, number or time that arrived with full-width or invisible characters and was normalised: a line
    of ``normalised.jsonl``, shown in the report as it is."""

    position: str  # where the record was: 第N页第M条
    task_code: str | None  # set once the whole record is read
    field: str  # the partner's own field name
    label: str  # the field's Chinese label
    original: str
    normalised: str
    reason: str


@dataclass
class Quarantined:
    """A record set aside, with every reason it could not be taken in: one line of ``quarantine.jsonl``."""

    partner: str
    position: str
    task_code: str | None
    problems: list[Problem]
    raw: Any = field(repr=False)
    code_recovered: bool = False  # its 实施编码 came as another JSON type and was recovered (recover_code)
    name: str | None = None  # its 事项名称 as the partner sent it (read through the partner's field name)


def _item_name(raw: Any, fmt: WireFormat) -> str | None:
    """A wire record's 事项名称 under the partner's own field name, for a record set aside (None: none sent)."""
    value = raw.get(fmt.fields["name"]) if isinstance(raw, dict) else None
    return (value.strip() or None) if isinstance(value, str) else None


class RecordMapper:
    """Maps one wire record at a time onto an :class:`~tongban.model.Item` of ``partner``, or sets it aside
    (:class:`Quarantined`) with every reason; :attr:`normalised` notes each value :func:`clean_code` changed.

    Used for a partner's catalogue (:func:`normalise_catalogue`) and for the offer endpoint's read-back of
    our own items (:mod:`tongban.outbound.wire`), which travel in the partner's catalogue format.
    """

    def __init__(self, fmt: WireFormat, partner: Partner) -> None:
        self.fmt = fmt
        self.partner = partner
        names = set(CODED_FIELDS.values()) | {"service_object", "material_required", "material_form"}
        self.codes = {name: fmt.to_canonical(name) for name in names}
        self.normalised: list[NormalisedValue] = []  # every value clean_code changed, for the report
        self._position = ""

    def _clean(self, wire: str, label: str, value: Any) -> Any:
        """``value`` cleaned if it is text (:func:`clean_code`); a change is noted for the report."""
        if not isinstance(value, str):
            return value
        cleaned = clean_code(value)
        if cleaned != value.strip(string.whitespace):  # ASCII blanks at the ends are no news
            reason = f"字段 {wire}（{label}）的值 {value!r} 含{_what_changed(value)}，已规范化为「{cleaned}」"
            self.normalised.append(NormalisedValue(self._position, None, wire, label, value, cleaned, reason))
        return cleaned

    def map(self, raw: Any, position: str) -> Item | Quarantined:
        """One record; ``position`` says where it was (第N页第M条), for the reasons and the notes."""
        if not isinstance(raw, dict):
            problem = Problem("*", "*", f"记录不是对象（JSON object），而是 {type(raw).__name__}")
            return Quarantined(self.partner.division, position, None, [problem], raw)
        problems: list[Problem] = []
        out: dict[str, Any] = {"partner": self.partner.division, "source_ref": position}
        self._position = position
        noted = len(self.normalised)
        for canonical, wire in self.fmt.fields.items():
            if wire not in raw:  # even an optional field must be there (null or empty when it has no value)
                problems.append(Problem(canonical, wire, f"缺少字段 {_named(canonical, wire)}"))
                continue
            value = raw[wire]
            if canonical in CODE_FIELDS:
                value = self._clean(wire, FIELD_LABELS[canonical], value)
            if (value is None or value == "") and canonical in OPTIONAL_FIELDS:
                value = None
            try:
                out[canonical] = self._convert(canonical, value)
            except ValueError as exc:
                problems.append(Problem(canonical, wire, str(exc)))
        task_code = recover_code(raw.get(self.fmt.fields["task_code"]))
        for note in self.normalised[noted:]:
            note.task_code = task_code
        if not problems:
            try:
                return Item(**out)
            except ValidationError as exc:
                for err in exc.errors():
                    canonical = str(err["loc"][0]) if err["loc"] else "*"
                    wire = self.fmt.fields.get(canonical, canonical)
                    problems.append(Problem(canonical, wire, f"字段 {_named(canonical, wire)} 格式不符：{err['msg']}"))
        recovered = task_code is not None and not isinstance(raw.get(self.fmt.fields["task_code"]), str)
        name = _item_name(raw, self.fmt)
        return Quarantined(self.partner.division, position, task_code, problems, raw, recovered, name)

    def _code(self, dictionary: str, wire_field: str, value: Any) -> Any:
        key = str(value).strip()
        if key not in self.codes[dictionary]:
            name = DICTIONARY_LABELS[dictionary]
            known = "、".join(str(k) for k in self.codes[dictionary])
            raise ValueError(f"字段 {wire_field}（{name}）的值 {value!r} 不是约定的{name}代码（{known}），无法映射")
        return self.codes[dictionary][key]

    def _convert(self, canonical: str, value: Any) -> Any:
        wire = self.fmt.fields[canonical]
        if value is None:
            return None
        if canonical in CODED_FIELDS:
            return self._code(CODED_FIELDS[canonical], wire, value)
        if canonical == "task_code" and not isinstance(value, str):
            recovered = recover_code(value)
            known = f"，可识别为 {recovered}，平台保留该事项原版本" if recovered else "，无法识别是哪一事项"
            kind = JSON_KINDS.get(type(value).__name__, "非文本的值")
            raise ValueError(f"字段 {wire}（实施编码）应为文本，实际为{kind} {value!r}{known}")
        if canonical == "service_objects":
            parts = [p for p in str(value).split(self.fmt.multi_value_separator) if p.strip()]
            return [self._code("service_object", wire, p) for p in parts]
        if canonical in INT_FIELDS:
            try:
                return int(str(value).strip())
            except ValueError:
                raise ValueError(f"字段 {wire}（{FIELD_LABELS[canonical]}）的值 {value!r} 不是整数") from None
        if canonical == "updated_at":
            try:
                parsed = parse_time(str(value), self.fmt.datetime_format)
            except ValueError:
                layout = self.fmt.datetime_format
                raise ValueError(f"字段 {wire}（更新时间）的值 {value!r} 不符合时间格式 {layout}") from None
            return parsed.replace(tzinfo=CHINA_TZ)
        if canonical == "materials":
            return self._materials(wire, value)
        if canonical == "version":
            return str(value)
        return value

    def _cell(self, wire: str, value: Any) -> list[dict[str, Any]]:
        """Materials packed in one text cell: entries, each with its parts in material_fields order."""
        cell = self.fmt.materials_cell
        assert cell is not None
        names = list(self.fmt.material_fields.values())
        entries = []
        for i, entry in enumerate(str(value or "").split(cell.entry_separator), start=1):
            if not entry.strip():
                continue
            parts = entry.split(cell.field_separator)
            if len(parts) != len(names):
                raise ValueError(
                    f"字段 {wire} 第 {i} 项应有 {len(names)} 段（以“{cell.field_separator}”分隔），实际 {len(parts)} 段"
                )
            entries.append(dict(zip(names, (p.strip() for p in parts), strict=True)))
        return entries

    def _materials(self, wire: str, value: Any) -> list[dict[str, Any]]:
        if self.fmt.materials_cell is not None:
            value = self._cell(wire, value)
        if not isinstance(value, list):
            raise ValueError(f"字段 {wire} 应为材料列表，实际为 {type(value).__name__}")
        mf = self.fmt.material_fields
        out = []
        for i, entry in enumerate(value, start=1):
            if not isinstance(entry, dict):
                raise ValueError(f"字段 {wire} 第 {i} 项不是对象")
            entry = dict(entry)
            for f in CLEANED_MATERIAL_FIELDS:
                if mf[f] in entry:
                    entry[mf[f]] = self._clean(f"{wire}[{i}].{mf[f]}", MATERIAL_LABELS[f], entry[mf[f]])
            copies = entry.get(mf["copies"])
            try:
                copies = int(copies) if copies not in (None, "") else None
            except (TypeError, ValueError):
                raise ValueError(f"字段 {wire}[{i}].{mf['copies']}（份数）的值 {copies!r} 不是整数") from None
            out.append(
                {
                    "name": entry.get(mf["name"]),
                    "required": self._code(
                        "material_required", f"{wire}[{i}].{mf['required']}", entry.get(mf["required"])
                    ),
                    "form": self._code("material_form", f"{wire}[{i}].{mf['form']}", entry.get(mf["form"])),
                    "copies": copies,
                    "source": entry.get(mf["source"]) or None,
                }
            )
        return out


JSON_KINDS = {"int": "整数", "float": "小数", "bool": "布尔值", "list": "数组", "dict": "对象"}


def recover_code(value: Any) -> str | None:
    """The 实施编码 a record names, when it can be told without doubt: a text, or a JSON integer whose digits
    are a whole 31-character code (a partner exporting an all-digit code as a number). A float (digits may be
    lost), a bool or a number of another length is not a code anyone can be sure of: None."""
    if isinstance(value, str):
        return clean_code(value) or None
    if isinstance(value, int) and not isinstance(value, bool) and len(str(value)) == TASK_CODE_LENGTH:
        return str(value)
    return None


Position = Any  # where a record sits in a pull: "第2页第7条" here, (page, index) while fetching


class Deduper:
    """Recognises records already read in the same pull.

    A record's identity is its 实施编码 plus a digest of its whole raw content: an exact copy is a
    ``duplicate`` (counted once); a second, different record with the same 实施编码 is ``new`` here
    and shows in :meth:`conflicts`. Records without a usable 实施编码 are always new (they are
    quarantined for it later).
    """

    def __init__(self, key_field: str) -> None:
        self.key_field = key_field
        self.first: dict[tuple[str, str], Position] = {}
        self.positions: dict[str, list[Position]] = {}
        self.distinct = 0
        self.duplicates = 0

    def identity(self, row: Any) -> tuple[str, str] | None:
        if not isinstance(row, dict):
            return None
        code = row.get(self.key_field)
        if not isinstance(code, str) or not code.strip():
            return None
        content = canonical_json(row)
        return code.strip(), hashlib.sha256(content).hexdigest()

    def add(self, row: Any, position: Position) -> str:
        """``new`` or ``duplicate``; remembers a new record."""
        ident = self.identity(row)
        if ident is not None and ident in self.first:
            self.duplicates += 1
            return "duplicate"
        if ident is not None:
            self.first[ident] = position
            self.positions.setdefault(ident[0], []).append(position)
        self.distinct += 1
        return "new"

    def count_new(self, rows: Iterable[Any]) -> int:
        """How many of ``rows`` :meth:`add` would take as new (without remembering them)."""
        seen: set[tuple[str, str]] = set()
        new = 0
        for row in rows:
            ident = self.identity(row)
            if ident is None:
                new += 1
            elif ident not in self.first and ident not in seen:
                seen.add(ident)
                new += 1
        return new

    def first_position(self, row: Any) -> Position:
        ident = self.identity(row)
        return self.first.get(ident) if ident else None

    def conflicts(self) -> dict[str, list[Position]]:
        """实施编码 read more than once with different content -> where each copy was."""
        return {code: places for code, places in self.positions.items() if len(places) > 1}


@dataclass
class Normalised:
    outcomes: list[Item | Quarantined]
    duplicates: list[Duplicate]  # exact copies left out, each naming where the first one was
    normalised: list[NormalisedValue] = field(default_factory=list)  # values clean_code changed, with why


def normalise_catalogue(pages: Iterable[tuple[int, list[Any]]], fmt: WireFormat, partner: Partner) -> Normalised:
    """A whole pull: repeated records recognised (:class:`Deduper`), then each record mapped."""
    key = fmt.fields["task_code"]
    dedupe = Deduper(key)
    kept: list[tuple[str, Any]] = []
    duplicates: list[Duplicate] = []
    for number, records in pages:
        for index, raw in enumerate(records, start=1):
            position = f"第{number}页第{index}条"
            if dedupe.add(raw, position) == "duplicate":
                first = dedupe.first_position(raw)
                reason = f"与{first}的记录完全相同（重复分页），只计一次"
                duplicates.append(Duplicate(position, raw.get(key), first, reason))
            else:
                kept.append((position, raw))
    conflicts = dedupe.conflicts()
    mapper = RecordMapper(fmt, partner)
    outcomes: list[Item | Quarantined] = []
    for position, raw in kept:
        ident = dedupe.identity(raw)
        if ident is not None and ident[0] in conflicts:
            places = conflicts[ident[0]]
            reason = (
                f"实施编码 {ident[0]} 在本次拉取中出现 {len(places)} 次且内容不同（{'、'.join(places)}），"
                "无法判断以哪条为准"
            )
            problems = [Problem("task_code", key, reason)]
            name = _item_name(raw, fmt)
            outcomes.append(Quarantined(partner.division, position, ident[0], problems, raw, name=name))
        else:
            outcomes.append(mapper.map(raw, position))
    return Normalised(outcomes, duplicates, mapper.normalised)


def parse_time(text: str, layout: str) -> datetime:
    """``datetime.strptime(text, layout)``, through ``fromisoformat`` when the text reads back in the
    layout unchanged (the common case, several times faster); strptime decides everything else."""
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None and parsed.strftime(layout) == text:
            return parsed
    except ValueError:
        pass
    return datetime.strptime(text, layout)
