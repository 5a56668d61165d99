"""Airflow plugin of the 跨省通办 sync: the sync page in the UI's nav, and a report link on partner tasks.

Plugins load in every Airflow process (scheduler, DAG processor, workers, API server); this module only
declares. The FastAPI app (``tongban_ui.app``) is built, and FastAPI and the API server's security
module imported, when Airflow asks for ``fastapi_apps``, which only the API server does.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from tongban_ui.links import PartnerReportLink
from tongban_ui.redirect import SlashRedirect
from tongban_ui.settings import URL_PREFIX, base_path


class TongbanPlugin(AirflowPlugin):
    name = "tongban"
    external_views = [  # noqa: RUF012 (Airflow reads these class attributes)
        {
            "name": "跨省通办同步",
            "href": f"{base_path()}{URL_PREFIX}/",
            "url_route": "tongban",  # shown inside the Airflow UI at /plugin/tongban
            "destination": "nav",
            "category": "browse",
        }
    ]
    global_operator_extra_links = [PartnerReportLink()]  # noqa: RUF012
    # /tongban without the slash: the mounted app never sees it (plain ASGI, imports nothing)
    fastapi_root_middlewares = [  # noqa: RUF012
        {"name": "tongban_slash", "middleware": SlashRedirect, "args": [], "kwargs": {"prefix": URL_PREFIX}}
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        from tongban_ui.app import create_app

        return [{"name": "tongban", "app": create_app(), "url_prefix": URL_PREFIX}]
