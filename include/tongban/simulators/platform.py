"""The provincial integrated platform (省一体化平台): holds each region's items, takes batches.

State lives in ``state_dir/platform.db`` (SQLite through SQLAlchemy 2), so it survives restarts.
A batch is applied in one transaction and recorded under its ``Idempotency-Key``: the same key with
the same body replays the stored answer and changes nothing; with another body it is refused (409).

A region's list is served page by page with a keyset cursor (``page_size`` 1–500, required; ``cursor``:
the ``next_cursor`` of the page before), in 实施编码 order.

A batch may be asked about by its key (``GET /api/v1/regions/<division>/batches?idempotency_key=…``):
the answer it was given, or 404 when the platform never recorded it. Batches carry the partner's
publish sequence (``X-Publish-Sequence``, a fencing token): once a region has taken a sequence, a
batch with a lower one (from a run that a newer one has superseded) is refused (409), and so is one
without it (428); the signature covers the header, so a sequence changed on the way fails it (401).
See docs/platform-api.md.

Faults, set through ``PUT /admin/faults``, make it misbehave the way real platforms do: fail in the
middle of a batch (half applied, nothing recorded, 500), time out after applying a batch (the answer
comes too late for the client), apply a batch and then hang (until the faults are set again or
``hang_seconds`` pass: the client's process is meant to be killed meanwhile), or reject given items
with a reason.

Every request to the item API must be signed with the platform's secret and algorithm
(``state_dir/platform_secret.json``, :func:`~tongban.simulators.credentials.platform_credentials`);
unsigned, tampered, replayed or stale requests are refused with 401. Admin routes are not checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from tongban.auth import Refused, Verifier
from tongban.codes import TASK_CODE_LENGTH
from tongban.connections import PLATFORM_AUTH, SEQUENCE_HEADER
from tongban.simulators.credentials import check_signed, platform_credentials, raw_body

if TYPE_CHECKING:
    from tongban.registry import Registry

DB_FILE = "platform.db"
_DIVISION = re.compile(r"^\d{6}$")
_MAX_KEY_LENGTH = 200
MAX_PAGE_SIZE = 500  # items per page of a region's list
STALE_SEQUENCE = "stale_sequence"  # the ``code`` of the 409 refusing a superseded run's batch


class Base(DeclarativeBase):
    pass


class StoredItem(Base):
    """One item as the platform holds it: the full canonical record of its region."""

    __tablename__ = "items"

    region: Mapped[str] = mapped_column(String(6), primary_key=True)
    task_code: Mapped[str] = mapped_column(String(TASK_CODE_LENGTH), primary_key=True)
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    batch_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Batch(Base):
    """A received batch and the answer given to it, kept for idempotent replays."""

    __tablename__ = "batches"

    batch_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(_MAX_KEY_LENGTH), unique=True)
    region: Mapped[str] = mapped_column(String(6), index=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RegionSequence(Base):
    """The highest publish sequence a region's batches came with (the fence)."""

    __tablename__ = "region_sequences"

    region: Mapped[str] = mapped_column(String(6), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(_MAX_KEY_LENGTH))  # of the batch that raised it
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upserts: list[dict[str, Any]] = Field(default_factory=list)
    deletes: list[str] = Field(default_factory=list)


class Faults(BaseModel):
    """Misbehaviour to show on the next batches; each counter is used up one batch at a time."""

    model_config = ConfigDict(extra="forbid")

    fail_mid_batch: int = Field(default=0, ge=0)
    timeout_after_apply: int = Field(default=0, ge=0)
    timeout_seconds: float = Field(default=5.0, ge=0, le=120)
    hang_after_apply: int = Field(default=0, ge=0)
    hang_seconds: float = Field(default=3600.0, ge=0, le=86400)
    reject: dict[str, str] = Field(default_factory=dict)


class PlatformError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _json(value: Any) -> str:
    return msgspec.json.encode(value, order="sorted").decode()


def platform_engine(state_dir: Path) -> Engine:
    """The platform's SQLite engine, tables created; WAL and a busy timeout for concurrent requests."""
    state_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{state_dir / DB_FILE}",
        connect_args={"check_same_thread": False, "timeout": 30},
        json_serializer=lambda v: msgspec.json.encode(v).decode(),
        json_deserializer=msgspec.json.decode,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    Base.metadata.create_all(engine)
    return engine


def _code_problem(task_code: Any) -> str | None:
    if isinstance(task_code, str) and len(task_code) == TASK_CODE_LENGTH:
        return None
    length = len(task_code) if isinstance(task_code, str) else 0
    return f"实施编码应为{TASK_CODE_LENGTH}位，实际为{length}位"


def _rejection(region: str, record: dict[str, Any], refused: dict[str, str]) -> str | None:
    """Why the platform refuses an upserted record (in Chinese), or None when it takes it."""
    if problem := _code_problem(record.get("task_code")):
        return problem
    if record.get("task_code") in refused:
        return refused[record["task_code"]]
    if record.get("partner") != region:
        return f"事项所属地区（{record.get('partner')}）与批次地区（{region}）不一致"
    name = record.get("name")
    if not isinstance(name, str) or not name.strip():
        return "事项名称为空"
    return None


class Platform:
    """The platform's operations over its database."""

    def __init__(self, engine: Engine) -> None:
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.faults = Faults()
        self._faults_lock = threading.Lock()
        self.released = threading.Event()  # set when the faults are set again: ends a hang

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.released.set()  # requests hanging on the old faults end now
        self.released = threading.Event()

    def _take(self, counter: str) -> bool:
        """Use up one unit of a fault counter; True when the fault is to happen now."""
        with self._faults_lock:
            left = getattr(self.faults, counter)
            if left > 0:
                setattr(self.faults, counter, left - 1)
            return left > 0

    def page(self, region: str, size: int, after: str | None = None) -> tuple[int, list[msgspec.Raw], str | None]:
        """The region's item count, its next ``size`` records by task_code after ``after`` (each the JSON text it
        is stored as, sent on without decoding), and the last task_code of the page when more follow."""
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(StoredItem).where(StoredItem.region == region))
            query = select(StoredItem.task_code, type_coerce(StoredItem.record, String)).where(
                StoredItem.region == region
            )
            if after is not None:
                query = query.where(StoredItem.task_code > after)
            rows = session.execute(query.order_by(StoredItem.task_code).limit(size + 1)).all()
        more = len(rows) > size
        rows = rows[:size]
        return int(total or 0), [msgspec.Raw(text) for _, text in rows], rows[-1][0] if more else None

    def batch(self, batch_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            row = session.get(Batch, batch_id)
            if row is None:
                raise PlatformError(404, f"批次不存在：{batch_id}")
            received = row.received_at.replace(tzinfo=row.received_at.tzinfo or UTC)  # SQLite drops the offset
            return {**row.response, "received_at": received.isoformat()}

    def batch_by_key(self, region: str, key: str) -> dict[str, Any]:
        """The answer given to the region's batch with this idempotency key (404: never recorded)."""
        with self.sessions() as session:
            row = session.scalar(select(Batch).where(Batch.idempotency_key == key, Batch.region == region))
            if row is None:
                raise PlatformError(404, f"地区 {region} 没有幂等键为 {key} 的批次记录（未收到或未处理完成）")
        return self.batch(row.batch_id)

    def _fence(self, session: Session, region: str, sequence: int | None, key: str) -> None:
        """Refuse a batch whose publish sequence is lower than one the region took already; note a higher one."""
        held = session.get(RegionSequence, region)
        if sequence is None:
            if held is not None:
                raise PlatformError(
                    428, f"地区 {region} 的批次须带请求头 {SEQUENCE_HEADER}（发布序号，当前为 {held.sequence}）"
                )
            return
        if held is not None and sequence < held.sequence:
            raise PlatformError(
                409,
                f"发布序号 {sequence} 低于地区 {region} 已接受的发布序号 {held.sequence}："
                "该批次来自已被更新运行取代的旧运行，拒绝写入",
                STALE_SEQUENCE,
            )
        if held is None:
            session.add(
                RegionSequence(region=region, sequence=sequence, idempotency_key=key, updated_at=datetime.now(UTC))
            )
        elif sequence > held.sequence:
            held.sequence, held.idempotency_key, held.updated_at = sequence, key, datetime.now(UTC)

    def apply(self, region: str, key: str, body: BatchIn, sequence: int | None = None) -> dict[str, Any]:
        digest = hashlib.sha256(_json({"region": region, **body.model_dump()}).encode()).hexdigest()
        try:
            with self.sessions.begin() as session:
                replay = self._replay(session, key, digest)
                if replay is not None:
                    return replay  # a replay changes nothing, whatever its sequence
                self._fence(session, region, sequence, key)
                if self._take("fail_mid_batch"):
                    half = BatchIn(
                        upserts=body.upserts[: len(body.upserts) // 2], deletes=body.deletes[: len(body.deletes) // 2]
                    )
                    self._apply(session, region, key, digest, half, remember=False)
                    session.commit()
                    raise PlatformError(500, "模拟故障：批次处理到一半中断，已处理部分未登记")
                answer = self._apply(session, region, key, digest, body)
            if self._take("timeout_after_apply"):
                time.sleep(self.faults.timeout_seconds)
            if self._take("hang_after_apply"):  # applied and recorded; the answer never comes
                self.released.wait(self.faults.hang_seconds)
            return answer
        except IntegrityError:
            # the same key committed by a concurrent request in the meantime: answer as a replay
            with self.sessions() as session:
                replay = self._replay(session, key, digest)
            if replay is None:  # pragma: no cover - an integrity error that is not the key
                raise
            return replay

    def _replay(self, session: Session, key: str, digest: str) -> dict[str, Any] | None:
        previous = session.scalar(select(Batch).where(Batch.idempotency_key == key))
        if previous is None:
            return None
        if previous.body_sha256 != digest:
            raise PlatformError(409, f"幂等键 {key} 已用于内容不同的批次 {previous.batch_id}")
        return {**previous.response, "replayed": True}

    def _apply(
        self, session: Session, region: str, key: str, digest: str, body: BatchIn, remember: bool = True
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        batch_id = uuid.uuid4().hex
        results: list[dict[str, Any]] = []
        codes = [c for c in (*(r.get("task_code") for r in body.upserts), *body.deletes) if isinstance(c, str)]
        held = set(
            session.scalars(
                select(StoredItem.task_code).where(StoredItem.region == region, StoredItem.task_code.in_(codes))
            )
        )  # one query for the batch, not one per item
        upserted: dict[str, dict[str, Any]] = {}  # the last record given for each code (in order)
        for record in body.upserts:
            reason = _rejection(region, record, self.faults.reject)
            code = record.get("task_code")
            results.append(_result(code, "upsert", reason))
            if reason is None:
                upserted[code] = record
        deleted = []
        for code in body.deletes:
            reason = _code_problem(code)
            results.append(_result(code, "delete", reason))
            if reason is None and upserted.pop(code, None) is None and code in held:
                deleted.append(code)  # deleting what is not held is accepted: deletes are idempotent
        # one statement each for the batch's new rows, changed rows and deleted rows
        rows = [
            {"region": region, "task_code": c, "record": r, "batch_id": batch_id, "updated_at": now}
            for c, r in upserted.items()
        ]
        if new := [{**row, "created_at": now} for row in rows if row["task_code"] not in held]:
            session.execute(insert(StoredItem), new)
        if changed := [row for row in rows if row["task_code"] in held]:
            session.execute(update(StoredItem), changed)
        if deleted:
            session.execute(delete(StoredItem).where(StoredItem.region == region, StoredItem.task_code.in_(deleted)))
        response = {
            "batch_id": batch_id,
            "idempotency_key": key,
            "region": region,
            "replayed": False,
            "results": results,
        }
        if not remember:  # a failed half batch leaves no trace under its key
            return response
        session.add(
            Batch(
                batch_id=batch_id,
                idempotency_key=key,
                region=region,
                body_sha256=digest,
                response=response,
                received_at=now,
            )
        )
        session.flush()
        return response


def _result(task_code: Any, op: str, reason: str | None) -> dict[str, Any]:
    return {
        "task_code": task_code if isinstance(task_code, str) else None,
        "op": op,
        "status": "accepted" if reason is None else "rejected",
        "reason": reason,
    }


def _page_size(value: str | None) -> int:
    if value is None or not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise PlatformError(400, f"page_size 应为 1 到 {MAX_PAGE_SIZE} 之间的整数（每页条数）")
    return int(value)


def _cursor(task_code: str) -> str:
    """The opaque cursor of the page after ``task_code`` (base64url, unpadded)."""
    return base64.urlsafe_b64encode(task_code.encode()).decode().rstrip("=")


def _after(cursor: str) -> str:
    """The task_code a cursor given by :func:`_cursor` stands for; 400 for any other string."""
    try:
        code = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        code = ""
    if not code or _code_problem(code) or _cursor(code) != cursor:
        raise PlatformError(400, "cursor 无效：请使用上一页返回的 next_cursor")
    return code


def _region(division: str) -> str:
    if not _DIVISION.match(division):
        raise PlatformError(400, f"地区编码应为6位数字：{division}")
    return division


def create_platform_app(state_dir: Path, registry: Registry | None = None) -> FastAPI:
    """The platform simulator app, with its database in ``state_dir/platform.db``; it also serves 沅江's own
    item library (:mod:`tongban.simulators.library`, generated from ``registry``: the default one unless given)."""
    from tongban.registry import load_registry
    from tongban.simulators.library import Library, LibraryError, library_router

    platform = Platform(platform_engine(Path(state_dir)))
    credentials = platform_credentials(Path(state_dir))
    verifier = Verifier()
    app = FastAPI(title="省一体化政务服务平台事项接口模拟器", redoc_url=None)
    app.state.platform = platform
    app.state.library = Library(registry or load_registry(), Path(state_dir))

    def signed(request: Request, body: bytes = Depends(raw_body)) -> None:
        try:
            check_signed(
                verifier, "platform", PLATFORM_AUTH, credentials["secret"], credentials["algorithm"], request, body
            )
        except Refused as exc:
            raise PlatformError(401, exc.message) from None

    app.include_router(library_router(app.state.library, [Depends(signed)]))

    @app.exception_handler(PlatformError)
    @app.exception_handler(LibraryError)
    async def _refused(_: Request, exc: PlatformError | LibraryError) -> JSONResponse:
        code = {"code": exc.code} if isinstance(exc, PlatformError) and exc.code else {}
        return JSONResponse({"error": exc.message, **code}, status_code=exc.status)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/regions/{division}/items", dependencies=[Depends(signed)])
    def region_items(division: str, page_size: str | None = None, cursor: str | None = None) -> Response:
        """One page of the region's items by 实施编码 (docs/platform-api.md, *Reading a region's list*)."""
        size = _page_size(page_size)
        total, items, last = platform.page(_region(division), size, None if cursor is None else _after(cursor))
        body = {
            "region": division,
            "total": total,
            "page_size": size,
            "next_cursor": None if last is None else _cursor(last),
            "items": items,
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    @app.post("/api/v1/regions/{division}/batches", dependencies=[Depends(signed)])
    def post_batch(
        division: str,
        body: BatchIn,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
        sequence: Annotated[str | None, Header(alias=SEQUENCE_HEADER)] = None,
    ) -> JSONResponse:
        region = _region(division)
        key = (idempotency_key or "").strip()
        if not key:
            raise PlatformError(400, "缺少请求头 Idempotency-Key")
        if len(key) > _MAX_KEY_LENGTH:
            raise PlatformError(400, f"Idempotency-Key 过长（最多{_MAX_KEY_LENGTH}个字符）")
        if sequence is not None and not sequence.strip().isdigit():
            raise PlatformError(400, f"{SEQUENCE_HEADER} 应为非负整数：{sequence[:40]}")
        return JSONResponse(platform.apply(region, key, body, None if sequence is None else int(sequence)))

    @app.get("/api/v1/regions/{division}/batches", dependencies=[Depends(signed)])
    def batch_by_key(division: str, idempotency_key: str) -> dict[str, Any]:
        return platform.batch_by_key(_region(division), idempotency_key)

    @app.put("/admin/faults")
    def set_faults(faults: Faults) -> dict[str, Any]:
        platform.set_faults(faults)
        return faults.model_dump()

    @app.get("/admin/faults")
    def get_faults() -> dict[str, Any]:
        return platform.faults.model_dump()

    @app.get("/api/v1/batches/{batch_id}", dependencies=[Depends(signed)])
    def get_batch(batch_id: str) -> dict[str, Any]:
        return platform.batch(batch_id)

    return app
