"""The task-instance link from each task of the partner groups to that partner's report for the run.

Airflow 3 asks global operator links in the API server: ``get_link(operator, ti_key=TaskInstanceKey)``
with the serialized operator and the key of the task instance (dag_id, task_id, run_id, try_number,
map_index). Both partner groups (``partner.*`` before the province check, ``partner_publish.*`` after)
map over one entry per division code of the ``plan`` task's list, in its order, so the map index names
the partner: its rendered map index (``"440100 广州市"``, the DAG's map_index_template) says it
directly; before that is rendered, the ``plan`` XCom at that index does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from tongban_ui.settings import report_url

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

PARTNER_GROUPS = ("partner.", "partner_publish.")  # before and after the province check
PLAN_TASK = "plan"
LABEL = re.compile(r"([0-9]{6})(?:\s|$)")  # used with match: the label's start


def division_of(ti_key: TaskInstanceKey) -> str | None:
    """The division code a mapped partner task instance works on, from the metadata database."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        label = session.scalar(
            select(TaskInstance.rendered_map_index).where(
                TaskInstance.dag_id == ti_key.dag_id,
                TaskInstance.run_id == ti_key.run_id,
                TaskInstance.task_id == ti_key.task_id,
                TaskInstance.map_index == ti_key.map_index,
            )
        )
        if label and (found := LABEL.match(label)):
            return found.group(1)
        query = XComModel.get_many(
            run_id=ti_key.run_id, key="return_value", dag_ids=ti_key.dag_id, task_ids=PLAN_TASK, map_indexes=-1
        )
        row = session.scalars(query.limit(1)).first()
        planned = XComModel.deserialize_value(row) if row is not None else None
    if isinstance(planned, list) and 0 <= ti_key.map_index < len(planned):
        return str(planned[ti_key.map_index])
    return None


class PartnerReportLink(BaseOperatorLink):
    """「伙伴报告」 on every task of the partner groups; empty (no link) on any other task."""

    name = "伙伴报告 (partner report)"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from tongban_ui.settings import Settings

        if not ti_key.task_id.startswith(PARTNER_GROUPS) or ti_key.map_index < 0:
            return ""
        if ti_key.dag_id != Settings.from_airflow().dag_id:
            return ""
        division = division_of(ti_key)
        return report_url(ti_key.run_id, division) if division else ""
