"""The floor of the nightly run: ``cross_province_sync``'s shape with empty task bodies (bench/bench_nightly.py).

The same tasks, mapping, trigger rules, pools and rendered map indexes (each mapped task instance labelled by
its partner, as the real DAG labels it with the partner's code and name): ``plan`` and ``outbound_library``, a
mapped group of 4 tasks per partner, one province task over all of them, a mapped group of 5 tasks per partner,
``summarise`` (9 x partners + 4 task instances; tests/test_benches.py checks the shape against the DAG's).
Every task only passes on a small dict, so what a run of it costs is Airflow's own per-task cost.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, TriggerRule, dag, get_current_context, task, task_group

PARTNER_API_POOL = "partner_api"  # the real DAG's pool of its partner-facing tasks (a scheduler honours it)
PARTNER_TASK = {"map_index_template": "{{ partner_label }}"}  # as the real DAG's mapped tasks


def _labelled(division: str) -> dict[str, Any]:
    """What a mapped task passes on; names its task instance as the real DAG does (``partner_label``)."""
    get_current_context()["partner_label"] = division  # type: ignore[literal-required]
    return {"partner": division}


@dag(
    dag_id="nightly_shape_floor",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["bench"],
    params={"partners": Param([], type="array", items={"type": "string"})},
)
def nightly_shape_floor() -> None:
    @task
    def plan() -> list[str]:
        return list(get_current_context()["params"]["partners"])

    @task
    def outbound_library() -> dict[str, Any]:
        return {}

    @task(**PARTNER_TASK)
    def settle(division: str) -> dict[str, Any]:
        return _labelled(division)

    @task(**PARTNER_TASK, pool=PARTNER_API_POOL)
    def fetch(division: str) -> dict[str, Any]:
        return _labelled(division)

    @task(**PARTNER_TASK)
    def normalise(fetched: dict[str, Any]) -> dict[str, Any]:
        return _labelled(fetched["partner"])

    @task(**PARTNER_TASK)
    def validate(normalised: dict[str, Any]) -> dict[str, Any]:
        return _labelled(normalised["partner"]) | {"validated": True}

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def province_five_level(divisions: list[str], validated: Any) -> list[dict[str, Any]]:
        return [{"partner": d, "validated": True} for d in divisions]

    @task(**PARTNER_TASK)
    def reconcile(checked: dict[str, Any]) -> dict[str, Any]:
        return _labelled(checked["partner"])

    @task(**PARTNER_TASK)
    def publish(reconciled: dict[str, Any]) -> dict[str, Any]:
        return _labelled(reconciled["partner"])

    @task(**PARTNER_TASK, pool=PARTNER_API_POOL)
    def offer(checked: dict[str, Any]) -> dict[str, Any]:
        return _labelled(checked["partner"])

    @task(**PARTNER_TASK, trigger_rule=TriggerRule.ALL_DONE)
    def report(checked: dict[str, Any]) -> dict[str, Any]:
        return _labelled(checked["partner"])

    @task(**PARTNER_TASK, pool=PARTNER_API_POOL)
    def deliver(reported: dict[str, Any]) -> dict[str, Any]:
        return _labelled(reported["partner"])

    @task_group(group_id="partner")
    def validate_partner(division: str) -> Any:
        fetched = fetch(division)
        settle(division) >> fetched
        return validate(normalise(fetched))

    @task_group(group_id="partner_publish")
    def publish_partner(checked: dict[str, Any]) -> None:
        reported = report(checked)
        [publish(reconcile(checked)), library >> offer(checked)] >> reported
        deliver(reported)

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def summarise(divisions: list[str]) -> dict[str, Any]:
        return {"partners": len(divisions)}

    divisions = plan()
    library = outbound_library()
    validated = validate_partner.expand(division=divisions)
    checked = province_five_level(divisions, validated)
    publish_partner.expand(checked=checked) >> summarise(divisions)


nightly_shape_floor()
