"""Push reconciled changes to the provincial platform, safely and exactly once.

Each batch carries an idempotency key derived from run, partner and the batch's content: a retried
request, a re-run task or a crash between push and acknowledgement replays the same key and the
platform applies the batch at most once. After pushing, the platform's list is read back and must
equal what was meant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from tongban.connections import PLATFORM_AUTH, PLATFORM_SIGNATURE
from tongban.http import HttpClient, HttpFailure, HttpSettings, Signer
from tongban.model import content_hash
from tongban.reconcile import Reconciliation
from tongban.store.repo import ItemStore


class PublishError(RuntimeError):
    """The platform did not end up holding what was meant; the message says what differs."""


@dataclass
class PublishResult:
    batches: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False

    @property
    def published(self) -> int:
        return len(self.accepted)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "published": self.published}


class PlatformClient:
    """The provincial platform's item API; every request signed with the platform Connection's secret."""

    def __init__(
        self,
        base_url: str,
        secret: str | None,
        algorithm: str = PLATFORM_SIGNATURE,
        *,
        settings: HttpSettings | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        settings = settings or HttpSettings(retries=4, backoff=0.5, jitter=0.25)
        self.client = HttpClient("platform", Signer(PLATFORM_AUTH, secret, algorithm), settings, session)

    def _url(self, division: str, tail: str) -> str:
        return f"{self.base_url}/api/v1/regions/{division}/{tail}"

    def _call(self, what: str, method: str, url: str, **kwargs: Any) -> Any:
        try:
            return self.client.request(method, url, what=what, **kwargs).json()
        except HttpFailure as exc:
            raise PublishError(f"platform answered {exc.status} {what}: {exc}") from None

    def items(self, division: str) -> list[dict[str, Any]]:
        return list(self._call(f"reading region {division}'s items", "GET", self._url(division, "items"))["items"])

    def push(
        self, division: str, key: str, upserts: Sequence[Mapping[str, Any]], deletes: Sequence[str]
    ) -> dict[str, Any]:
        body = json.dumps({"upserts": list(upserts), "deletes": list(deletes)}, ensure_ascii=False).encode()
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        url = self._url(division, "batches")
        return dict(self._call(f"pushing batch {key} for region {division}", "POST", url, data=body, headers=headers))


def idempotency_key(
    run_id: str,
    division: str,
    upserts: Sequence[Mapping[str, Any]],
    deletes: Sequence[str],
    digests: Mapping[str, str] | None = None,
) -> str:
    """``digests``: the upserts' content hashes by 实施编码, when the caller has them already."""
    digests = digests or {}
    digest = hashlib.sha256()
    upserted = (digests.get(r["task_code"]) or content_hash(r) for r in upserts)
    for part in (
        run_id,
        division,
        *(h + r["task_code"] for h, r in zip(upserted, upserts, strict=True)),
        "|",
        *deletes,
    ):
        digest.update(part.encode())
        digest.update(b"\0")
    return f"{division}-{digest.hexdigest()[:32]}"


def publish(
    client: PlatformClient,
    division: str,
    run_id: str,
    recon: Reconciliation,
    store: ItemStore,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
) -> PublishResult:
    """Push upserts and deletes in batches, each noted in the ledger before it is sent; then read back.

    A batch the ledger already holds as acknowledged is not sent again; a pending one (pushed, then
    crashed before the answer was recorded) is sent again under the same key and the platform
    answers with what it applied the first time.
    """
    result = PublishResult(dry_run=dry_run)
    if dry_run:
        return result
    ops: list[tuple[str, Any]] = [("upsert", r) for r in recon.upserts()] + [("delete", c) for c in recon.deletes()]
    digests = {r["task_code"]: content_hash(r) for r in recon.upserts()}  # once per item, used three times
    for batch_no, start in enumerate(range(0, len(ops), batch_size), start=1):
        chunk = ops[start : start + batch_size]
        ups = [r for op, r in chunk if op == "upsert"]
        dels = [c for op, c in chunk if op == "delete"]
        key = idempotency_key(run_id, division, ups, dels, digests)
        entry = store.ledger_entry(key)
        if entry and entry["status"] == "acked":
            answer = {"batch_id": entry["platform_batch_id"], "replayed": True, "results": entry["results"]}
        else:
            store.ledger_pending(key, run_id, division, batch_no, len(chunk))
            answer = client.push(division, key, ups, dels)
            store.ledger_ack(key, answer)
        result.batches.append(
            {"key": key, "batch_id": answer.get("batch_id"), "replayed": answer.get("replayed"), "size": len(chunk)}
        )
        for item in answer["results"]:
            (result.accepted if item["status"] == "accepted" else result.rejected).append(item)
    verify(client, division, recon, result, digests)
    accepted = {(a["op"], a["task_code"]) for a in result.accepted}
    store.apply(
        run_id,
        division,
        [r for r in recon.upserts() if ("upsert", r["task_code"]) in accepted],
        [c for c in recon.deletes() if ("delete", c) in accepted],
        [(r.old_code, r.task_code) for r in recon.recoded if ("upsert", r.task_code) in accepted],
        digests,
    )
    return result


def verify(
    client: PlatformClient,
    division: str,
    recon: Reconciliation,
    result: PublishResult,
    digests: Mapping[str, str] | None = None,
) -> None:
    """Read the platform's list back and check it holds exactly the intended items."""
    digests = digests or {}
    before = {
        *recon.unchanged,
        *recon.held,
        *(c.task_code for c in recon.changed),
        *(r["task_code"] for r in recon.removed),
        *(r.old_code for r in recon.recoded),
    }
    accepted = {(a["op"], a["task_code"]) for a in result.accepted}
    intended = {
        r["task_code"]: digests.get(r["task_code"]) or content_hash(r)
        for r in recon.upserts()
        if ("upsert", r["task_code"]) in accepted
    }
    expected = (before - {code for op, code in accepted if op == "delete"}) | intended.keys()
    actual = {r["task_code"]: content_hash(r) for r in client.items(division)}
    problems = []
    if missing := sorted(expected - actual.keys()):
        problems.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
    if extra := sorted(actual.keys() - expected):
        problems.append(f"unexpected {len(extra)}: {', '.join(extra[:5])}")
    if wrong := sorted(code for code, h in intended.items() if code in actual and actual[code] != h):
        problems.append(f"different content {len(wrong)}: {', '.join(wrong[:5])}")
    if problems:
        raise PublishError(f"read-back of region {division} differs from what was published: " + "; ".join(problems))
