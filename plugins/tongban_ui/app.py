"""The plugin's web app, mounted by Airflow's API server under ``/tongban``: built by ``create_app``.

Every route needs an Airflow login allowed to read the sync DAG's runs (Airflow's own
``requires_access_dag`` dependency: the ``_token`` cookie the UI sets, or an ``Authorization: Bearer``
JWT from ``POST /auth/token``). A browser without a login is sent to Airflow's login page; anything
else gets 401/403. Every response carries a Content-Security-Policy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from upath import UPath

from tongban.layout import (
    FIVE_LEVEL,
    GX_RESULT,
    INTERNAL,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_XLSX,
    REPORTS,
    RUNS,
)
from tongban_ui.data_docs import DATA_DOCS_PAGE, Unreadable, gx_page, localise
from tongban_ui.pages import CSP, error_page, overview_page, run_page, trace_page
from tongban_ui.settings import Settings
from tongban_ui.store import (
    GxStats,
    NotFound,
    ReportStore,
    latest_by_partner,
)

log = logging.getLogger(__name__)

# Files written by the pipeline: no script may run in them, and they may only be framed by Airflow.
ARTIFACT_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox allow-same-origin allow-popups"
)
JSON_CSP = "default-src 'none'; frame-ancestors 'self'; sandbox"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FILES = {  # name -> (area, media type, policy)
    REPORT_HTML: (REPORTS, "text/html; charset=utf-8", ARTIFACT_CSP),
    REPORT_JSON: (REPORTS, "application/json", JSON_CSP),
    REPORT_XLSX: (REPORTS, XLSX, JSON_CSP),
    GX_RESULT: (RUNS, "application/json", JSON_CSP),
}
PROVINCE_FILES = (FIVE_LEVEL, GX_RESULT)  # the province check's results (runs/<run>/provinces/<code>/)
MESSAGES = {
    401: "未登录或登录已过期：请先登录 Airflow。",
    403: "无权查看：需要读取该 DAG 运行记录的权限。",
    404: "未找到：运行编号、地区代码或文件名无效，或该文件不存在。",
    405: "不支持此请求方法。",
}


def create_app(settings: Settings | None = None) -> FastAPI:
    # Airflow's API-server modules: imported here, so only the API server pays for them.
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from airflow.sdk import ObjectStoragePath

    from tongban.registry import divisions, load_registry

    settings = settings or Settings.from_airflow()
    registry = load_registry()
    names = {p.division: p.name for p in registry.partners} | divisions()["provinces"]
    store = ReportStore(
        ObjectStoragePath(settings.storage_url, conn_id=settings.storage_conn_id),
        divisions={p.division for p in registry.partners},
        provinces={p.province for p in registry.partners},
    )
    can_read_runs = requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=settings.dag_id)
    app = FastAPI(
        title="tongban",
        dependencies=[Depends(can_read_runs)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,  # no redirect for a path that is not valid: only /runs/<valid id> -> …/
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            log.exception("tongban UI: %s failed", request.url.path)
            response = HTMLResponse(error_page(500, "服务器内部错误，详见 API server 日志。"), status_code=500)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        message = MESSAGES.get(exc.status_code, str(exc.detail))
        return HTMLResponse(error_page(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        return HTMLResponse(error_page(404, MESSAGES[404]), status_code=404)

    def connection_uri(conn_id: str) -> str | None:
        """The Connection's URI from Airflow's secrets backends, ``None`` when it is not defined."""
        from airflow.exceptions import AirflowNotFoundException
        from airflow.models.connection import Connection

        try:
            return Connection.get_connection_from_secrets(conn_id).get_uri()
        except AirflowNotFoundException:
            return None

    def item_store() -> Any:
        """The item store the DAG writes (tongban.store.store_url, asking Airflow for the Connection)."""
        from tongban.store import store_url
        from tongban.store.repo import ItemStore

        return ItemStore(store_url(connection_uri))

    def checks(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], GxStats | None]:
        return {k: store.gx_stats(*k) for k in keys}

    @app.get("/", response_class=HTMLResponse)
    def overview() -> HTMLResponse:
        runs = store.recent_runs(settings.trend_runs)
        partners = latest_by_partner(runs)
        gx = checks((p.run_id, p.division) for p in partners)
        return HTMLResponse(overview_page(settings.dag_id, runs, partners, gx, settings.timezone))

    @app.get("/runs/{run_id}")
    def run_without_slash(run_id: str) -> RedirectResponse:
        store.path(REPORTS, run_id)  # the id must be valid; the page's relative links need the slash
        return RedirectResponse(f"{quote(run_id, safe='')}/", status_code=307)

    @app.get("/runs/{run_id}/", response_class=HTMLResponse)
    def run(run_id: str) -> HTMLResponse:
        summary = store.summary(run_id)
        divisions = [p.partner for p in summary.partners]
        gx = checks((run_id, d) for d in divisions)
        # the reports say why a partner was held back and list its 待整改 items
        reports = {d: store.report(run_id, d) for d in divisions}
        library = registry.home["name"] if store.exists(store.library_result(run_id)) else None
        page = run_page(summary, gx, settings.timezone, reports, store.province_results(run_id), library)
        return HTMLResponse(page)

    @app.get("/trace", response_class=HTMLResponse)
    def trace(q: str = "") -> HTMLResponse:
        from tongban.trace import trace as find

        result = find(store.root, item_store(), q, runs=settings.trace_runs) if q.strip() else None
        return HTMLResponse(trace_page(q, result, settings.timezone))

    def data_docs(result: UPath, title: str, home: str) -> Response:
        """GX's Data Docs page of a stored result, rendered now (or taken from the cache); an error page linking
        back to the run page (``home``) when there is no result or it cannot be read."""
        try:
            page = localise(gx_page(store.read(result)), title, home)
        except NotFound:  # the check failed or did not run: no result stored
            return HTMLResponse(error_page(404, MESSAGES[404], home), status_code=404)
        except Unreadable as exc:
            log.warning("tongban UI: %s cannot be read: %r", result, exc.__cause__)
            message = f"无法读取 GX 校验结果文件 {store.name(result)}：{exc}。"
            return HTMLResponse(error_page(500, message, home), status_code=500)
        return Response(page, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": ARTIFACT_CSP})

    # before the routes of the files: their {name} would take DATA_DOCS_PAGE
    @app.get(f"/runs/{{run_id}}/provinces/{{province}}/{DATA_DOCS_PAGE}")
    def province_data_docs(run_id: str, province: str) -> Response:
        result = store.province_path(run_id, province, [GX_RESULT])
        return data_docs(result, f"{names.get(province, '')}（{province}）省内五级N同比对 · 运行 {run_id}", "../../")

    @app.get(f"/runs/{{run_id}}/{INTERNAL}/{DATA_DOCS_PAGE}")
    def library_data_docs(run_id: str) -> Response:
        title = f"{registry.home['name']}事项库校验（内部） · 运行 {run_id}"
        return data_docs(store.library_result(run_id), title, "../")

    @app.get(f"/runs/{{run_id}}/{{division}}/{DATA_DOCS_PAGE}")
    def partner_data_docs(run_id: str, division: str) -> Response:
        result = store.path(RUNS, run_id, division, [GX_RESULT])
        return data_docs(result, f"{names.get(division, '')}（{division}） · 运行 {run_id}", "../")

    @app.get("/runs/{run_id}/provinces/{province}/{name}")
    def province_file(run_id: str, province: str, name: str) -> Response:
        if name not in PROVINCE_FILES:
            raise NotFound(name)
        body = store.read(store.province_path(run_id, province, [name]))
        return Response(body, media_type="application/json", headers={"Content-Security-Policy": JSON_CSP})

    @app.get("/runs/{run_id}/{division}/{name}")
    def run_file(run_id: str, division: str, name: str) -> Response:
        if name not in FILES:
            raise NotFound(name)
        area, media_type, policy = FILES[name]
        body = store.read(store.path(area, run_id, division, [name]))
        headers = {"Content-Security-Policy": policy}
        if name == REPORT_XLSX:
            headers["Content-Disposition"] = f'attachment; filename="{division}-{REPORT_XLSX}"'
        return Response(body, media_type=media_type, headers=headers)

    return app
