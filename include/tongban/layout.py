"""The layout of the storage root: every file and folder a run writes, which stage writes it, who reads it.

This is the one place the names are spelled; every stage, the replay, the trace, the UI plugin, the
scripts and the benchmarks import them from here. It imports nothing but ``upath``, so the UI and the
DAG file can read it without loading the stages. Stage names below are the DAG's tasks
(``tongban.pipeline`` holds the functions)::

    <root>/
      archive/<sha256[:2]>/<sha256>.gz     every raw answer, content-addressed (tongban.archive)
      state/<division>/watermark.json      the partner's pulls (tongban.watermark)
      runs/<run id>/
        <division>/                        one partner in one run: run_dir()
          raw/manifest.json, fetch.json, settle.json, items.jsonl, quarantine.jsonl, …
        <home division>/offer.json, library_check.json      沅江's own library (tongban.outbound)
        provinces/<province>/five_level.json, gx_validation_result.json
      reports/<run id>/
        summary.json                       the run over all partners
        <division>/report.{json,html,xlsx}, delivery.json   report_dir()
        internal/library_check.{json,html}, gx_validation_result.json   for 沅江's data engineers
      replays/<run id>/<division>/         python -m tongban.replay (never the run's own folder)

**The ``own_*`` convention.** ``validate`` writes the partner's own outcome twice: ``own_rejected.jsonl`` /
``own_warnings.jsonl`` (kept as validated) and ``rejected.jsonl`` / ``warnings.jsonl`` (the same rows).
The province check (``tongban.province.apply_findings``) rewrites ``rejected.jsonl`` and ``warnings.jsonl``
from the ``own_*`` files plus its findings, so it can run again with the same result; the stages after it
read only ``rejected.jsonl`` / ``warnings.jsonl``. A new validation deletes ``province_check.json``.

**Typed records.** A line of ``quarantine.jsonl`` is a ``tongban.normalise.Quarantined`` (its problems
``normalise.Problem``), one of ``rejected.jsonl``, ``warnings.jsonl`` and the ``own_*`` files a
``tongban.validation.outcome.FlaggedRecord`` (its findings ``outcome.Finding``); the changes in
``reconciliation.json`` are ``tongban.reconcile.ElementChange``; ``duplicates.jsonl`` and ``normalised.jsonl``
hold ``normalise.Duplicate`` and ``normalise.NormalisedValue``. The partner's report shows these same
types; ``storage.read_jsonl(path, Type)`` reads a file's lines as them. ``fetch.json``, ``publish.json``,
``outbound.json``, ``delivery.json`` and ``summary.json`` are read as ``tongban.files`` types (the fields their
readers use) with ``storage.read_json(path, Type)``, which names the file when one lacks a field.
"""

from __future__ import annotations

from upath import UPath

# --- folders of the storage root -------------------------------------------------------------------
ARCHIVE = "archive"  # written by fetch (each answer) and deliver (each report); read by normalise, replay
STATE = "state"  # state/<division>/: pull state across runs
RUNS = "runs"  # runs/<run id>/<division>/: the stages' working files
REPORTS = "reports"  # reports/<run id>/<division>/: what partners and people read
REPLAYS = "replays"  # replays/<run id>/<division>/: written by tongban.replay, compared with the run's own

# --- state/<division>/ -----------------------------------------------------------------------------
WATERMARK = "watermark.json"  # fetch records each good pull; read by fetch (plan), province, reconcile (guard), summary

# --- runs/<run id>/<division>/: one partner's run folder, in stage order -----------------------------
SETTLE = "settle.json"  # settle: earlier runs' unsettled batches and how they were closed; read by people (runbook)
RAW = "raw"  # fetch's folder
MANIFEST = "manifest.json"  # raw/: fetch, every request with its answer's sha256; read by normalise, report, replay
FETCH = "fetch.json"  # fetch: mode, counts, status; read by validate, province, reconcile, report, trace, replay,
#                       and a later run's confirm_removals (tongban.guard, plan: when the pull that held them ran)
ITEMS = "items.jsonl"  # normalise: canonical items; read by validate, report (what a full pull held), trace
QUARANTINE = "quarantine.jsonl"  # normalise: records not parsed or mapped; read by validate, reconcile, report, trace
DUPLICATES = "duplicates.jsonl"  # normalise: exact copies counted once; read by report
NORMALISED = "normalised.jsonl"  # normalise: codes that arrived full-width or with invisible characters; read by report
ACCEPTED = "accepted.jsonl"  # validate: records that passed the partner's own checks; read by province, reconcile
OWN_REJECTED = "own_rejected.jsonl"  # validate: its rejections (the own_* convention above); read by province
OWN_WARNINGS = "own_warnings.jsonl"  # validate: its warnings; read by province
REJECTED = "rejected.jsonl"  # validate, rewritten by province: every rejection; read by reconcile, report, trace
WARNINGS = "warnings.jsonl"  # validate, rewritten by province: every warning; read by report, trace
VALIDATION = "validation.json"  # validate: summary and hold-back rate; read by reconcile (held back?), report, trace
GX_RESULT = "gx_validation_result.json"  # validate, province (provinces/<code>/), library (internal/): GX's result;
#                                            the UI renders its Data Docs page from it
PROVINCE_CHECK = "province_check.json"  # province (validate deletes it): findings and rate; read by reconcile, report
RECONCILIATION = "reconciliation.json"  # reconcile: the changes; read by publish, report, trace, and a later run's
#                                         confirm_removals (tongban.guard: plan, province, reconcile)
PUBLISH = "publish.json"  # publish: batches and outcome; read by report, deliver (dry run?), watermark, trace
OUTBOUND = "outbound.json"  # offer: our items offered to this partner this run; read by report, summary

# --- runs/<run id>/<home division>/: 沅江's own library (tongban.outbound) ----------------------------
OFFER = "offer.json"  # library: what we offer, item by item, with modes and regions; read by offer
LIBRARY_CHECK = "library_check.json"  # library: the check's data, here and in reports/<run id>/internal/
LIBRARY_CHECK_HTML = "library_check.html"  # library: the internal report's page, in reports/<run id>/internal/

# --- runs/<run id>/provinces/<province>/: the province check's own files -----------------------------
PROVINCES = "provinces"
FIVE_LEVEL = "five_level.json"  # province: what was compared and every difference found; read by the UI

# --- reports/<run id>/ -----------------------------------------------------------------------------
REPORT_JSON = "report.json"  # report: the partner's report; read by deliver, summary, the UI, scripts
REPORT_HTML = "report.html"  # report; served by the UI
REPORT_XLSX = "report.xlsx"  # report; served by the UI
DELIVERY = "delivery.json"  # deliver: every delivery of the report; read by summary, trace
SUMMARY = "summary.json"  # reports/<run id>/: summary, the run over all partners; read by the UI, the next
#                           run's summary (outbound trend), scripts
INTERNAL = "internal"  # reports/<run id>/internal/: library, for 沅江's data engineers only, never delivered


def run_dir(root: UPath, run_id: str, division: str) -> UPath:
    """One partner's working files in one run: ``<root>/runs/<run id>/<division>``."""
    return root / RUNS / run_id / division


def report_dir(root: UPath, run_id: str, division: str) -> UPath:
    """One partner's report of one run: ``<root>/reports/<run id>/<division>``."""
    return root / REPORTS / run_id / division


def root_of(run: UPath) -> UPath:
    """The storage root of a partner's run folder (``<root>/runs/<run id>/<division>``)."""
    return run.parent.parent.parent


def province_dir(root: UPath, run_id: str, province: str) -> UPath:
    """The province check's files of one province in one run: ``<root>/runs/<run id>/provinces/<province>``."""
    return root / RUNS / run_id / PROVINCES / province


def watermark_path(root: UPath, division: str) -> UPath:
    """A partner's pull state: ``<root>/state/<division>/watermark.json``."""
    return root / STATE / division / WATERMARK


def replay_dir(root: UPath, run_id: str, division: str) -> UPath:
    """Where ``tongban.replay`` re-normalises a partner of a run: ``<root>/replays/<run id>/<division>``."""
    return root / REPLAYS / run_id / division
