"""What counts as an internal name in a text a partner reads, and every text of a report folder.

Internal: our format ids, canonical field, element and dictionary names, the suite's check names, the
platform's operation names, and any other snake_case identifier — except the partner's own field names
(a ``national_json`` partner's fields are snake_case, and a message must name them).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from tongban.model import ITEM_FIELDS, LABELS, MATERIAL_LABELS
from tongban.registry import DICTIONARY_LABELS, WireFormat, dictionaries, wire_formats

EXPECTATIONS = Path(__file__).parents[1] / "expectations"
IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*(?![A-Za-z0-9_])")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
PROSE_KEYS = re.compile(r"(reason|message|label|error)$")
# the offer endpoint's answer (docs/partner-formats.md §13.2): the same keys and values in every format
OFFER_ANSWER = {"batch_id", "idempotency_key", "replayed", "results", "task_code", "op", "line", "status", "reason"}
OFFER_ANSWER |= {"upsert", "delete", "accepted", "rejected"}


def check_names() -> set[str]:
    names = set()
    for suite in EXPECTATIONS.glob("*.json"):
        for expectation in json.loads(suite.read_text(encoding="utf-8")).get("expectations", []):
            names.add(expectation.get("meta", {}).get("check"))
    return {n for n in names if n}


def internal_names(fmt: WireFormat) -> set[str]:
    names = {*wire_formats(), *ITEM_FIELDS, *LABELS, *dictionaries(), *DICTIONARY_LABELS, *MATERIAL_LABELS}
    names |= check_names() | {"upsert", "delete"}
    return names - own_names(fmt)


def own_names(fmt: WireFormat) -> set[str]:
    """The partner's own names: its fields, its query parameters, its envelope keys."""
    paging = fmt.paging
    envelope = (paging.size_param, paging.page_param, paging.cursor_param, paging.items_field, paging.total_field)
    own = {*fmt.fields.values(), *fmt.material_fields.values(), *(n for n in envelope if n)}
    own |= {n for n in (paging.next_field, paging.total_header, fmt.incremental and fmt.incremental.param) if n}
    return own


def offer_names(fmt: WireFormat) -> set[str]:
    """The names of the partner's offer endpoint (§13): its fields and the answer's keys and values, which
    are alike in all formats — the conformance kit names them; a report does not (``upsert`` and ``delete``
    are the platform's operations there)."""
    if fmt.offer is None:
        return set()
    offer = fmt.offer
    return {n for n in (offer.modes_field, offer.op_field, offer.items_field, *offer.ops.values()) if n} | OFFER_ANSWER


def internal_in(text: str, fmt: WireFormat, theirs: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """The internal identifiers ``text`` contains (for the partner of format ``fmt``; ``theirs``: more names
    the partner chose, e.g. fields it added)."""
    own = own_names(fmt) | set(theirs)
    forbidden = internal_names(fmt) - own
    return [t for t in IDENTIFIER.findall(text) if t in forbidden or (SNAKE.match(t) and t not in own)]


def _prose(value: Any, key: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _prose(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _prose(v, key)
    elif isinstance(value, str) and PROSE_KEYS.search(key):
        yield value


def report_texts(folder: Path) -> Iterator[tuple[str, str]]:
    """(where, text) for every text of a report folder: the JSON's prose, the HTML's visible text, every
    xlsx cell."""
    for text in _prose(json.loads((folder / "report.json").read_text(encoding="utf-8"))):
        yield "report.json", text
    page = (folder / "report.html").read_text(encoding="utf-8")
    page = re.sub(r"<(style|script)[^>]*>.*?</\1>", " ", page, flags=re.S)
    yield "report.html", html.unescape(re.sub(r"<[^>]+>", " ", page))
    book = load_workbook(folder / "report.xlsx", read_only=True)
    for sheet in book.worksheets:
        for row in sheet.iter_rows(values_only=True):
            for cell in row:
                if isinstance(cell, str):
                    yield f"report.xlsx/{sheet.title}", cell
    yield "report.xlsx", " ".join(book.sheetnames)
