"""Idempotent batches, both directions: items pushed to the provincial platform (``tongban.publish``) and
沅江's items offered to a partner (``tongban.outbound``).

Each batch carries a key derived from run, region and the batch's content. All of a call's batches are
noted ``pending`` in the ledger (the item store's ``publish_ledger``) before the first is sent; each is
marked ``sent`` just before its request goes out and ``acked`` with the receiver's per-item answer. A
batch the ledger holds as acknowledged is not sent again; a ``pending`` or ``sent`` one (a crash before
the answer was recorded) is sent again under the same key, and the receiver answers with what it applied
the first time. After sending, the caller reads the receiver's list back and checks it with
:func:`readback_problems`. Publishing to the platform also keeps each batch's content in the ledger
until it is acked and applies the accepted operations to the item store in the acking transaction, so
that a later run can settle what a dead run left (``tongban.publish.settle``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tongban.model import content_hash
from tongban.store.repo import Batch, ItemStore
from tongban.store.schema import ACKED, OFFER, PUBLISH

Push = Callable[[str, list[Mapping[str, Any]], list[str]], Mapping[str, Any]]  # (key, upserts, deletes) -> answer


def batch_key(
    run_id: str, division: str, upserts: Iterable[tuple[str, str]], deletes: Iterable[str], prefix: str = ""
) -> str:
    """``upserts``: (task code, content digest) pairs; ``prefix`` keeps the two directions' keys apart."""
    digest = hashlib.sha256()
    for part in (run_id, division, *(h + code for code, h in upserts), "|", *deletes):
        digest.update(part.encode())
        digest.update(b"\0")
    return f"{prefix}{division}-{digest.hexdigest()[:32]}"


@dataclass
class Sent:
    batches: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)  # the receiver's per-item results
    rejected: list[dict[str, Any]] = field(default_factory=list)


def send_batches(
    store: ItemStore,
    run_id: str,
    division: str,
    upserts: Sequence[Mapping[str, Any]],
    deletes: Sequence[str],
    digests: Mapping[str, str],
    push: Push,
    *,
    batch_size: int = 500,
    prefix: str = "",
    sent: Sent | None = None,
    sequence: int | None = None,
    before_send: Callable[[], object] | None = None,
    recoded: Mapping[str, str] | None = None,
) -> Sent:
    """Send upserts (mappings with ``task_code``; ``digests`` their content by task code) and deletes in
    batches through ``push``, all noted in the ledger first. ``sent`` collects the batches already done
    when ``push`` raises part-way (pass one in to keep them).

    Publishing to the platform passes ``recoded`` (new 实施编码 -> old, possibly empty): the ledger then keeps
    each batch's content and acking applies it to the item store; ``sequence`` is noted on the rows and
    ``before_send`` runs before every request (the fence check)."""
    sent = sent if sent is not None else Sent()
    ops: list[tuple[str, Any]] = [("upsert", r) for r in upserts] + [("delete", c) for c in deletes]
    planned: list[tuple[str, list[Mapping[str, Any]], list[str]]] = []
    for start in range(0, len(ops), batch_size):
        chunk = ops[start : start + batch_size]
        ups = [r for op, r in chunk if op == "upsert"]
        dels = [c for op, c in chunk if op == "delete"]
        key = batch_key(run_id, division, ((r["task_code"], digests[r["task_code"]]) for r in ups), dels, prefix)
        planned.append((key, ups, dels))
    publishing = recoded is not None
    store.ledger_plan(
        run_id,
        division,
        [
            (key, len(ups) + len(dels), _content(ups, dels, recoded) if recoded is not None else None)
            for key, ups, dels in planned
        ],
        sequence=sequence,
        direction=PUBLISH if publishing else OFFER,
    )
    for key, ups, dels in planned:
        entry = store.ledger_entry(key) or {}
        if entry.get("status") == ACKED:
            answer: Mapping[str, Any] = {
                "batch_id": entry["platform_batch_id"],
                "replayed": True,
                "results": entry["results"],
            }
        else:
            if before_send is not None:
                before_send()
            store.ledger_sent(key)
            answer = push(key, ups, dels)
            store.ledger_ack(key, answer, digests=digests if publishing else None)
        sent.batches.append(
            {
                "key": key,
                "batch_id": answer.get("batch_id"),
                "replayed": answer.get("replayed"),
                "size": len(ups) + len(dels),
            }
        )
        for item in answer["results"]:
            (sent.accepted if item["status"] == "accepted" else sent.rejected).append(item)
    return sent


def _content(ups: list[Mapping[str, Any]], dels: list[str], recoded: Mapping[str, str]) -> Batch:
    """What the ledger keeps of a publishing batch: its records, deletes and the re-codes it completes."""
    moves = [[recoded[r["task_code"]], r["task_code"]] for r in ups if r["task_code"] in recoded]
    return {"upserts": ups, "deletes": dels, "recoded": moves}


def readback_problems(
    expected: set[str],
    records: Iterable[Mapping[str, Any]],
    intended: Mapping[str, str],
    digest: Callable[[Mapping[str, Any]], str] = content_hash,
) -> list[str]:
    """How a list read back (``records``, read once as they come) differs from what was meant: ``expected``
    the codes it must hold exactly, ``intended`` the digests those just written must have. Only the records
    of ``intended`` are hashed (with ``digest``): of the others the code is all that is checked."""
    held: set[str] = set()
    wrong: list[str] = []
    for record in records:
        code = record["task_code"]
        held.add(code)
        if code in intended and digest(record) != intended[code]:
            wrong.append(code)
    problems = []
    if missing := sorted(expected - held):
        problems.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
    if extra := sorted(held - expected):
        problems.append(f"unexpected {len(extra)}: {', '.join(extra[:5])}")
    if wrong := sorted(set(wrong)):
        problems.append(f"different content {len(wrong)}: {', '.join(wrong[:5])}")
    return problems
