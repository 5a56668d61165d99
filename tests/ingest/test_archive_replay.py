"""Nothing lost: every answer archived content-addressed before parsing; a run replays offline."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from upath import UPath

from tongban import layout, pipeline
from tongban.archive import Archive, ArchiveError
from tongban.layout import run_dir
from tongban.registry import Registry, load_registry
from tongban.replay import differences, replay
from tongban.simulators.credentials import partner_secrets
from tongban.simulators.partners import create_partner_app
from tongban.storage import read_json, read_jsonl

from ..simulators.conftest import serving
from .conftest import CSV, FAST, NATIONAL, PINYIN

DIVISIONS = (NATIONAL, PINYIN, CSV)


def test_archive_is_content_addressed_deterministic_and_verified(tmp_path: Path) -> None:
    archive = Archive(UPath(tmp_path))
    body = "第一页".encode() * 100
    digest = archive.put(body)
    assert digest == hashlib.sha256(body).hexdigest()
    path = archive.path(digest)
    assert path.parent.name == digest[:2] and path.name == f"{digest}.gz"
    stored = path.read_bytes()
    assert archive.put(body) == digest and path.read_bytes() == stored  # idempotent, same bytes
    assert gzip.decompress(stored) == body and len(stored) < len(body)
    assert archive.get(digest) == body
    path.write_bytes(gzip.compress(b"something else", mtime=0))
    with pytest.raises(ArchiveError, match="does not match"):
        archive.get(digest)
    assert archive.put(body) == digest and archive.get(digest) == body  # a damaged copy is rewritten
    with pytest.raises(ArchiveError, match="not in the archive"):
        archive.get("0" * 64)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> UPath:
    """Three partners (one per format) pulled and normalised, faults included; then the simulator stops."""
    registry: Registry = load_registry()
    state = tmp_path_factory.mktemp("sim")
    root = UPath(tmp_path_factory.mktemp("store"))
    with serving(create_partner_app(registry, state)) as url:
        secrets = partner_secrets(state, registry)
        for division in DIVISIONS:
            faults = [{"kind": "server_error", "times": 1}, {"kind": "duplicate_page", "page": 2}]
            requests.put(f"{url}/admin/partners/{division}/faults", json=faults, timeout=10).raise_for_status()
            partner = registry.partner(division)
            run = run_dir(root, "run-1", division)
            settings = replace(FAST, page_size=60)
            base = f"{url}/partners/{division}"
            pipeline.fetch(partner, base, run, secret=secrets[division], root=root, run_id="run-1", settings=settings)
            pipeline.normalise_partner(partner, run)
    return root  # the simulator is stopped from here on


@pytest.mark.parametrize("division", DIVISIONS)
def test_the_run_folder_holds_no_raw_pages_only_the_manifest(finished_run: UPath, division: str) -> None:
    raw = run_dir(finished_run, "run-1", division) / layout.RAW
    assert sorted(p.name for p in raw.iterdir()) == [layout.MANIFEST]
    manifest = read_json(raw / layout.MANIFEST)
    archive = Archive(finished_run)
    assert {e["outcome"] for e in manifest} == {"retry", "ok"}
    for entry in manifest:
        assert {"url", "params", "headers", "status", "requested_at", "sha256", "size"} <= set(entry)
        assert len(archive.get(entry["sha256"])) == entry["size"]  # every answer, the 503 too


@pytest.mark.parametrize("division", DIVISIONS)
def test_replay_with_the_simulator_stopped_gives_the_same_normalised_data(finished_run: UPath, division: str) -> None:
    registry = load_registry()
    summary = replay(finished_run, "run-1", registry.partner(division))
    assert differences(finished_run, "run-1", division) == []
    run = run_dir(finished_run, "run-1", division)
    assert summary.items == len(list(read_jsonl(run / layout.ITEMS))) > 0
    assert summary.duplicates == len(list(read_jsonl(run / layout.DUPLICATES))) > 0
    out = finished_run / "replays" / "run-1" / division
    assert (out / layout.ITEMS).read_bytes() == (run / layout.ITEMS).read_bytes()


def test_replay_fails_loudly_when_an_archived_answer_is_gone(finished_run: UPath, tmp_path: Path) -> None:
    registry = load_registry()
    manifest = read_json(run_dir(finished_run, "run-1", NATIONAL) / layout.RAW / layout.MANIFEST)
    victim = Archive(finished_run).path(next(e["sha256"] for e in manifest if e["outcome"] == "ok"))
    saved = victim.read_bytes()
    victim.unlink()
    try:
        with pytest.raises(ArchiveError, match="not in the archive"):
            replay(finished_run, "run-1", registry.partner(NATIONAL), out=UPath(tmp_path / "out"))
    finally:
        victim.write_bytes(saved)


def test_replay_cli(finished_run: UPath, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tongban import replay as replay_mod

    monkeypatch.setenv("TONGBAN_STORAGE_URL", str(finished_run))
    assert replay_mod.main(["run-1"]) == 0
    out = capsys.readouterr().out
    assert out.count("identical to the run") == len(DIVISIONS)


def test_replay_cli_skips_what_is_not_a_partner_of_the_registry(
    finished_run: UPath, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DAG run's folder also holds the province check's ``provinces/`` (issue 12.5: replay stopped with
    ``KeyError: 'no partner provinces in registry'``); a folder of a partner since removed is skipped too."""
    from tongban import replay as replay_mod
    from tongban.layout import PROVINCES

    (finished_run / "runs" / "run-1" / PROVINCES / "440000").mkdir(parents=True, exist_ok=True)
    (finished_run / "runs" / "run-1" / "999999").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("TONGBAN_STORAGE_URL", str(finished_run))
    assert replay_mod.main(["run-1"]) == 0
    out = capsys.readouterr().out
    assert out.count("identical to the run") == len(DIVISIONS) and "provinces" not in out


def test_replay_cli_names_a_missing_run_or_partner_in_one_line(
    finished_run: UPath, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run id mistyped, a partner the run did not pull, a partner not in the registry, or TONGBAN_HOME not the
    one meant (the default is ./var of the working directory): one line saying so and where it looked, no
    traceback."""
    from tongban import replay as replay_mod

    monkeypatch.setenv("TONGBAN_STORAGE_URL", str(finished_run))
    for argv, said in [
        (["no-such-run"], "no run folder"),
        (["run-1", "370700"], "has no fetch manifest for 370700"),
        (["run-1", "999999"], "no partner 999999 in registry"),
    ]:
        assert replay_mod.main(argv) == 1
        [line] = capsys.readouterr().out.splitlines()
        assert said in line and f"storage root {finished_run}" in line
