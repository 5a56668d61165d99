"""Push reconciled changes to the provincial platform, safely and exactly once, from the newest run only.

Each batch carries an idempotency key derived from run, partner and the batch's content: a retried
request, a re-run task or a crash between push and acknowledgement replays the same key and the
platform applies the batch at most once (:mod:`tongban.batches`, shared with the outbound direction).
After pushing, the platform's list is read back and must equal what was meant.

The ledger notes every batch ``pending`` with its content before anything is sent, ``sent`` just before its
request goes out and ``acked`` together with applying the platform's answer to the item store and history
(:func:`tongban.batches.send_batches`). A run that died leaves ``pending`` (not marked sent) or ``sent`` (maybe
applied) rows: every later run first :func:`settle` s both against the platform, asking by idempotency key.
On the SQLite item store (WAL, ``synchronous=NORMAL``) ledger steps survive a crash of the process, not a
power loss of the machine, which may roll back the last ones, a ``sent`` mark included: a ``pending`` row is
therefore not taken as never sent (docs/platform-api.md, *What we do with them*).

Fencing: every run that starts for a partner claims the next publish sequence of that partner
(:meth:`ItemStore.claim_sequence`); a run whose sequence is no longer the highest is stale and may
neither settle nor publish (:class:`StaleRun`), and each batch carries the sequence in
``X-Publish-Sequence`` so the platform refuses a superseded run's batch as well (the header is signed
with the request, ``PLATFORM_AUTH.signed_headers``: a sequence changed on the way is refused).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import requests

from tongban.batches import Sent, batch_key, readback_problems, send_batches
from tongban.connections import PLATFORM_AUTH, PLATFORM_SIGNATURE, SEQUENCE_HEADER
from tongban.http import Answer, HttpClient, HttpFailure, HttpSettings, Signer, reason
from tongban.model import content_digests
from tongban.reconcile import Reconciliation
from tongban.results import SettledBatch, Settlement
from tongban.store.repo import ItemStore
from tongban.store.schema import ACKED, PENDING, UNAPPLIED, UNSENT

STALE_SEQUENCE = "stale_sequence"  # the platform's code for a batch of a superseded run


class PublishError(RuntimeError):
    """The platform did not end up holding what was meant; the message says what differs."""


class StaleRun(PublishError):
    """A newer run has started for the partner: this one may not settle or publish for it any more."""


def check_fence(store: ItemStore, division: str, run_id: str) -> int:
    """This run's publish sequence for the partner; StaleRun if a newer run started for it since."""
    sequence = store.claim_sequence(division, run_id)
    if newer := store.newer_run(division, sequence):
        newer_run, newer_sequence = newer
        raise StaleRun(
            f"run {run_id} is superseded for partner {division}: run {newer_run} started after it (publish "
            f"sequence {newer_sequence} > {sequence}); this run changes nothing for the partner, the newer one "
            "settles, publishes and reports instead"
        )
    return sequence


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
        """As written to publish.json (the lists themselves: ``dataclasses.asdict`` would deep-copy every answer)."""
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"published": self.published}


PLATFORM_PAGE_SIZE = 500  # items per page of a region's list: the most the platform serves (docs/platform-api.md)


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

    def _call(self, what: str, method: str, url: str, *, missing: bool = False, **kwargs: Any) -> Any:
        """The answer's JSON; None for a 404 when ``missing`` is allowed. A refusal raises PublishError
        (StaleRun for a superseded run's batch); a platform that stays unreachable too."""

        def judge(answer: Answer) -> Any:
            if 200 <= answer.status < 300:
                return answer.json()
            if missing and answer.status == 404:
                return None
            message = f"platform answered {answer.status} {what}: {reason(answer.body)}"
            try:
                stale = answer.status == 409 and answer.json().get("code") == STALE_SEQUENCE
            except ValueError:
                stale = False
            raise (StaleRun if stale else PublishError)(message)

        try:
            return self.client.request(method, url, what=what, check=judge, **kwargs)
        except HttpFailure as exc:
            raise PublishError(f"platform answered {exc.status} {what}: {exc}") from None

    def items(self, division: str) -> Iterator[dict[str, Any]]:
        """The region's items, read page by page and handed on as they come: one page in memory at a time.

        Each 实施编码 must come once, and the count read must be the last page's ``total`` (an item added or
        removed behind the reader while it reads makes them differ): PublishError otherwise."""
        params: dict[str, Any] = {"page_size": PLATFORM_PAGE_SIZE}
        seen: set[str] = set()
        for number in itertools.count(1):
            what = f"reading region {division}'s items (page {number})"
            page = self._call(what, "GET", self._url(division, "items"), params=params)
            for record in page["items"]:
                if record["task_code"] in seen:
                    raise PublishError(f"platform listed item {record['task_code']} of region {division} twice")
                seen.add(record["task_code"])
                yield record
            cursor = page["next_cursor"]
            if cursor is None:
                break
            if not page["items"] or cursor == params.get("cursor"):
                raise PublishError(f"platform's paging of region {division}'s items does not advance at {cursor}")
            params["cursor"] = cursor
        if len(seen) != page["total"]:
            raise PublishError(
                f"read {len(seen)} items of region {division}, the platform declares {page['total']}: "
                "the list changed while it was read"
            )

    def push(
        self,
        division: str,
        key: str,
        upserts: Sequence[Mapping[str, Any]],
        deletes: Sequence[str],
        sequence: int | None = None,
    ) -> dict[str, Any]:
        """Send one batch; ``sequence``: the run's publish sequence for the partner (the fencing token)."""
        body = json.dumps({"upserts": list(upserts), "deletes": list(deletes)}, ensure_ascii=False).encode()
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        if sequence is not None:
            headers[SEQUENCE_HEADER] = str(sequence)
        url = self._url(division, "batches")
        return dict(self._call(f"pushing batch {key} for region {division}", "POST", url, data=body, headers=headers))

    def batch(self, division: str, key: str) -> dict[str, Any] | None:
        """The platform's answer to the region's batch with this idempotency key; None if it never recorded it."""
        what = f"asking for batch {key} of region {division}"
        found = self._call(what, "GET", self._url(division, "batches"), params={"idempotency_key": key}, missing=True)
        return None if found is None else dict(found)


def idempotency_key(run_id: str, division: str, upserts: Sequence[Mapping[str, Any]], deletes: Sequence[str]) -> str:
    """The key of one batch of the run (what :func:`publish` sends it under)."""
    digests = content_digests(upserts)
    return batch_key(run_id, division, ((r["task_code"], digests[r["task_code"]]) for r in upserts), deletes)


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
    """Push upserts and deletes in batches, all noted in the ledger before the first is sent; then read back
    (not when there is nothing to push). The old codes of re-coded items follow in batches of their own, once
    the platform has answered: only those whose new code it accepted are deleted (a refused re-code leaves the
    item on the platform under its old code).

    Each batch is marked ``sent`` just before its request and ``acked`` together with applying the answer
    to the item store. A batch the ledger holds as acknowledged is not sent again; one left ``pending`` or
    ``sent`` by an earlier attempt of this run is sent again under the same key, and the platform answers
    with what it applied the first time. Before each batch the run must still be the partner's newest
    (:func:`check_fence`); the batch carries its publish sequence for the platform to check too.
    """
    result = PublishResult(dry_run=dry_run)
    if dry_run:
        return result
    sequence = check_fence(store, division, run_id)
    upserts, removals = recon.upserts(), [r["task_code"] for r in recon.removed]
    if not upserts and not removals:
        return result  # nothing to publish: the list reconcile has just read is the one the platform holds
    digests = content_digests(upserts)  # once per item: batch keys, item store, read-back
    moves = {r.task_code: r.old_code for r in recon.recoded}  # new 实施编码 -> old

    def send(ups: list[dict[str, Any]], dels: list[str], sent: Sent | None = None) -> Sent:
        return send_batches(
            store,
            run_id,
            division,
            ups,
            dels,
            digests,
            lambda key, batch_ups, batch_dels: client.push(division, key, batch_ups, batch_dels, sequence),
            batch_size=batch_size,
            sent=sent,
            sequence=sequence,
            before_send=lambda: check_fence(store, division, run_id),  # a newer run may have started meanwhile
            recoded=moves,
        )

    sent = send(upserts, removals)
    # A re-code's old code goes only once the platform holds the item under its new one: the platform answers
    # each operation of a batch on its own, and a refused new code must not take the published item with it.
    if moved := sorted(moves[a["task_code"]] for a in sent.accepted if a["op"] == "upsert" and a["task_code"] in moves):
        send([], moved, sent)
    result.batches, result.accepted = sent.batches, sent.accepted
    # the platform answers code, op and reason: a refused item is named too (待整改 lists it by name)
    names = {r["task_code"]: r.get("name") or "" for r in [*upserts, *recon.removed]}
    result.rejected = [p | {"name": names.get(p.get("task_code"), "")} for p in sent.rejected]
    verify(client, division, recon, result, digests)
    return result


def settle(client: PlatformClient, division: str, run_id: str, store: ItemStore) -> Settlement:
    """Settle the ledger rows that earlier, dead runs left for the partner, before this run reconciles anything.

    ``pending`` and ``sent`` rows alike are asked about by idempotency key (a ``pending`` one too: on the SQLite
    store a power loss can roll back its ``sent`` mark after its request went out). A batch the platform
    recorded is ``acked`` and its accepted operations applied to the item store and history under the run
    that sent it (the change is that run's, reported by the next delivered report). For one it never
    recorded, the platform's list is read back for any of its operations applied all the same (a platform
    that failed half-way): a ``pending`` row with none found is closed ``unsent``, any other ``unapplied``
    (with what was found applied). Nothing is ever sent again: the newer run reconciles against the
    platform's list and publishes what is still to change. Last, the item store is compared with the
    platform's list by content hash (``drift``: should be empty).

    Claims the run's publish sequence first: StaleRun if a newer run has started for the partner.
    """
    sequence = check_fence(store, division, run_id)
    settled: list[SettledBatch] = []
    on_platform: dict[str, str] | None = None  # read when first needed
    for row in store.unsettled(division):
        if row["run_id"] == run_id:
            continue  # this run's own batches: its publish sends them again under the same keys
        key = row["key"]
        if (answer := client.batch(division, key)) is not None:
            store.ledger_ack(key, answer, settled_by=run_id)
            outcome, applied = ACKED, sum(r["status"] == "accepted" for r in answer["results"])
        else:
            if on_platform is None:
                on_platform = content_digests(client.items(division))
            body = row["body"] or {"upserts": [], "deletes": []}
            digests = content_digests(body["upserts"])
            found = [("upsert", code) for code, digest in digests.items() if on_platform.get(code) == digest]
            found += [("delete", code) for code in body["deletes"] if code not in on_platform]
            outcome = UNSENT if row["status"] == PENDING and not found else UNAPPLIED
            note = f"the platform has no record of it; {len(found)} of its operations found applied all the same"
            store.ledger_close(key, outcome, settled_by=run_id, note=note, found_applied=found, digests=digests)
            applied = len(found)
        settled.append(
            SettledBatch(
                key=key, run_id=row["run_id"], batch_no=row["batch_no"], was=row["status"], now=outcome, applied=applied
            )
        )
    return Settlement(
        partner=division,
        run_id=run_id,
        sequence=sequence,
        settled=settled,
        drift=drift(client, division, store, on_platform),
    )


def drift(
    client: PlatformClient, division: str, store: ItemStore, held: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Where the item store and the platform's list of the partner differ (实施编码; empty lists: none).
    ``held``: the platform's content hashes by 实施编码, when the caller has read them already."""
    if held is None:
        held = content_digests(client.items(division))
    known = store.current_hashes(division)
    return {
        "only_on_platform": sorted(held.keys() - known.keys()),
        "only_in_store": sorted(known.keys() - held.keys()),
        "different": sorted(code for code in held.keys() & known.keys() if held[code] != known[code]),
    }


def verify(
    client: PlatformClient,
    division: str,
    recon: Reconciliation,
    result: PublishResult,
    digests: Mapping[str, str],
) -> None:
    """Read the platform's list back and check it holds exactly the intended items: the codes of all, the
    content of those just upserted (``digests``: the upserts' content hashes, computed once by publish)."""
    before = {
        *recon.unchanged,
        *recon.held,
        *(c.task_code for c in recon.changed),
        *(r["task_code"] for r in recon.removed),
        *(r.old_code for r in recon.recoded),
    }
    accepted = {(a["op"], a["task_code"]) for a in result.accepted}
    intended = {code: digests[code] for op, code in accepted if op == "upsert"}
    expected = (before - {code for op, code in accepted if op == "delete"}) | intended.keys()
    if problems := readback_problems(expected, client.items(division), intended):
        raise PublishError(f"read-back of region {division} differs from what was published: " + "; ".join(problems))
