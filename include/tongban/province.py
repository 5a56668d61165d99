"""The province stage: 五级N同 across the partners of one province, between validation and reconciliation.

Each partner's own validation (``pipeline.validate``) compares the levels of a 基本编码 inside that
partner only. This stage compares them across the partners of a province: the platform must not end
up holding, for one 基本编码, a 受理条件 in 广州 and another in 湛江.

What is compared, per province, is what the platform will hold after the run, one partner at a time:

- a partner validated this run (and not held back by its own checks) brings its accepted records,
  which are *judged*: the check can reject them;
- it also brings, as *context* (compared, never judged), its published items this run does not
  replace: all of them after an incremental pull; after a full pull, those its own checks held this run
  and those whose removal the removal guard will hold (``pipeline.removals_to_hold``, ``tongban.guard``):
  they stay on the platform, with the content the item store holds, though the partner did not send them;
- a partner not validated this run (fetch failed, not in the run's subset) or held back whole brings
  its published items (the item store) as context.

Who is at fault when partners disagree on an element (``expectations/province.json``; DOMAIN.md only
says the elements are the same at all five levels): the value at the group's most senior level
(省 before 市 before 区县 …) held by the most partners is the reference, as inside a partner the most
senior level is; items holding another value are at fault. A tie at that level (say two cities with
one item each) leaves no reference: every judged item of the group is at fault, each told which
partner it disagrees with, because neither version can be put on the platform as the province's.
Items already on the platform vote like delivered ones, so a partner changing an element alone is
held until the others follow (a change rolled out on different nights is published by the full pull
that sees it everywhere, or by a ``full_resync`` run).

Memory stays bounded: records are read one partner at a time and reduced at once to 8-byte element
hashes (``tongban.hashing``) plus the few columns messages name, and only 基本编码 held by two
partners or more go to GX. Findings flow into each partner's outcome files (``pipeline``): the
rejected and warned records are rewritten from the partner's own outcome plus this stage's findings,
so the stage can run again for the same run with the same result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from upath import UPath

from tongban import layout, pipeline
from tongban.model import ELEMENTS
from tongban.registry import Partner, divisions
from tongban.results import ProvinceCheck, ProvinceChecked, Validated
from tongban.storage import read_jsonl, write_json, write_jsonl
from tongban.store.repo import ItemStore
from tongban.validation.outcome import Finding, FlaggedRecord

if TYPE_CHECKING:
    import pandas as pd

IDENTITY = ("partner", "partner_name", "task_code", "catalog_code", "name", "level")
JUDGED = "_judged"

_log = logging.getLogger(__name__)


def check_run(
    planned: Sequence[Partner],
    registry_partners: Sequence[Partner],
    validated: Mapping[str, Validated],
    runs: UPath,
    store: ItemStore,
    confirmed: Mapping[str, str] | None = None,
) -> list[ProvinceChecked]:
    """The province check of one run: every province of the ``planned`` partners, one after the other.

    ``validated``: division -> the validate stage's summary, for the partners validated this run;
    ``runs``: the run's folder (``<root>/runs/<run id>``); ``registry_partners``: every partner (the
    ones outside this run are compared through their published items); ``confirmed``: division -> the
    run whose held removals the DAG param ``confirm_removals`` confirms (the removal guard lets them go).
    Returns one small summary per planned partner, in order (``validated`` false for a partner whose
    validation did not succeed).
    """
    done: dict[str, ProvinceChecked] = {}
    for province in sorted({p.province for p in planned}):
        members = sorted((p for p in registry_partners if p.province == province), key=lambda p: p.division)
        done.update(check_province(province, members, validated, runs, store, confirmed or {}))
    not_validated = (ProvinceChecked(partner=p.division, province=p.province, validated=False) for p in planned)
    return [done.get(checked.partner, checked) for checked in not_validated]


def check_province(
    province: str,
    members: Sequence[Partner],
    validated: Mapping[str, Validated],
    runs: UPath,
    store: ItemStore,
    confirmed: Mapping[str, str] | None = None,
) -> dict[str, ProvinceChecked]:
    """Compare the partners of one province; apply the findings to each validated partner's outcome."""
    import pandas as pd

    frames: list[pd.DataFrame] = []
    roles: dict[str, dict[str, Any]] = {}
    for partner in members:
        division = partner.division
        judged, context, role = _rows(
            partner, validated.get(division), runs / division, store, (confirmed or {}).get(division)
        )
        frames += [_hash_rows(judged, partner, judged=True), _hash_rows(context, partner, judged=False)]
        roles[division] = role | {"judged": len(judged), "context": len(context)}
    frame = _shared_groups(pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True))
    out = runs / layout.PROVINCES / province
    findings: list[Finding] = []
    if frame[JUDGED].any():
        from tongban.validation import validate_across_partners

        outcome = validate_across_partners(frame, province)
        write_json(out / layout.GX_RESULT, outcome.gx_result)
        findings = outcome.findings
    by_partner: dict[str, list[Finding]] = {}
    for finding in findings:
        by_partner.setdefault(str(frame.at[finding.row, "partner"]), []).append(finding)
    write_json(out / layout.FIVE_LEVEL, _province_record(province, roles, frame, findings))
    summaries = {}
    for division, summary in validated.items():
        if division in roles:
            check = apply_findings(runs / division, summary, by_partner.get(division, []))
            summaries[division] = ProvinceChecked(
                partner=division,
                province=province,
                validated=True,
                province_rejected=len(check.rejected_codes),
                province_warned=len(check.warned_codes),
                critical_rate=check.critical_rate,
                held_back=check.held_back,
                compared=int((frame["partner"] == division).sum()),
            )
    _log.info(
        "province %s: %d partners, %d items in shared 基本编码, %d findings",
        province,
        len(members),
        len(frame),
        len(findings),
    )
    return summaries


def _rows(
    partner: Partner, summary: Validated | None, run: UPath, store: ItemStore, confirmed_run: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(judged records, context records, role) of one partner, as the platform will hold them after the run.

    The role is ``{"role": "judged" | "held_back" | "not_validated"}``, plus ``removals_held`` (the published items
    a judged full pull did not deliver whose removal the removal guard will hold: compared as context)."""
    published = store.current(partner.division)
    if summary is None or summary.held_back:
        role = "held_back" if summary is not None else "not_validated"
        return [], [published[code] for code in sorted(published)], {"role": role}
    accepted = list(read_jsonl(run / layout.ACCEPTED))
    kept = set(published) - {r["task_code"] for r in accepted}
    guarded: list[str] = []
    if kept and pipeline.is_full_pull(run):  # a full pull removes the rest, unless the removal guard holds it
        own = _own_held_codes(run)
        guarded = pipeline.removals_to_hold(
            partner.division, run, published, accepted, own, confirmed_run=confirmed_run
        )
        kept &= own | set(guarded)
    return accepted, [published[code] for code in sorted(kept)], {"role": "judged", "removals_held": len(guarded)}


def _own_held_codes(run: UPath) -> set[str]:
    """实施编码 the partner's own checks held this run (the platform keeps its version of them)."""
    codes = {r["record"]["task_code"] for r in read_jsonl(run / layout.OWN_REJECTED)}
    codes |= {q["task_code"] for q in read_jsonl(run / layout.QUARANTINE) if q.get("task_code")}
    return codes


def _hash_rows(records: Sequence[Mapping[str, Any]], partner: Partner, *, judged: bool) -> pd.DataFrame:
    """The records reduced to what the comparison needs: identity columns and one hash per element."""
    import pandas as pd

    from tongban.hashing import element_hash_frame
    from tongban.validation.derived import HASH_PREFIX

    fields = list(dict.fromkeys(f for e in ELEMENTS for f in e.fields))
    # object columns keep each value's own type: a column with a None must not turn 15 into 15.0
    values = pd.DataFrame({f: pd.Series([r.get(f) for r in records], dtype=object) for f in fields})
    hashes = element_hash_frame(values, ELEMENTS).add_prefix(HASH_PREFIX)
    identity = pd.DataFrame(
        {
            "partner": partner.division,
            "partner_name": partner.name,
            **{f: pd.Series([r.get(f) for r in records], dtype=object) for f in IDENTITY[2:]},
            JUDGED: judged,
        },
        index=hashes.index,
    )
    return pd.concat([identity, hashes], axis=1)


def _shared_groups(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the 基本编码 held by two partners or more with at least one judged row, in a stable order."""
    by_code = frame.groupby("catalog_code", sort=False)
    keep = (by_code["partner"].transform("nunique") >= 2) & by_code[JUDGED].transform("any")
    ordered = frame[keep].sort_values(
        ["catalog_code", "partner", JUDGED, "task_code"], ascending=[True, True, False, True]
    )
    return ordered.reset_index(drop=True)


def _province_record(
    province: str, roles: Mapping[str, Mapping[str, Any]], frame: pd.DataFrame, findings: Iterable[Finding]
) -> dict[str, Any]:
    """The province check's own record: who took part how, and every finding with its partner."""
    return {
        "province": province,
        "province_name": divisions()["provinces"].get(province, province),
        "partners": dict(roles),
        "compared": {"items": len(frame), "catalog_codes": int(frame["catalog_code"].nunique())},
        "findings": [{"partner": str(frame.at[f.row, "partner"]), **asdict(_finding_record(f))} for f in findings],
    }


def _finding_record(finding: Finding) -> Finding:
    """A finding as the partner's outcome files hold it (no row: it indexes the province frame)."""
    return replace(finding, row=None)


def apply_findings(run: UPath, summary: Validated, findings: Sequence[Finding]) -> ProvinceCheck:
    """Merge the province check's findings on one partner into its outcome files; idempotent.

    REJECTED and WARNINGS are rewritten from the partner's own outcome (OWN_*, ``tongban.layout``) plus ``findings``
    (critical ones reject an accepted record, warnings are added to it); PROVINCE_CHECK records the
    findings, the rejected codes (``pipeline.accepted_records`` leaves them out) and the critical-failure
    rate counted with them, which can hold the partner back (``pipeline.held_back``).
    """
    own_rejected = list(read_jsonl(run / layout.OWN_REJECTED, FlaggedRecord))
    own_warned = {w.record["task_code"]: w for w in read_jsonl(run / layout.OWN_WARNINGS, FlaggedRecord)}
    per_code: dict[str, list[Finding]] = {}
    for finding in findings:
        per_code.setdefault(finding.task_code, []).append(_finding_record(finding))
    critical = {code for code, fs in per_code.items() if any(f.severity == "critical" for f in fs)}
    rejected, warned = list(own_rejected), []
    if per_code:
        for record in read_jsonl(run / layout.ACCEPTED):
            code = record["task_code"]
            earlier = own_warned[code].findings if code in own_warned else []
            if code in critical:
                rejected.append(FlaggedRecord(record, [*earlier, *per_code[code]]))
            elif code in per_code or code in own_warned:
                warned.append(FlaggedRecord(record, [*earlier, *per_code.get(code, [])]))
    else:
        warned = list(own_warned.values())
    write_jsonl(run / layout.REJECTED, rejected)
    write_jsonl(run / layout.WARNINGS, warned)
    rate = pipeline.hold_back_rate(len(rejected) + summary.unidentified, summary.catalogue)
    check = ProvinceCheck(
        partner=summary.partner,
        validated_held_back=summary.held_back,
        findings=len(findings),
        rejected_codes=sorted(critical),
        warned_codes=sorted(set(per_code) - critical),
        rejected=len(rejected),
        records=summary.records,
        catalogue=summary.catalogue,
        **rate.model_dump() | {"held_back": summary.held_back or rate.held_back},
        by_code=per_code,
    )
    write_json(run / layout.PROVINCE_CHECK, check)
    return check
