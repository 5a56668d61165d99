"""cross_province_sync: the nightly 跨省通办 service-item sync. The pipeline's table of contents.

All business logic lives in the ``tongban`` package (``include/``); each task here only turns Airflow
context (run id, params, Connections, object storage) into a call of one stage and returns that
stage's typed result (``tongban.results``), which Airflow keeps in XCom and hands to the next task.
Nothing heavy is imported or read at parse time.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import (
    AsyncCallback,
    BaseHook,
    DeadlineAlert,
    DeadlineReference,
    ObjectStoragePath,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    get_parsing_context,
    task,
    task_group,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException
from airflow.sdk.serde import allow_class

from tongban.results import (
    XCOM_RESULTS,
    Delivered,
    Fetched,
    LibraryChecked,
    Normalised,
    Offered,
    ProvinceChecked,
    Published,
    Reconciled,
    Reported,
    Settled,
    Summarised,
    Validated,
)

log = logging.getLogger(__name__)

# The tasks hand each other pydantic models (tongban.results), which Airflow's XCom serde stores as JSON under
# the class name; a class outside ``[core] allowed_deserialization_classes`` (default airflow.*) is read back
# only when allowed, here for every process that parses this file (each task's does, before its inputs are read).
for _result in XCOM_RESULTS:
    allow_class(_result)

# A task's own process parses this file first, before its task imports anything: whether the task code is already
# there is whether the process that forked it had imported it (tongban/preload.py, scripts/localenv.py), or else
# the task pays for the imports itself. `make celery-e2e` checks this line in a task log of every worker.
if get_parsing_context().task_id is not None:
    _missing = [m for m in ("great_expectations", "pandas", "tongban.pipeline") if m not in sys.modules]
    if _missing:
        log.info("task code not preloaded: this task process imports %s itself", ", ".join(_missing))
    else:
        log.info("task code preloaded: GX, pandas and the stages were imported before this task process started")

DOC_MD = """
### 跨省通办事项清单夜间同步 (cross-province service-item sync)

Every night at 02:00 Asia/Shanghai, for each partner region in the registry (two mapped task groups per
partner, shown by its division code, around one province-level task):

0. **partner.settle** claims the run's publish sequence for the partner (a run superseded by a newer one fails
   here and at every later publishing step) and settles the publish ledger rows earlier runs left unsettled
   against the platform, so the item store holds what the platform applied;
1. **partner.fetch** the partner's catalogue page by page; every raw response is archived first;
2. **partner.normalise** it to the canonical item model; unparseable or unmappable records are quarantined;
3. **partner.validate** the elements and 五级N同 inside the partner with the GX suite `expectations/items.json`;
4. **province_five_level**: 五级N同 across the partners of each province (`expectations/province.json`),
   once every partner's validation is done; items disagreeing with their province are rejected too;
5. **partner_publish.reconcile** the accepted items against what the provincial platform (省一体化平台) holds
   (skipped for a partner not validated this run);
6. **partner_publish.publish** the changes in idempotent batches, then read them back;
7. **partner_publish.report** to the partner: `$TONGBAN_HOME/reports/<run id>/<division>/report.{json,html}`.
8. **partner_publish.deliver** the report to the partner (checksummed, idempotent per run; `delivery.json`).

The other direction, 沅江's own items offered to the partners (`tongban.outbound`), runs beside it:
**outbound_library** (one task, from the start of the run) reads 沅江's library from the platform and
validates it (defects to `reports/<run id>/internal/`, never to a partner); **partner_publish.offer** reads
back what the partner has configured of our items, sends the difference (idempotent batches) and reads it
back again. The report of a partner waits for its publish and its offer, and shows both directions; a
failed offer fails neither the partner's publish nor its report, and a failed inbound side does not stop
its offer.

**summarise** writes `reports/<run id>/summary.json` and fails the run if any partner failed.
One partner's failure never stops the others. Params: `partners` (division codes; empty = all),
`dry_run` (reconcile, compare and report without pushing or offering), `full_resync`, and `confirm_removals`
(`["<division>@<run id>"]`: removals that the removal guard held in that run, confirmed by a person).
"""


def _on_task_failure(context: Any) -> None:
    """Failure alerts through the `tongban_alerts` (webhook) and/or `tongban_alerts_smtp` (mail) Connections
    (plugins/tongban_alerts.py, imported when alerting only: parsing stays light); without either, one log line."""
    from tongban_alerts import notify_task_failure

    notify_task_failure(context)


def _on_dag_failure(context: Any) -> None:
    from tongban_alerts import notify_dag_failure

    notify_dag_failure(context)


DEFAULT_ARGS = {
    "owner": "tongban",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": _on_task_failure,
}


# 06:00 Asia/Shanghai is the promise: the nightly run (logical date 02:00, the cron's time in the DAG's time
# zone) has published by then. The alert fires at logical date + 4 h, in the triggerer; the run is stopped only
# at DAGRUN_TIMEOUT (counted from its start, which is never before its logical date), an hour later, so the
# alert always comes first and leaves the operator time to act (runbook) before the run is killed at 07:00.
DEADLINE_AFTER = timedelta(hours=4)
DAGRUN_TIMEOUT = DEADLINE_AFTER + timedelta(hours=1)
DEADLINE = DeadlineAlert(
    reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
    interval=DEADLINE_AFTER,
    callback=AsyncCallback("tongban_alerts.deadline_missed"),
    name="nightly sync not finished by 06:00",
)
# TONGBAN_DEADLINE_ALERT=off leaves it out; the embedded deployment (scripts/localenv.py: `make run`, `make ui`,
# the tests) sets it, for `airflow dags test` and for every process that shares its metadata database with one:
# Airflow 3.3.2's Dag.test() builds its scheduler Dag from the in-memory serialisation, whose deadlines
# are not yet the UUIDs that DagRun.update_state looks up when the run succeeds ("'dict' object has no
# attribute 'hex'"); and `dags test` has no triggerer to run the alert anyway.
_DEADLINE_ON = os.environ.get("TONGBAN_DEADLINE_ALERT", "on") != "off"


def _storage() -> ObjectStoragePath:
    from tongban.config import storage_url

    return ObjectStoragePath(storage_url(), conn_id=os.environ.get("TONGBAN_STORAGE_CONN_ID"))


HELD_LABEL = "暂缓发布"  # marks a held-back partner's publishing tasks in the grid (their rendered map index)


def _partner(division: str, *, after_check: bool = False) -> Any:
    """The registry entry of ``division``; labels the mapped task instance in the UI. ``after_check``: a task
    of the publishing group, whose label also says when the partner is held back this run (its tasks succeed,
    so the grid would otherwise show a held-back partner like any other)."""
    from tongban import layout, pipeline
    from tongban.registry import load_registry

    partner = load_registry().partner(division)
    label = f"{partner.division} {partner.name}"
    if after_check:
        run = _run_dir(division)
        if (run / layout.VALIDATION).exists() and pipeline.held_back(run):
            label += f" · {HELD_LABEL}"
    get_current_context()["partner_label"] = label  # type: ignore[literal-required]
    return partner


def _partner_connection(partner: Any) -> Any:
    """The partner's Connection. A missing one, or one without the secret every request is signed with, fails the
    task at once, naming it (no retry adds it; Airflow only says the conn_id "isn't defined"): a partner just added
    to the registry whose Connection was forgotten or given no password."""
    needs = "(type http, host = its base URL, password = its secret; docs/runbook.md, Adding a partner)"
    try:
        conn = BaseHook.get_connection(partner.conn_id)
    except AirflowNotFoundException as exc:
        raise AirflowFailException(
            f"partner {partner.division} ({partner.name}): no Airflow Connection {partner.conn_id} {needs}"
        ) from exc
    if not conn.password:
        raise AirflowFailException(
            f"partner {partner.division} ({partner.name}): Airflow Connection {partner.conn_id} has no password {needs}"
        )
    return conn


def _run_dir(division: str) -> ObjectStoragePath:
    from tongban.layout import run_dir

    return run_dir(_storage(), get_current_context()["run_id"], division)


def _platform() -> Any:
    from tongban.connections import PLATFORM_CONN_ID, base_url, platform_signature
    from tongban.publish import PlatformClient

    conn = BaseHook.get_connection(PLATFORM_CONN_ID)
    return PlatformClient(
        base_url(conn.host, conn.port, conn.schema), conn.password, platform_signature(conn.extra_dejson)
    )


def _connection_uri(conn_id: str) -> str | None:
    """The Connection's URI as the task's secrets backends give it, ``None`` when it is not defined."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id).get_uri()
    except AirflowNotFoundException:
        return None


def _store() -> Any:
    """The item store (tongban.store.store_url: the `tongban_db` Connection, else TONGBAN_DB_URL or SQLite)."""
    from tongban.store import store_url
    from tongban.store.repo import ItemStore

    return ItemStore(store_url(_connection_uri))


def _confirmed_run(division: str) -> str | None:
    """The run whose held removals of ``division`` the param ``confirm_removals`` confirms (checked by plan)."""
    from tongban.guard import parse_confirmations

    return parse_confirmations(get_current_context()["params"].get("confirm_removals", [])).get(division)


@contextmanager
def _stale_fails() -> Iterator[None]:
    """A run superseded for the partner by a newer one fails at once, naming the newer run (no retries:
    it stays superseded). Airflow 3 tasks cannot set another run's state, so a stale run is stopped by
    its own tasks, which check the partner's publish sequence in the item store."""
    from tongban.publish import StaleRun

    try:
        yield
    except StaleRun as exc:
        raise AirflowFailException(str(exc)) from exc


def _planned(divisions: list[str] | None) -> list[str]:
    """The partners ``plan`` chose, for the tasks that run whatever became of it (``ALL_DONE``): none when plan
    failed (a bad param), and then they fail at once, without retries, sending the operator to plan's reason."""
    if divisions is None:
        raise AirflowFailException("plan failed, so nothing of this run was done: its log says why (a bad param)")
    return divisions


PARTNER_TASK = {"map_index_template": "{{ partner_label }}"}
PARTNER_API_POOL = "partner_api"  # tongban.pools.PARTNER_API_POOL; one pool for all (see tongban/pools.py)


@dag(
    dag_id="cross_province_sync",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=DAGRUN_TIMEOUT,
    on_failure_callback=_on_dag_failure,
    deadline=DEADLINE if _DEADLINE_ON else None,
    tags=["tongban", "跨省通办", "nightly"],
    doc_md=DOC_MD,
    params={
        "partners": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^\d{6}$"},
            description="Division codes to sync; empty = every partner in the registry",
        ),
        "dry_run": Param(False, type="boolean", description="Reconcile and report, push nothing"),
        "full_resync": Param(
            False,
            type="boolean",
            description="Pull every partner's whole catalogue (detects removals) instead of the changes since the "
            "last published pull; a full pull also happens by itself every partner's full_resync_days (7)",
        ),
        "confirm_removals": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^\d{6}@\S+$"},
            description="Removals held by the removal guard that a person confirms, as <division>@<run id that "
            "held them>: that partner is pulled in full and exactly the held items still missing are removed",
        ),
    },
)
def cross_province_sync() -> None:
    @task
    def plan() -> list[str]:
        """The partners of this run: the registry, or the subset given in params."""
        from tongban.guard import check_confirmations
        from tongban.registry import load_registry

        registry = load_registry()
        params = get_current_context()["params"]
        wanted = params["partners"]
        try:
            for division in wanted:
                registry.partner(division)  # raises naming an unknown division
            divisions = [p.division for p in registry.partners if not wanted or p.division in wanted]
            check_confirmations(_storage(), params.get("confirm_removals", []), divisions)
        except (KeyError, ValueError) as exc:  # a bad param: no retry makes it right
            raise AirflowFailException(str(exc).strip("'\"")) from exc
        return divisions

    @task(**PARTNER_TASK)
    def settle(division: str) -> Settled:
        """Claim this run's publish sequence and settle earlier runs' unsettled batches (tongban.publish.settle)."""
        from tongban import pipeline

        run_id = get_current_context()["run_id"]
        with _stale_fails():
            return pipeline.settle_partner(_partner(division), _run_dir(division), _platform(), _store(), run_id)

    @task(**PARTNER_TASK, pool=PARTNER_API_POOL)
    def fetch(division: str) -> Fetched:
        """Pull one partner (full or incremental) into the raw archive. Retried by Airflow only when the
        partner was unreachable; a refusal that will not change by itself fails the task at once. A superseded
        run pulls nothing (its fetch cleared on its own): had the run published, its new pull would count as the
        partner's latest and the next incremental pull would start after changes nobody published."""
        from tongban import pipeline
        from tongban.connections import base_url
        from tongban.ingest import FetchError
        from tongban.publish import check_fence

        partner = _partner(division)
        conn = _partner_connection(partner)
        context = get_current_context()
        with _stale_fails():
            check_fence(_store(), division, context["run_id"])
        try:
            return pipeline.fetch(
                partner,
                base_url(conn.host, conn.port, conn.schema),
                _run_dir(division),
                secret=conn.password,
                root=_storage(),
                run_id=context["run_id"],
                full_resync=bool(context["params"].get("full_resync", False)) or bool(_confirmed_run(division)),
            )
        except FetchError as exc:
            if not exc.retryable:
                raise AirflowFailException(str(exc)) from exc
            raise

    @task(**PARTNER_TASK)
    def normalise(fetched: Fetched) -> Normalised:
        from tongban import pipeline

        return pipeline.normalise_partner(_partner(fetched.partner), _run_dir(fetched.partner))

    @task(**PARTNER_TASK)
    def validate(normalised: Normalised) -> Validated:
        from tongban import pipeline

        return pipeline.validate(_partner(normalised.partner), _run_dir(normalised.partner), _store())

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def province_five_level(divisions: list[str] | None, validated: Any) -> list[ProvinceChecked]:
        """五级N同 across the partners of each province (tongban.province), once every partner's own validation
        is done, whatever became of it: a partner not validated is compared through its published items.
        Returns one small summary per planned partner, in plan order (what the publishing group maps over)."""
        from tongban import province
        from tongban.guard import parse_confirmations
        from tongban.layout import RUNS
        from tongban.registry import load_registry

        registry, context = load_registry(), get_current_context()
        # the validate tasks that succeeded; Airflow hands over a lone mapped instance's value itself, not in a list
        summaries = [validated] if isinstance(validated, Validated) else [v for v in validated or [] if v]
        return province.check_run(
            [registry.partner(d) for d in _planned(divisions)],
            registry.partners,
            {v.partner: v for v in summaries},
            _storage() / RUNS / context["run_id"],
            _store(),
            parse_confirmations(context["params"].get("confirm_removals", [])),  # the guard lets these removals go
        )

    @task(**PARTNER_TASK)
    def reconcile(checked: ProvinceChecked) -> Reconciled:
        from tongban import pipeline

        division = checked.partner
        partner = _partner(division, after_check=checked.validated)
        if not checked.validated:
            raise AirflowSkipException(
                f"partner {division} was not validated this run (see its partner.* tasks): nothing to reconcile, "
                "publish or report; its previous list stays on the platform"
            )
        run_id = get_current_context()["run_id"]
        with _stale_fails():
            return pipeline.reconcile_partner(
                partner, _run_dir(division), _platform(), _store(), run_id, confirmed_run=_confirmed_run(division)
            )

    @task(**PARTNER_TASK)
    def publish(reconciled: Reconciled) -> Published:
        from tongban import pipeline

        division = reconciled.partner
        context = get_current_context()
        with _stale_fails():
            return pipeline.publish_partner(
                _partner(division, after_check=True),
                _run_dir(division),
                _platform(),
                _store(),
                context["run_id"],
                context["params"]["dry_run"],
            )

    @task
    def outbound_library() -> LibraryChecked:
        """沅江's own item library from the platform, validated like a partner's catalogue (GX, 五级N同 in Hunan):
        what we offer each partner this run; our defects go to reports/<run id>/internal/, never to a partner."""
        from tongban.outbound import stages
        from tongban.registry import load_registry

        return stages.library(load_registry(), _platform(), _storage(), get_current_context()["run_id"], _store())

    @task(**PARTNER_TASK, pool=PARTNER_API_POOL)
    def offer(checked: ProvinceChecked) -> Offered:
        """Bring what the partner has configured of our items in line with our offer (tongban.outbound), whatever
        became of its inbound side. Retried by Airflow only when the partner's endpoint was unavailable (the
        ledger replays what was sent); after that the next run tries again."""
        from tongban.connections import base_url
        from tongban.outbound import stages
        from tongban.registry import load_registry

        division = checked.partner
        partner = _partner(division)
        conn = _partner_connection(partner)
        context = get_current_context()
        with _stale_fails():
            summary = stages.offer_partner(
                partner,
                load_registry(),
                _storage(),
                context["run_id"],
                base_url(conn.host, conn.port, conn.schema),
                _store(),
                secret=conn.password,
                dry_run=bool(context["params"]["dry_run"]),
            )
        if summary.status != "ok":
            message = (
                f"partner {division}: our items not brought in line this run ({summary.error}); its report says "
                "so, its inbound side is not affected, the next run tries again"
            )
            raise RuntimeError(message) if summary.retryable else AirflowFailException(message)
        return summary

    @task(**PARTNER_TASK, trigger_rule=TriggerRule.ALL_DONE)
    def report(checked: ProvinceChecked) -> Reported:
        """Both directions of the partner in one report, once its publish and its offer are done, whatever became of
        the offer; without this run's publish (not validated, or failed) there is no report."""
        from tongban import layout, pipeline
        from tongban.layout import report_dir

        division = checked.partner
        context = get_current_context()
        run_id = context["run_id"]
        if not (_run_dir(division) / layout.PUBLISH).exists():
            raise AirflowSkipException(f"partner {division} was not published this run: no report (see its tasks)")
        with _stale_fails():
            summary = pipeline.write_report(
                _partner(division, after_check=True),
                _run_dir(division),
                report_dir(_storage(), run_id, division),
                run_id,
                _store(),
            )
        if summary.notices:  # held back, or removals held: a person must know, though nothing failed
            from tongban_alerts import notify_partner

            for notice in summary.notices:
                notify_partner(context, notice.event, notice.text)
        return summary

    @task(**PARTNER_TASK, pool=PARTNER_API_POOL)
    def deliver(reported: Reported) -> Delivered:
        """Send the partner its report of this run (checksummed, idempotent per run; see tongban.delivery)."""
        from tongban import pipeline
        from tongban.connections import base_url
        from tongban.delivery import DeliveryError
        from tongban.layout import report_dir

        division = reported.partner
        partner = _partner(division, after_check=True)
        conn = _partner_connection(partner)
        run_id = get_current_context()["run_id"]
        try:
            return pipeline.deliver(
                partner,
                _run_dir(division),
                report_dir(_storage(), run_id, division),
                run_id,
                base_url(conn.host, conn.port, conn.schema),
                secret=conn.password,
                root=_storage(),
                store=_store(),
            )
        except DeliveryError as exc:
            if not exc.retryable:
                raise AirflowFailException(str(exc)) from exc
            raise

    @task_group(group_id="partner")
    def validate_partner(division: str) -> Any:
        fetched = fetch(division)
        settle(division) >> fetched
        return validate(normalise(fetched))

    @task_group(group_id="partner_publish")
    def publish_partner(checked: ProvinceChecked) -> None:
        reported = report(checked)
        [publish(reconcile(checked)), library >> offer(checked)] >> reported
        deliver(reported)

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def summarise(divisions: list[str] | None) -> Summarised:
        """Run summary over all partners; fails the run (after writing it) if a partner failed."""
        from tongban import report as reports
        from tongban.layout import REPORTS
        from tongban.registry import load_registry

        registry = load_registry()
        run_id = get_current_context()["run_id"]
        summary = reports.summarise(_storage() / REPORTS, run_id, [registry.partner(d) for d in _planned(divisions)])
        print(reports.summary_table(summary))
        if summary.held_back:
            log.warning(
                "HELD BACK this run (critical-failure rate above the threshold; the platform keeps their "
                "previous lists): %s",
                ", ".join(summary.held_back),
            )
        if summary.removals_held:
            log.warning(
                "REMOVALS HELD for confirmation (a pull would have removed too many published items; the platform "
                "keeps them; see the reports and docs/runbook.md): %s",
                ", ".join(summary.removals_held),
            )
        if summary.undelivered:
            log.error("reports NOT delivered to: %s (see each partner's deliver task)", ", ".join(summary.undelivered))
        if summary.outbound_failed:
            log.error(
                "our items NOT brought in line at: %s (see each partner's offer task; retried next run)",
                ", ".join(summary.outbound_failed),
            )
        if summary.failed or summary.undelivered or summary.outbound_failed:
            raise AirflowFailException(
                f"partners failed this run (no report written): {', '.join(summary.failed) or 'none'}; "
                f"reports not delivered: {', '.join(summary.undelivered) or 'none'}; our items not brought in line "
                f"at: {', '.join(summary.outbound_failed) or 'none'}. Failed partners' previous "
                "lists stay on the platform. See each partner's task logs."
            )
        return Summarised(run_id=run_id, totals=summary.totals, failed=summary.failed)

    divisions = plan()
    library = outbound_library()  # the outbound side's own root: it waits for nothing of the inbound side
    validated = validate_partner.expand(division=divisions)
    checked = province_five_level(divisions, validated)
    publish_partner.expand(checked=checked) >> summarise(divisions)


cross_province_sync()
