"""The plugin's settings, read from Airflow config section ``[tongban]`` (``AIRFLOW__TONGBAN__*``).

Each falls back to what the pipeline itself uses, so a deployment that configures nothing sees the
reports the DAG writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from airflow.configuration import conf

from tongban.layout import REPORT_HTML

URL_PREFIX = "/tongban"
SECTION = "tongban"


@dataclass(frozen=True)
class Settings:
    storage_url: str  # root of the object store: reports/ and runs/ live under it
    storage_conn_id: str | None  # Airflow Connection for a remote store (s3://…), like the DAG's
    dag_id: str
    trend_runs: int  # how many recent runs the overview and the trends cover
    timezone: str  # every time on the pages is shown in this one zone, named on each page
    trace_runs: int = 30  # how many of the newest runs the item trace reads

    @classmethod
    def from_airflow(cls) -> Settings:
        from tongban.config import storage_url  # plain Python: TONGBAN_STORAGE_URL or $TONGBAN_HOME

        return cls(
            storage_url=conf.get(SECTION, "storage_url", fallback="") or storage_url(),
            storage_conn_id=conf.get(SECTION, "storage_conn_id", fallback="")
            or os.environ.get("TONGBAN_STORAGE_CONN_ID")
            or None,
            dag_id=conf.get(SECTION, "dag_id", fallback="cross_province_sync"),
            trend_runs=conf.getint(SECTION, "trend_runs", fallback=10),
            timezone=conf.get("core", "default_timezone", fallback="utc"),
            trace_runs=conf.getint(SECTION, "trace_runs", fallback=30),
        )


def base_path() -> str:
    """Path of the API server behind a proxy (``[api] base_url``), '' when served at the root."""
    return urlsplit(conf.get("api", "base_url", fallback="")).path.rstrip("/")


def report_url(run_id: str, division: str) -> str:
    """Absolute path of one partner's HTML report for one run, as the plugin serves it."""
    return f"{base_path()}{URL_PREFIX}/runs/{quote(run_id, safe='')}/{quote(division, safe='')}/{REPORT_HTML}"
