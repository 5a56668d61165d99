"""Replay a run's normalisation offline, from the raw archive only (no partner is called).

``replay(root, run_id, partner)`` copies the run's fetch manifest to
``<root>/replays/<run id>/<division>/`` and normalises from the archived answers there, so the
original run folder is untouched; the items, quarantine and duplicates it writes must equal the
run's own. ``python -m tongban.replay RUN_ID [DIVISION …]`` does it for the configured storage and
says, per partner, whether the replay matches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from upath import UPath

from tongban import layout, pipeline
from tongban.layout import RUNS, replay_dir, run_dir
from tongban.registry import Partner, Registry, load_registry
from tongban.results import Normalised
from tongban.storage import read_json, write_json

REPLAYED_FILES = (layout.ITEMS, layout.QUARANTINE, layout.DUPLICATES)  # normalise's files a replay must reproduce


def replay(root: UPath, run_id: str, partner: Partner, out: UPath | None = None) -> Normalised:
    """Re-normalise ``partner`` of ``run_id`` from the archive into ``out``; returns the stage's result."""
    source = run_dir(root, run_id, partner.division)
    target = out if out is not None else replay_dir(root, run_id, partner.division)
    manifest = source / layout.RAW / layout.MANIFEST
    if not manifest.exists():
        raise FileNotFoundError(f"run {run_id} has no fetch manifest for {partner.division} ({manifest})")
    write_json(target / layout.RAW / layout.MANIFEST, read_json(manifest))
    if (source / layout.FETCH).exists():
        write_json(target / layout.FETCH, read_json(source / layout.FETCH))
    return pipeline.normalise_partner(partner, target, root=root)


def differences(root: UPath, run_id: str, division: str, out: UPath | None = None) -> list[str]:
    """Files of the replay that differ from the run's own (empty: the replay is identical)."""
    source = run_dir(root, run_id, division)
    target = out if out is not None else replay_dir(root, run_id, division)
    return [
        name
        for name in REPLAYED_FILES
        if (source / name).exists() and (source / name).read_bytes() != (target / name).read_bytes()
    ]


def run_partners(root: UPath, run_id: str, registry: Registry) -> list[str]:
    """The partners of a run folder that have a fetch manifest to replay. A DAG run's folder also holds
    the province check's ``provinces/`` and may hold partners no longer in the registry: both skipped."""
    folder = root / RUNS / run_id
    if not folder.exists():
        raise FileNotFoundError(f"no run folder {folder}")
    known = {p.division for p in registry.partners}
    return sorted(p.name for p in folder.iterdir() if p.name in known and (p / layout.RAW / layout.MANIFEST).exists())


def main(argv: Sequence[str] | None = None) -> int:
    from tongban.config import storage_url

    parser = argparse.ArgumentParser(prog="python -m tongban.replay", description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("divisions", nargs="*", help="partners to replay (default: every partner of the run)")
    args = parser.parse_args(argv)
    root = UPath(storage_url())
    registry = load_registry()
    try:
        return _replay_all(root, registry, args.run_id, args.divisions)
    except (FileNotFoundError, KeyError) as exc:  # a run or partner not there: one line, where it was looked for
        reason = exc.args[0] if exc.args else exc
        print(f"python -m tongban.replay: {reason} (storage root {root}: TONGBAN_STORAGE_URL or TONGBAN_HOME)")
        return 1


def _replay_all(root: UPath, registry: Registry, run_id: str, divisions: list[str]) -> int:
    divisions = divisions or run_partners(root, run_id, registry)
    if not divisions:
        print(f"run {run_id}: no partner folder with a fetch manifest under {root / RUNS / run_id}")
        return 1
    failed = 0
    for division in divisions:
        summary = replay(root, run_id, registry.partner(division))
        diff = differences(root, run_id, division)
        failed += bool(diff)
        print(f"{division}: {summary} — {'differs: ' + ', '.join(diff) if diff else 'identical to the run'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
