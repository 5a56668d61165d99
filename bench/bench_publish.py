"""Benchmark: publishing to the provincial platform in batches, against item by item.

    .venv/bin/python bench/bench_publish.py              # 1,000 items
    .venv/bin/python bench/bench_publish.py --items 2976

The items are the partner simulator's generated catalogues (the registry's partners in order, the
first ``--items`` of them), each partner's items published to its own region. Both runs go through
`tongban.publish.publish` as the pipeline calls it, against a real platform simulator (a subprocess
on loopback HTTP with its SQLite state) and a fresh SQLite item store holding the ledger, read-back
included; each run gets a platform of its own. Batched uses the pipeline's batch size; item by item
uses batches of one. Both must leave the platform holding exactly the published items.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tongban.model import content_hash
from tongban.publish import PlatformClient, publish
from tongban.reconcile import Reconciliation
from tongban.registry import load_registry
from tongban.simulators.catalogue import generate_catalogue
from tongban.simulators.credentials import platform_credentials
from tongban.simulators.launcher import running_simulator
from tongban.store.repo import ItemStore

BATCH_SIZE = 500  # tongban.publish.publish's default, the pipeline's


def catalogue(limit: int) -> dict[str, list[dict[str, Any]]]:
    registry = load_registry()
    by_region: dict[str, list[dict[str, Any]]] = defaultdict(list)
    taken = 0
    for partner in registry.partners:
        for record in generate_catalogue(registry, partner)[: limit - taken]:
            by_region[partner.division].append(dict(record))
            taken += 1
    return dict(by_region)


def run(items: dict[str, list[dict[str, Any]]], batch_size: int, folder: Path) -> float:
    with running_simulator("platform", folder / "platform") as url:
        client = PlatformClient(url, **platform_credentials(folder / "platform"))
        store = ItemStore(f"sqlite:///{folder / 'items.db'}")
        start = time.perf_counter()
        for region, records in items.items():
            publish(client, region, "bench", Reconciliation(added=records), store, batch_size=batch_size)
        seconds = time.perf_counter() - start
        for region, records in items.items():  # publish's read-back checked this; the bench checks again
            held = {r["task_code"]: content_hash(r) for r in client.items(region)}
            if held != {r["task_code"]: content_hash(r) for r in records}:
                raise SystemExit(f"FAIL: region {region} does not hold exactly the published items")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    items = catalogue(args.items)
    total = sum(len(r) for r in items.values())
    print(f"publishing {total:,} items of {len(items)} regions to the platform simulator")
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        batched = run(items, BATCH_SIZE, Path(tmp) / "batched")
        single = run(items, 1, Path(tmp) / "single")
    print(f"\n{'mode':<28}{'seconds':>9}{'items/s':>10}")
    for label, seconds in ((f"batches of {BATCH_SIZE}", batched), ("item by item", single)):
        print(f"{label:<28}{seconds:>9.2f}{total / seconds:>10.0f}")
    ratio = single / batched
    print(f"\nbatched is {ratio:.1f}x faster than item by item (target >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
