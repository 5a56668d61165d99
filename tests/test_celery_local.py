"""When `make celery-e2e` kills worker w2 (issue 14.3): during a publish if it gets one, and in every run."""

from __future__ import annotations

from typing import Any

from scripts.celery_local import VICTIM, to_kill


def ti(task: str, state: str | None, worker: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"task_id": task, "map_index": index, "state": state, "hostname": f"{worker}@host" if worker else None}


def test_kills_at_once_when_the_victim_runs_a_publish() -> None:
    tis = [
        ti("partner_publish.publish", "running", VICTIM, 0),
        ti("partner_publish.reconcile", "running", VICTIM, 1),
        ti("partner_publish.publish", "queued", None, 1),
    ]
    assert to_kill(tis) == tis[:2]


def test_waits_while_a_publish_may_still_come_to_the_victim() -> None:
    tis = [ti("partner_publish.reconcile", "running", VICTIM, 0), ti("partner_publish.publish", None, None, 0)]
    assert to_kill(tis) == []


def test_kills_during_the_rest_of_the_group_once_no_publish_is_left_to_start() -> None:
    tis = [ti("partner_publish.publish", "success", "w1", 0), ti("partner_publish.report", "running", VICTIM, 0)]
    assert to_kill(tis) == tis[1:]


def test_never_for_tasks_on_the_other_worker_or_outside_the_publishing_group() -> None:
    tis = [ti("partner_publish.publish", "running", "w1", 0), ti("partner.validate", "running", VICTIM, 1)]
    assert to_kill(tis) == []
