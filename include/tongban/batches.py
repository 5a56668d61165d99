"""Idempotent batches, both directions: items pushed to the provincial platform (``tongban.publish``) and
沅江's items offered to a partner (``tongban.outbound``).

Each batch carries a key derived from run, region and the batch's content; it is noted in the ledger
(the item store's ``publish_ledger``) before it is sent and completed with the receiver's per-item answer.
A batch the ledger holds as acknowledged is not sent again; a pending one (sent, then a crash before the
answer was recorded) is sent again under the same key, and the receiver answers with what it applied the
first time. After sending, the caller reads the receiver's list back and checks it with
:func:`readback_problems`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tongban.store.repo import ItemStore

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
) -> Sent:
    """Send upserts (mappings with ``task_code``; ``digests`` their content by task code) and deletes in
    batches through ``push``, each noted in the ledger first. ``sent`` collects the batches already done
    when ``push`` raises part-way (pass one in to keep them)."""
    sent = sent if sent is not None else Sent()
    ops: list[tuple[str, Any]] = [("upsert", r) for r in upserts] + [("delete", c) for c in deletes]
    for batch_no, start in enumerate(range(0, len(ops), batch_size), start=1):
        chunk = ops[start : start + batch_size]
        ups = [r for op, r in chunk if op == "upsert"]
        dels = [c for op, c in chunk if op == "delete"]
        key = batch_key(run_id, division, ((r["task_code"], digests[r["task_code"]]) for r in ups), dels, prefix)
        entry = store.ledger_entry(key)
        if entry and entry["status"] == "acked":
            answer: Mapping[str, Any] = {
                "batch_id": entry["platform_batch_id"],
                "replayed": True,
                "results": entry["results"],
            }
        else:
            store.ledger_pending(key, run_id, division, batch_no, len(chunk))
            answer = push(key, ups, dels)
            store.ledger_ack(key, answer)
        sent.batches.append(
            {"key": key, "batch_id": answer.get("batch_id"), "replayed": answer.get("replayed"), "size": len(chunk)}
        )
        for item in answer["results"]:
            (sent.accepted if item["status"] == "accepted" else sent.rejected).append(item)
    return sent


def readback_problems(expected: set[str], actual: Mapping[str, str], intended: Mapping[str, str]) -> list[str]:
    """How a list read back (task code -> content digest) differs from what was meant: ``expected`` the codes
    it must hold exactly, ``intended`` the digests those just written must have."""
    problems = []
    if missing := sorted(expected - actual.keys()):
        problems.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
    if extra := sorted(actual.keys() - expected):
        problems.append(f"unexpected {len(extra)}: {', '.join(extra[:5])}")
    if wrong := sorted(code for code, h in intended.items() if code in actual and actual[code] != h):
        problems.append(f"different content {len(wrong)}: {', '.join(wrong[:5])}")
    return problems
