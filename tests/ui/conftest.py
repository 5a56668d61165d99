"""A real Airflow API server with the tongban plugin, over a TONGBAN_HOME holding two finished runs.

The runs are written by the pipeline's own report code (``tongban.report.build/write/summarise``), so
summary.json, report.json and report.html have exactly the shape a real run leaves. The newer run has a
failed partner, a partner whose name is markup, and items named ``<script>…`` and ``=HYPERLINK(…)``.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from upath import UPath

from scripts.localenv import REPO, airflow, airflow_env
from tests.conftest import make_record
from tongban import layout, pipeline, report
from tongban import outstanding as outstanding_mod
from tongban.files import PublishFile, SummaryFile
from tongban.reconcile import Reconciliation
from tongban.registry import Partner, load_registry
from tongban.storage import write_json, write_jsonl
from tongban.store.repo import ItemStore

sys.path.insert(0, str(REPO / "plugins"))  # as Airflow does for plugins/: the unit tests import tongban_ui

OLD_RUN = "scheduled__2026-11-26T18:00:00+00:00"
NEW_RUN = "manual__2026-11-27T09:30:00.123456+00:00"
EVIL_NAME = '<script>alert("名")</script>=HYPERLINK("http://x","y")'
EVIL_ITEM = "<script>alert(1)</script>"
FORMULA_ITEM = '=HYPERLINK("http://x","y")'
SECRET = "TOP-SECRET-OUTSIDE-REPORTS"
CHROMIUM = "/usr/bin/chromium"
MISSING = {"field": "task_code", "wire_field": "task_code", "reason": "缺少实施编码，无法识别事项"}


@dataclass
class Spec:
    """What one partner's run looked like."""

    fetched: int
    quarantined: int
    rejected: list[str]  # item names
    added: list[str]
    unchanged: int = 0
    name: str | None = None  # override the registry name
    held_back: bool = False  # the whole list held back (its accepted items are not published)
    delivery: str = "delivered"  # the report's delivery status (delivery.json)
    full: bool = True
    first: int = 1000  # 基本编码 number of its first rejected item (codes follow from it)


def _items(partner: Partner, names: list[str], start: int) -> list[dict[str, Any]]:
    return [
        make_record(partner=partner.division, name=name, catalog_code=f"{start + i:012d}")
        for i, name in enumerate(names)
    ]


def _write_partner(root: UPath, run_id: str, partner: Partner, spec: Spec) -> Partner:
    """The partner's run folder (the stages' files the item trace reads), its 待整改 list in the item store
    (tongban.outstanding + ItemStore, as the report stage does) and its report, delivery and GX result."""
    partner = partner.model_copy(update={"name": spec.name}) if spec.name else partner
    rejected = [
        {
            "record": record,
            "findings": [
                {
                    "row": i,
                    "task_code": record["task_code"],
                    "element": "code",
                    "expectation": "task_code_level",
                    "severity": "critical",
                    "message": f"实施编码「{record['task_code']}」第 19 位行使层级与事项的行使层级不一致",
                }
            ],
        }
        for i, record in enumerate(_items(partner, spec.rejected, spec.first))
    ]
    added = _items(partner, spec.added, 2000)
    unchanged = [r["task_code"] for r in _items(partner, ["未变事项"] * spec.unchanged, 3000)]
    quarantined = [
        {"position": f"第1页第{i + 1}条", "task_code": None, "problems": [MISSING]} for i in range(spec.quarantined)
    ]
    recon = Reconciliation(added=[] if spec.held_back else added, unchanged=unchanged, full=spec.full)
    recon.held_back = spec.held_back
    accepted = [] if spec.held_back else [{"task_code": a["task_code"], "op": "upsert"} for a in added]
    publish = PublishFile(dry_run=False, accepted=accepted, rejected=[])
    run = root / "runs" / run_id / partner.division
    write_json(run / layout.FETCH, {"mode": "full" if spec.full else "incremental", "status": "ok"})
    write_jsonl(run / layout.ITEMS, [{**r, "note": SECRET} for r in [*added, *(r["record"] for r in rejected)]])
    write_jsonl(run / layout.QUARANTINE, quarantined)
    write_jsonl(run / layout.REJECTED, rejected)
    write_jsonl(run / layout.WARNINGS, [])
    # the validation summary's hold-back numbers, as pipeline.validate writes them (the report quotes them)
    # (an incremental night's catalogue: the records pulled and the published items it did not carry, "unchanged")
    catalogue = spec.fetched + (0 if spec.full else spec.unchanged)
    check = {"partner": partner.division, "accepted": len(added), "rejected": len(rejected), "records": spec.fetched}
    check |= {"catalogue": catalogue} | pipeline.hold_back_rate(len(rejected), catalogue).model_dump()
    check |= {"held_back": spec.held_back}
    write_json(run / layout.VALIDATION, check)
    write_json(run / layout.RECONCILIATION, recon.as_dict())
    write_json(run / layout.PUBLISH, publish)
    items = ItemStore(f"sqlite:///{_home(root) / 'tongban.db'}")
    items.apply(run_id, partner.division, [] if spec.held_back else added, [])
    outstanding, resolved = items.track_outstanding(
        run_id,
        partner.division,
        outstanding_mod.problems(rejected, quarantined, []),
        outstanding_mod.fixed(recon, publish),
        {r["task_code"] for r in [*added, *(r["record"] for r in rejected)]} if spec.full else None,
    )
    built = report.build(
        partner=partner,
        run_id=run_id,
        fetched=spec.fetched,
        quarantined=quarantined,
        rejected=rejected,
        warnings=[],
        recon=recon,
        publish=publish,
        outstanding=outstanding,
        resolved=resolved,
        hold_back=check if spec.held_back else None,
        held_with_partner=added if spec.held_back else [],
    )
    out = root / "reports" / run_id / partner.division
    report.write(built, out)
    write_json(out / layout.DELIVERY, {"status": spec.delivery})
    write_json(run / layout.GX_RESULT, _gx_result(partner, added, [r["record"] for r in rejected]))
    return partner


def _gx_result(partner: Partner, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """GX's result of a real validation of the partner's records, as the validate stage stores it; the rejected
    ones without a legal basis, so GX's own check fails on their rows (after the accepted ones)."""
    from tongban.validation import validate_items

    records = [*accepted, *({**r, "legal_basis": ""} for r in rejected)]
    return validate_items(records, partner).gx_result


def _province_check(root: UPath, run_id: str) -> None:
    """The province check's GX result (and a five_level.json) of a real 五级N同 comparison: 广州 and 深圳 implement
    item 1 with different results, so GX's cross-partner expectation fails on both rows of it."""
    import pandas as pd

    from tests.validation.item_fixtures import CITY_USCC, SHENZHEN_USCC
    from tests.validation.item_fixtures import make_record as fixture_record
    from tongban import province
    from tongban.validation import validate_across_partners

    registry = load_registry()
    frames = [
        province._hash_rows(
            [fixture_record(1, uscc=uscc, partner=division, **changes), fixture_record(2, uscc=uscc, partner=division)],
            registry.partner(division),
            judged=True,
        )
        for division, uscc, changes in (
            ("440100", CITY_USCC, {}),
            ("440300", SHENZHEN_USCC, {"result": PROVINCE_RESULT}),
        )
    ]
    outcome = validate_across_partners(province._shared_groups(pd.concat(frames, ignore_index=True)), PROVINCE)
    out = layout.province_dir(root, run_id, PROVINCE)
    write_json(out / layout.GX_RESULT, outcome.gx_result)
    write_json(out / layout.FIVE_LEVEL, {"province": PROVINCE, "findings": []})


def _library_check(root: UPath, run_id: str) -> None:
    """The GX result of 沅江's library check (real GX: two items of 沅江, the second without a legal basis), where
    the library stage stores it: ``reports/<run>/internal/``."""
    from tests.validation.item_fixtures import HUNAN_USCC
    from tests.validation.item_fixtures import make_record as fixture_record
    from tongban.outbound.wire import home_region
    from tongban.validation import validate_items

    home = home_region(load_registry())
    records = [fixture_record(1, uscc=HUNAN_USCC, partner=home.division)]
    records.append(fixture_record(2, uscc=HUNAN_USCC, partner=home.division, legal_basis=""))
    write_json(
        root / layout.REPORTS / run_id / layout.INTERNAL / layout.GX_RESULT, validate_items(records, home).gx_result
    )


def _home(root: UPath) -> Path:
    return Path(root.path)


def write_run(home: Path, run_id: str, specs: dict[str, Spec | None]) -> SummaryFile:
    """A finished run: a report per partner with a spec, none (failed) for None; returns summary.json."""
    registry = load_registry()
    root = UPath(home.as_uri())
    partners = []
    for division, spec in specs.items():
        partner = registry.partner(division)
        partners.append(_write_partner(root, run_id, partner, spec) if spec else partner)
    return report.summarise(root / "reports", run_id, partners)


HELD = "440400"  # held back in the newer run: 4 of 10 rejected, 40% > 20%
# its name in the newer run: long (a registry of other partners may name a region with its zones), in its row and banner
LONG_NAME = "珠海市（横琴粤澳深度合作区、珠海经济技术开发区、珠海高新技术产业开发区、珠海保税区）"
UNDELIVERED = "440300"  # its newer report was not delivered
OUTSTANDING_ITEM = "退回事项甲"  # rejected by 440100 in the older run, still rejected (incremental) in the newer
PROVINCE = "440000"  # its check in the newer run: 深圳 differs from 广州 in one item's result
PROVINCE_RESULT = "失业登记证明（深圳版）"
LEAKY_PROVINCE = "370000"  # its GX result in the newer run is a symlink out of the storage root


def make_home(home: Path) -> dict[str, SummaryFile]:
    old = write_run(
        home,
        OLD_RUN,
        {
            "440100": Spec(12, 1, [OUTSTANDING_ITEM], [f"新增事项{i}" for i in range(10)]),
            "440300": Spec(8, 0, ["退回事项乙", "退回事项丙"], [f"新增事项{i}" for i in range(6)], first=1300),
            "370100": Spec(5, 0, [], [f"新增事项{i}" for i in range(5)]),
        },
    )
    old_summary = home / "reports" / OLD_RUN / "summary.json"
    os.utime(old_summary, (time.time() - 86400, time.time() - 86400))  # runs are ordered by when they finished
    for folder in (home / "runs" / OLD_RUN).iterdir():
        os.utime(folder, (time.time() - 86400, time.time() - 86400))
    new = write_run(
        home,
        NEW_RUN,
        {
            "440100": Spec(12, 2, [EVIL_ITEM, "退回事项丁"], [FORMULA_ITEM], unchanged=6, full=False, first=1100),
            "440300": Spec(
                9, 0, ["退回事项乙"], [f"新增事项{i}" for i in range(8)], name=EVIL_NAME, delivery="failed", first=1300
            ),
            HELD: Spec(
                10,
                0,
                [f"退回事项{i}" for i in range(4)],
                [f"新增事项{i}" for i in range(6)],
                held_back=True,
                first=1400,
                name=LONG_NAME,
            ),
            "370100": None,  # failed: no report
        },
    )
    _province_check(UPath(home.as_uri()), NEW_RUN)
    _library_check(UPath(home.as_uri()), NEW_RUN)
    (home / "runs" / NEW_RUN / "999999").mkdir()  # a folder named like a division outside the registry
    (home / "runs" / NEW_RUN / "999999" / layout.GX_RESULT).write_text("{}", encoding="utf-8")
    (home / "secret.txt").write_text(SECRET, encoding="utf-8")
    leak = home / "runs" / NEW_RUN / "provinces" / LEAKY_PROVINCE
    leak.mkdir(parents=True)
    (leak / layout.GX_RESULT).symlink_to(home / "secret.txt")  # a GX result by name, outside once resolved
    return {OLD_RUN: old, NEW_RUN: new}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    port: int
    token: str
    summaries: dict[str, SummaryFile]
    home: Path

    def get(
        self, path: str, *, auth: bool = True, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        """GET ``path`` byte for byte (no client-side ``..`` clean-up), with the UI's cookie when ``auth``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Cookie": f"_token={self.token}"} if auth else {}
        conn.request("GET", path, headers=sent | (headers or {}))
        answer = conn.getresponse()
        body = answer.read().decode("utf-8", errors="replace")
        conn.close()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body


def run_path(run_id: str, rest: str = "") -> str:
    return f"/tongban/runs/{quote(run_id, safe='')}/{rest}"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("tongban-ui")
    summaries = make_home(home)
    with pytest.MonkeyPatch.context() as mp:  # this deployment only: none of the caller's Airflow/tongban settings
        for key in list(os.environ):
            if key.startswith(("AIRFLOW", "TONGBAN_")):
                mp.delenv(key)
        env = airflow_env(home, {"AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32)})
    migrated = airflow("db", "migrate", env=env, capture_output=True)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    port = _free_port()
    log = (home / "api-server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "api-server", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(port, proc, home / "api-server.log")
        yield Server(base, port, _token(port), summaries, home)
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # its own process group: the server and its workers
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=3)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        log.close()


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"api-server exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v2/monitor/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"api-server not healthy after {timeout} s:\n{log.read_text()[-4000:]}")


def _token(port: int) -> str:
    """A JWT as the login page gets it: POST /auth/token with the simple auth manager's admin/admin."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"username": "admin", "password": "admin"})
    conn.request("POST", "/auth/token", body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    assert answer.status == 201, answer.read()
    return str(json.loads(answer.read())["access_token"])


class _Login(BaseHTTPRequestHandler):
    """Sets the ``_token`` cookie and sends the browser on, as Airflow's login page does.

    Chromium's command line cannot take a cookie. Cookies belong to a host, not a port, so the cookie
    this relay on 127.0.0.1 sets is the one the browser then sends to the API server on 127.0.0.1.
    """

    token = ""
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        if self.token:
            self.send_header("Set-Cookie", f"_token={self.token}; Path=/; HttpOnly; SameSite=Lax")
        self.send_header("Location", self.target + self.path)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Browser:
    """Debian's Chromium, headless, one fresh profile per page: returns the DOM after load."""

    server: Server
    profiles: Path

    def dom(self, path: str, *, logged_in: bool = True) -> str:
        return self._chromium(path, ["--dump-dom"], logged_in=logged_in)

    def screenshot(self, path: str, out: Path, *, height: int = 1100) -> Path:
        """A PNG of the page as a person sees it at 1,280 px wide (the width Airflow's frame should fit)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        self._chromium(path, [f"--screenshot={out}", f"--window-size=1280,{height}"])
        assert out.exists() and out.stat().st_size > 10_000, out
        return out

    def widths(self, path: str, *, width: int = 1280, height: int = 900) -> dict[str, int]:
        """The page's widths once loaded in a ``width`` px wide window: ``scrollWidth`` of the document,
        ``clientWidth`` (the viewport without a vertical scroll bar), ``innerWidth``, and ``right``, the right edge
        of the element reaching furthest (cut off when beyond the viewport, even inside an element that scrolls)."""
        return dict(
            self.evaluate(
                path,
                "{scrollWidth: document.documentElement.scrollWidth, "
                "clientWidth: document.documentElement.clientWidth, innerWidth: window.innerWidth, right: Math.ceil("
                "Array.from(document.body.querySelectorAll('*')).reduce((r, e) => Math.max(r, e.getBoundingClientRect()"
                ".right), 0))}",
                width=width,
                height=height,
            )
        )

    def evaluate(self, path: str, expression: str, *, width: int = 1280, height: int = 900) -> Any:
        """The value of a JavaScript ``expression`` (one JSON can hold) on the page once loaded in a ``width`` px
        wide window. Read over the DevTools protocol (``--remote-debugging-pipe``), which the pages' CSP does not
        govern: they run no script."""
        loaded = (
            f"location.origin === {json.dumps(self.server.base)} && document.readyState === 'complete' && "
            f"JSON.stringify({expression})"
        )
        with self._session(path, [f"--window-size={width},{height}"], devtools=True) as (url, _, devtools):
            assert devtools is not None
            [page] = [t for t in devtools.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            session = devtools.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            devtools.call("Page.navigate", session, url=url)  # through the login relay, to the server
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                value = devtools.call("Runtime.evaluate", session, expression=loaded)["result"].get("value")
                if value:
                    devtools.call("Browser.close")
                    return json.loads(value)
                time.sleep(0.2)
        raise AssertionError(f"{path} did not finish loading in 60 s")

    def _chromium(self, path: str, action: list[str], *, logged_in: bool = True) -> str:
        with self._session(path, action, logged_in=logged_in) as (_, chrome, _):
            out, err = chrome.communicate(timeout=60)
        assert chrome.returncode == 0, err[-3000:]
        return out

    @contextmanager
    def _session(
        self, path: str, action: list[str], *, logged_in: bool = True, devtools: bool = False
    ) -> Iterator[tuple[str, subprocess.Popen[str], _DevTools | None]]:
        """Chromium on ``path`` (its URL behind the login relay, the process, the protocol), with a fresh profile.
        With ``devtools``, the DevTools protocol on its file descriptors 3 (commands in) and 4 (answers out)
        (``--remote-debugging-pipe``); Chromium then stays on a blank page until told where to go."""
        handler = type(
            "Login", (_Login,), {"token": self.server.token if logged_in else "", "target": self.server.base}
        )
        relay = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        profile = self.profiles / secrets.token_hex(4)
        url = f"http://127.0.0.1:{relay.server_address[1]}{path}"
        (commands, command_end), (answer_end, answers) = os.pipe(), os.pipe()

        def at_3_and_4() -> None:  # in the child, before exec: the pipes' ends where Chromium expects them
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 5) for fd in (commands, answers)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        chrome = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--lang=zh-CN",
                f"--user-data-dir={profile}",
                *action,
                *(["--remote-debugging-pipe", "about:blank"] if devtools else [url]),
            ],
            stdout=subprocess.DEVNULL if devtools else subprocess.PIPE,  # nobody reads them while the protocol runs
            stderr=subprocess.DEVNULL if devtools else subprocess.PIPE,
            text=True,
            close_fds=not devtools,  # else Python closes 3 and 4 after at_3_and_4 (the pipes are not inherited)
            preexec_fn=at_3_and_4 if devtools else None,
        )
        os.close(commands)
        os.close(answers)
        protocol = _DevTools(command_end, answer_end) if devtools else None
        try:
            yield url, chrome, protocol
        finally:
            try:
                chrome.wait(timeout=30)
            except subprocess.TimeoutExpired:
                chrome.kill()
                chrome.wait()
            for fd in (command_end, answer_end):
                os.close(fd)
            relay.shutdown()
            relay.server_close()
            shutil.rmtree(profile, ignore_errors=True)


class _DevTools:
    """The DevTools protocol over Chromium's pipes: JSON messages, each ended by a NUL byte."""

    def __init__(self, send: int, receive: int) -> None:
        self._send, self._receive = send, receive
        self._next = 0
        self._buffer = b""

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._send, json.dumps(message).encode() + b"\0")
        while True:  # events and other answers are skipped
            while b"\0" not in self._buffer:
                chunk = os.read(self._receive, 65536)
                assert chunk, f"Chromium closed the DevTools pipe waiting for {method}"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next:
                assert "error" not in answer, (method, answer["error"])
                return dict(answer.get("result", {}))


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI: `make chromium` (mk/ui.mk) installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} not installed (Debian package `chromium`; `make chromium` installs it)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> Browser:
    return Browser(server, tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser test saves its screenshots: $TONGBAN_SCREENSHOTS, else ``var/test-output/screenshots``
    in the repository (ignored by git; pytest's own temporary folders are pruned to the last three sessions of
    the user, so a person might not find them there); replaced on every run, the path is printed."""
    folder = Path(os.environ.get("TONGBAN_SCREENSHOTS") or REPO / "var" / "test-output" / "screenshots")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {folder}")
    return folder
