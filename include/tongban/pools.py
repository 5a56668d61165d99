"""The Airflow pool that caps concurrent partner API calls (imported by the DAG at parse time: keep it light).

Airflow fixes a mapped task's pool when the DAG is parsed (every map index of ``partner.fetch`` runs
in the same pool), so a pool per province cannot be chosen per partner. One pool, ``partner_api``,
caps the fetches in flight; it is sized ``SLOTS_PER_PROVINCE`` per province of the registry, so with
the default of 2 no more than 2 × provinces partner calls run at once. ``scripts.localenv.ensure_pools``
creates it (idempotently) for ``make run``, ``make ui`` and the tests; a deployment creates it once
(``airflow pools set partner_api <slots> "<description>"``).
"""

from __future__ import annotations

from collections.abc import Iterable

PARTNER_API_POOL = "partner_api"
SLOTS_PER_PROVINCE = 2
DESCRIPTION = "跨省通办: concurrent partner catalogue pulls ({per} per partner province, {provinces} provinces)"


def partner_api_slots(divisions: Iterable[str], per_province: int = SLOTS_PER_PROVINCE) -> int:
    provinces = {d[:2] for d in divisions}
    return max(1, per_province * len(provinces))
