"""Hand-made item records for the validation tests: a good item and a builder for variants.

Imported by the test modules as ``item_fixtures`` (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tongban.codes import make_task_code, make_uscc
from tongban.model import Item

GUANGZHOU = "440100"
CITY_USCC = make_uscc("1", "1", GUANGZHOU, "00061234")  # a 广州 city-level bureau
DISTRICT_USCC = make_uscc("1", "1", "440106", "00070001")  # a 天河区 bureau
SHENZHEN_USCC = make_uscc("1", "1", "440300", "00080002")
HUNAN_USCC = "11430981000612349J"  # synthetic 沅江 code passing both checks (DOMAIN.md)

MATERIAL = {"name": "居民身份证", "required": True, "form": "paper", "copies": 1, "source": "申请人自备"}


def catalog_code(index: int, item_type: str = "01") -> str:
    """A 12-digit 基本编码: national source 00, the type digits, main item ``index``, no sub-item."""
    return f"00{item_type}{index:05d}000"


def make_record(
    index: int = 1,
    *,
    uscc: str = CITY_USCC,
    level: str = "3",
    catalog: str | None = None,
    partner: str = GUANGZHOU,
    **changes: Any,
) -> dict[str, Any]:
    """An ``Item.record()`` that passes every check; ``changes`` override fields after the codes
    are built, so a test can break one thing at a time."""
    catalog = catalog or catalog_code(index)
    fields: dict[str, Any] = {
        "partner": partner,
        "task_code": make_task_code(uscc, level, catalog),
        "catalog_code": catalog,
        "name": "失业登记",
        "legal_basis": "《失业保险条例》第十六条：城镇企业事业单位应当及时为失业人员出具终止或者解除劳动关系的证明。",
        "item_type": "01",
        "accept_conditions": "在法定劳动年龄内、有劳动能力、有就业要求、处于无业状态的城乡劳动者。",
        "service_objects": ["1"],
        "procedure": "申请、受理、审核、办结。",
        "materials": [MATERIAL],
        "legal_limit": 20,
        "legal_limit_unit": "WD",
        "promised_limit": 5,
        "promised_limit_unit": "WD",
        "result": "失业登记证明",
        "level": level,
        "dept_name": "广州市人力资源和社会保障局",
        "dept_uscc": uscc,
        "handling_mode": "1",
        "handle_type": "2",
        "version": "1",
        "updated_at": datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
        "source_ref": f"page 1 #{index}",
    }
    fields.update(changes)
    return Item(**fields).record()


def comparable_result(result: dict[str, Any]) -> str:
    """A GX result without what differs from run to run (run id and time, GX's random ids), as text."""
    results = [
        {k: v for k, v in r.items() if k != "expectation_config"}
        | {"config": {k: v for k, v in r["expectation_config"].items() if k != "id"}}
        for r in result["results"]
    ]
    kept = {"results": results, "statistics": result["statistics"], "success": result["success"]}
    return json.dumps(kept, sort_keys=True, default=str)
