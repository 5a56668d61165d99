"""Shared fixtures: a well-formed canonical item, and the live simulators for integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tongban.codes import make_task_code, make_uscc

USCC = make_uscc("1", "1", "440100", "00612345")  # a 广州 government body, both check characters right


def make_record(**overrides: Any) -> dict[str, Any]:
    """A canonical item record (``Item.record()`` shape) that passes every check."""
    level = overrides.pop("level", "3")
    uscc = overrides.pop("dept_uscc", USCC)
    catalog = overrides.pop("catalog_code", "000104002000")
    record = {
        "partner": "440100",
        "task_code": make_task_code(uscc, level, catalog),
        "catalog_code": catalog,
        "name": "失业登记",
        "legal_basis": "《中华人民共和国就业促进法》第四十二条：县级以上人民政府建立失业预防制度。",
        "item_type": "20",
        "accept_conditions": "在法定劳动年龄内、有劳动能力和就业要求、处于无业状态的城乡劳动者。",
        "service_objects": ["1"],
        "procedure": "申请人提交材料；窗口受理；审核；办结并告知结果。",
        "materials": [{"name": "居民身份证", "required": True, "form": "paper", "copies": 1, "source": "申请人自备"}],
        "legal_limit": 15,
        "legal_limit_unit": "WD",
        "promised_limit": 5,
        "promised_limit_unit": "WD",
        "result": "就业失业登记证明",
        "level": level,
        "dept_name": "广州市人力资源和社会保障局",
        "dept_uscc": uscc,
        "handling_mode": "1",
        "handle_type": "2",
        "version": "3",
        "updated_at": "2026-11-01T08:00:00+08:00",
        "source_ref": "第1页第1条",
    }
    record.update(overrides)
    return record


@pytest.fixture
def record() -> dict[str, Any]:
    return make_record()


@pytest.fixture(scope="session")
def simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Both simulators running on loopback for the whole session (their own state folder)."""
    from tongban.simulators.launcher import running_simulators

    state: Path = tmp_path_factory.mktemp("simulators")
    with running_simulators(state) as urls:
        yield urls
