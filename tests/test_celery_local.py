"""When `make celery-e2e` kills worker w2 (issue 14.3): in a publish that is pushing, and in every run."""

from __future__ import annotations

from typing import Any

from scripts.celery_local import VICTIM, to_kill

PLANNED = ["440100", "370100"]


def ti(task: str, state: str | None, worker: str | None = None, division: str = "440100") -> dict[str, Any]:
    host = f"{worker}@host" if worker else None
    index = PLANNED.index(division)
    return {
        "task_id": task,
        "map_index": index,
        "state": state,
        "hostname": host,
        "rendered_map_index": f"{division} 某市",
    }


def test_kills_when_the_victims_publish_has_begun_pushing() -> None:
    tis = [
        ti("partner_publish.publish", "running", VICTIM, "440100"),
        ti("partner_publish.reconcile", "running", VICTIM, "370100"),
        ti("partner_publish.publish", "queued", None, "370100"),
    ]
    assert to_kill(tis, lambda i: PLANNED[i] == "440100") == tis[:2]


def test_waits_while_the_victims_publish_has_not_pushed_yet() -> None:
    tis = [ti("partner_publish.publish", "running", VICTIM, "440100")]
    assert to_kill(tis, lambda i: False) == []


def test_waits_while_a_publish_may_still_come_to_the_victim() -> None:
    tis = [ti("partner_publish.reconcile", "running", VICTIM), ti("partner_publish.publish", None)]
    assert to_kill(tis, lambda i: True) == []


def test_kills_during_the_rest_of_the_group_once_every_publish_has_ended() -> None:
    tis = [ti("partner_publish.publish", "success", "w1"), ti("partner_publish.report", "running", VICTIM)]
    assert to_kill(tis, lambda i: False) == tis[1:]


def test_never_for_tasks_on_the_other_worker_or_outside_the_publishing_group() -> None:
    tis = [ti("partner_publish.publish", "running", "w1"), ti("partner.validate", "running", VICTIM, "370100")]
    assert to_kill(tis, lambda i: True) == []


def test_a_killed_publish_says_how_its_retry_sent_each_batch(tmp_path: Any) -> None:
    from upath import UPath

    from scripts.celery_local import replays
    from tongban.layout import PUBLISH, run_dir
    from tongban.storage import write_json

    root = UPath(tmp_path)
    write_json(run_dir(root, "r1", "440100") / PUBLISH, {"batches": [{"replayed": True}, {"replayed": None}]})
    assert replays(root, "r1", ti("partner_publish.publish", "success", "w1")) == "; its batches: replayed, sent"
    assert replays(root, "r1", ti("partner_publish.report", "success", "w1")) == ""
