"""The partner_api pool the fetch tasks run in (one pool: Airflow fixes a mapped task's pool at parse time)."""

from __future__ import annotations

import ast

from scripts.localenv import REPO
from tongban.pools import PARTNER_API_POOL, SLOTS_PER_PROVINCE, partner_api_slots
from tongban.registry import Registry


def test_fetch_runs_in_the_partner_api_pool() -> None:
    tree = ast.parse((REPO / "dags" / "cross_province_sync.py").read_text(encoding="utf-8"))
    constants = {
        t.id: node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    assert constants["PARTNER_API_POOL"] == PARTNER_API_POOL
    [fetch] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "fetch"]
    [decorator] = fetch.decorator_list
    assert isinstance(decorator, ast.Call)
    pool = {k.arg: k.value for k in decorator.keywords}["pool"]
    assert isinstance(pool, ast.Name) and pool.id == "PARTNER_API_POOL"


def test_pool_is_sized_per_province(registry: Registry) -> None:
    divisions = [p.division for p in registry.partners]
    assert partner_api_slots(divisions) == SLOTS_PER_PROVINCE * 2 == 4  # Guangdong and Shandong
    assert partner_api_slots(["440100", "440300"]) == SLOTS_PER_PROVINCE
    assert partner_api_slots([]) == 1
