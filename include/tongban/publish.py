"""Push reconciled changes to the provincial platform, safely and exactly once.

Each batch carries an idempotency key derived from run, partner and the batch's content: a retried
request, a re-run task or a crash between push and acknowledgement replays the same key and the
platform applies the batch at most once (:mod:`tongban.batches`, shared with the outbound direction).
After pushing, the platform's list is read back and must equal what was meant.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from tongban.batches import batch_key, readback_problems, send_batches
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
    pairs = ((r["task_code"], digests.get(r["task_code"]) or content_hash(r)) for r in upserts)
    return batch_key(run_id, division, pairs, deletes)


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
    digests = {r["task_code"]: content_hash(r) for r in recon.upserts()}  # once per item, used three times
    sent = send_batches(
        store,
        run_id,
        division,
        recon.upserts(),
        recon.deletes(),
        digests,
        lambda key, ups, dels: client.push(division, key, ups, dels),
        batch_size=batch_size,
    )
    result.batches, result.accepted, result.rejected = sent.batches, sent.accepted, sent.rejected
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
    if problems := readback_problems(expected, actual, intended):
        raise PublishError(f"read-back of region {division} differs from what was published: " + "; ".join(problems))
