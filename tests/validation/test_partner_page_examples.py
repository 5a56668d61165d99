"""The example records of docs/partner-formats.md §5 are records a partner can copy: each maps to an item and
passes every critical check (the pinyin_json one had a 实施编码 whose level digit was its own level code, 4 镇,
not the national one, and was rejected)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tongban.model import Item
from tongban.normalise import normalise_catalogue
from tongban.registry import load_registry, wire_formats
from tongban.validation import validate_items

PAGE = Path(__file__).parents[2] / "docs" / "partner-formats.md"


def _section_5_examples() -> dict[str, list[Any]]:
    text = PAGE.read_text(encoding="utf-8")
    section = text[text.index("\n## 5. ") : text.index("\n## 6. ")]
    examples: dict[str, list[Any]] = {}
    for lang, block in re.findall(r"```(json|csv)\n(.*?)```", section, re.S):
        if lang == "csv":
            examples["csv_gbk"] = list(csv.DictReader(io.StringIO(block)))
        else:
            body = json.loads(block)
            examples["national_json" if "data" in body else "pinyin_json"] = body.get("data") or body["rows"]
    return examples


EXAMPLES = _section_5_examples()


def test_every_format_has_an_example() -> None:
    assert set(EXAMPLES) == set(wire_formats())


@pytest.mark.parametrize("fmt", sorted(EXAMPLES))
def test_the_example_records_are_accepted(fmt: str) -> None:
    partner = next(p for p in load_registry().partners if p.format == fmt)
    outcomes = normalise_catalogue([(1, EXAMPLES[fmt])], wire_formats()[fmt], partner).outcomes
    assert outcomes and all(isinstance(o, Item) for o in outcomes), outcomes
    records = [o.record() for o in outcomes if isinstance(o, Item)]
    critical = [f.message for f in validate_items(records, partner).findings if f.severity == "critical"]
    assert critical == []
