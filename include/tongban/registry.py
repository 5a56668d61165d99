"""Partner registry, wire formats, canonical dictionaries and division codes, loaded from data files.

The registry file is ``data/partners.yaml`` unless ``TONGBAN_REGISTRY`` names another one. Every task of a run
asks for the registry (the DAG labels each mapped task instance with its partner's name), so a loaded registry is
kept per process until its file changes.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTITY = "identity"

# canonical field -> the canonical dictionary its coded values belong to
CODED_FIELDS: dict[str, str] = {
    "item_type": "item_type",
    "level": "level",
    "handling_mode": "handling_mode",
    "handle_type": "handle_type",
    "legal_limit_unit": "time_unit",
    "promised_limit_unit": "time_unit",
}


# the Chinese name of each canonical dictionary, for messages partners read
DICTIONARY_LABELS: dict[str, str] = {
    "item_type": "事项类型",
    "level": "行使层级",
    "service_object": "服务对象",
    "handling_mode": "通办模式",
    "handle_type": "办件类型",
    "time_unit": "时限单位",
    "material_required": "材料是否必要",
    "material_form": "材料形式",
}


def _yaml(text: str) -> Any:
    """YAML's safe subset, parsed by libyaml where PyYAML has it (ten times faster than the Python parser)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _data_file(name: str) -> Any:
    return _yaml(resources.files("tongban").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def dictionaries() -> dict[str, dict[str, Any]]:
    """Canonical dictionaries: name -> {code: label}."""
    return {name: {str(k): v for k, v in codes.items()} for name, codes in _data_file("dictionaries.yaml").items()}


def label(dictionary: str, code: str | None) -> str:
    """The Chinese label of a canonical code, or the code itself when it has none."""
    if code is None:
        return ""
    return str(dictionaries()[dictionary].get(code, code))


@cache
def divisions() -> dict[str, Any]:
    return _data_file("divisions.yaml")


class Paging(BaseModel):
    """How a format pages: ``page`` (page number + size, a declared total in the body or a header) or
    ``cursor`` (an opaque cursor from each answer; a declared total is optional)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["page", "cursor"]
    page_size: int = Field(gt=0)
    items_field: str | None = None  # JSON formats: the list of records in the body
    size_param: str
    page_param: str | None = None
    first_page: int = 1
    total_field: str | None = None  # the declared total in the body ...
    total_header: str | None = None  # ... or in a response header (CSV exports)
    cursor_param: str | None = None
    next_field: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Paging:
        needed = ("page_param",) if self.kind == "page" else ("cursor_param", "next_field")
        missing = [n for n in needed if getattr(self, n) is None]
        if self.kind == "page" and self.total_field is None and self.total_header is None:
            missing.append("total_field or total_header")
        if missing:
            raise ValueError(f"{self.kind} paging needs {', '.join(missing)}")
        return self


# the HMAC of a signed request (tongban.auth); chosen per endpoint: per partner in the registry
SignatureAlgorithm = Literal["HMAC-SHA256", "HMAC-SM3"]


class Auth(BaseModel):
    """How requests to an endpoint are authenticated; the secret itself is the Connection's ``password``.

    Every request is signed (tongban.auth, docs/partner-formats.md); the headers carrying the
    timestamp, nonce, algorithm and signature are named here. ``scheme`` says what the system wants
    besides: ``signature`` (nothing), ``api_key`` (the key in ``header``) or ``bearer``
    (``Authorization: Bearer <key>``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["signature", "api_key", "bearer"] = "signature"
    header: str | None = None  # api_key: the header carrying the key
    timestamp_header: str = "X-Timestamp"
    nonce_header: str = "X-Nonce"
    signature_header: str = "X-Signature"
    algorithm_header: str = "X-Signature-Method"
    max_skew_seconds: int = Field(300, gt=0)
    # headers the signature covers as well, when a request carries them (the platform's publish fence)
    signed_headers: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _complete(self) -> Auth:
        if self.scheme == "api_key" and not self.header:
            raise ValueError("api_key auth needs header")
        return self


class Incremental(BaseModel):
    """The query parameter asking for records changed since a moment, and how that moment is written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    param: str
    format: str


class MaterialsCell(BaseModel):
    """Materials packed into one text cell (CSV): entries joined by ``entry_separator``, each entry's
    parts (in ``material_fields`` order) joined by ``field_separator``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entry_separator: str = Field(min_length=1)
    field_separator: str = Field(min_length=1)


class OfferEndpoint(BaseModel):
    """Where and how a partner takes 沅江's items offered to it (跨省通办, our items handled there).

    ``path`` under the partner's base URL: ``GET`` lists what the partner has configured of our items
    (the format's paging, encoding and auth, the records in its field names plus ``modes_field``);
    ``POST`` takes a batch of operations, each a record plus ``op_field`` (``ops`` names the values),
    idempotent under the request header ``key_header`` (docs/partner-formats.md §13).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    modes_field: str  # the handling modes we offer for the item, joined by the format's separator
    op_field: str
    ops: dict[Literal["upsert", "delete"], str]
    key_header: str
    items_field: str | None = None  # JSON formats: the list of operations in the request body

    @model_validator(mode="after")
    def _both_ops(self) -> OfferEndpoint:
        if set(self.ops) != {"upsert", "delete"} or len(set(self.ops.values())) != 2:
            raise ValueError("offer.ops needs distinct wire values for upsert and delete")
        return self


class WireFormat(BaseModel):
    """How one family of partner systems names, codes and pages its items."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    path: str
    media: Literal["json", "csv"] = "json"
    encoding: str = "utf-8"
    auth: Auth = Auth()
    paging: Paging
    incremental: Incremental | None = None
    multi_value_separator: str
    datetime_format: str
    numbers_as_text: bool = False  # the system sends every number as a string
    fields: dict[str, str]
    material_fields: dict[str, str]
    materials_cell: MaterialsCell | None = None
    dictionaries: dict[str, dict[str, Any] | Literal["identity"]]
    offer: OfferEndpoint | None = None  # the write side: 沅江's items offered to the partner

    @model_validator(mode="after")
    def _consistent(self) -> WireFormat:
        if self.media == "json" and not self.paging.items_field:
            raise ValueError(f"format {self.name}: JSON paging needs items_field")
        if self.offer and self.media == "json" and not self.offer.items_field:
            raise ValueError(f"format {self.name}: a JSON offer endpoint needs items_field")
        if self.media == "csv" and self.materials_cell is None:
            raise ValueError(f"format {self.name}: CSV needs materials_cell (materials in one cell)")
        try:
            "".encode(self.encoding)
        except LookupError as exc:
            raise ValueError(f"format {self.name}: unknown encoding {self.encoding!r}") from exc
        return self

    def to_canonical(self, dictionary: str) -> dict[str, Any]:
        """wire code -> canonical code for one dictionary."""
        mapping = self.dictionaries[dictionary]
        if mapping == IDENTITY:
            return {code: code for code in dictionaries()[dictionary]}
        return {str(k): v for k, v in mapping.items()}

    def to_wire(self, dictionary: str) -> dict[Any, str]:
        """canonical code -> wire code (used by the partner simulator)."""
        return {v: k for k, v in self.to_canonical(dictionary).items()}


FAULT_KINDS = (
    "slow",  # answer after ``delay`` seconds
    "server_error",  # answer ``status`` (5xx)
    "rate_limit",  # answer 429 with ``Retry-After: retry_after`` (1 unless given)
    "truncated",  # a 200 whose body is cut in the middle
    "invalid_json",  # a 200 whose body is an HTML error page
    "wrong_encoding",  # the body in another encoding than the format's (UTF-8 <-> GBK)
    "duplicate_page",  # one page served twice (docs/simulators.md: how, per paging kind)
    "missing_page",  # one page's records never served
    "schema_drift",  # fields renamed (``rename``) and/or added (``add``) in every record
    "oversized",  # the body padded to ``size`` bytes
    "bad_signature",  # 401: the partner refuses our credentials
    "empty_catalogue",  # a well-formed answer holding no records (total 0)
    "non_objects",  # every record a JSON string instead of an object (JSON formats)
    "total_shrinks",  # the catalogue cut to its first ``total`` records, declared so (``omit_total``: no total)
    "wrong_types",  # ``count`` records with an all-digit 实施编码 send it as a JSON number (JSON formats)
    "future_timestamp",  # ``count`` records of a page updated at ``stamp`` (far in the future)
    "nested_body",  # a record field nested ``depth`` arrays deep (JSON formats)
    "write_unavailable",  # the offer endpoint's writes answer ``status`` (5xx), ``Retry-After`` if given; reads fine
    "report_html",  # the report receiver answers a delivery 200 with an HTML page, without taking the report
)
WRITE_FAULTS = ("write_unavailable",)  # faults of the offer endpoint's writes, never of the catalogue
JSON_ONLY_FAULTS = ("non_objects", "wrong_types", "nested_body")  # a CSV's records are text rows: no effect there
REPORT_FAULT_KINDS = ("report_html",)  # faults of report delivery, never of the catalogue


class Fault(BaseModel):
    """A fault the partner simulator injects into its catalogue answers, or (``REPORT_FAULT_KINDS``) into its
    answers to report deliveries (the pipeline never reads it).

    ``times``: how many matching requests get it (then the partner behaves again); None = all.
    ``page``: only requests for this page (1-based, in paging order); None = every page.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[FAULT_KINDS]  # type: ignore[valid-type]
    times: int | None = Field(None, ge=1)
    page: int | None = Field(None, ge=1)
    delay: float = Field(2.0, ge=0)
    status: int = Field(503, ge=500, le=599)
    retry_after: int | None = Field(None, ge=0)
    size: int = Field(64 * 1024 * 1024, gt=0)
    rename: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    total: int = Field(100, ge=0)
    omit_total: bool = False
    count: int = Field(7, ge=1)
    stamp: datetime = datetime(2099, 12, 31)
    depth: int = Field(100_000, ge=1)

    @field_validator("rename", "add", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return tuple(value.items()) if isinstance(value, dict) else value

    def spec(self) -> dict[str, Any]:
        """JSON-safe form (what the admin API takes and returns)."""
        return {**self.model_dump(mode="json"), "rename": dict(self.rename), "add": dict(self.add)}


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    division: str = Field(pattern=r"^\d{6}$")
    name: str
    items: int = Field(ge=0)
    format: str
    full_resync_days: int = Field(7, ge=1)  # a full pull at least this often; incremental pulls between
    signature: SignatureAlgorithm = "HMAC-SHA256"  # how requests to and from this partner are signed
    faults: tuple[Fault, ...] = ()  # simulator only: faults its catalogue API starts with

    @property
    def province(self) -> str:
        return self.division[:2] + "0000"

    @property
    def conn_id(self) -> str:
        """The Airflow Connection holding this partner's base URL and secrets."""
        return f"partner_{self.division}"


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # shared by every caller of load_registry

    home: dict[str, str]
    seed: int
    partners: tuple[Partner, ...]
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> Registry:
        known = divisions()["divisions"]
        formats = wire_formats()
        seen: set[str] = set()
        for p in self.partners:
            if p.division not in known:
                raise ValueError(f"partner {p.division} ({p.name}): division code not in divisions.yaml")
            if p.format not in formats:
                raise ValueError(f"partner {p.division} ({p.name}): unknown format {p.format!r}")
            if p.division in seen:
                raise ValueError(f"partner {p.division} listed twice")
            seen.add(p.division)
        return self

    def partner(self, division: str) -> Partner:
        for p in self.partners:
            if p.division == division:
                return p
        raise KeyError(f"no partner {division} in registry {self.source}")


@cache
def wire_formats() -> dict[str, WireFormat]:
    return {name: WireFormat(name=name, **spec) for name, spec in _data_file("formats.yaml").items()}


def registry_path() -> Path | None:
    value = os.environ.get("TONGBAN_REGISTRY")
    return Path(value) if value else None


def load_registry(path: Path | None = None) -> Registry:
    """The partner registry from ``path``, ``$TONGBAN_REGISTRY`` or the packaged default."""
    path = path or registry_path()
    if path is None:
        return _packaged_registry()
    stat = path.stat()  # an edited file is read again
    return _registry_file(path, stat.st_mtime_ns, stat.st_size)


@cache
def _packaged_registry() -> Registry:
    return Registry(**_data_file("partners.yaml"), source="tongban/data/partners.yaml")


@lru_cache(maxsize=16)
def _registry_file(path: Path, mtime_ns: int, size: int) -> Registry:
    return Registry(**_yaml(path.read_text(encoding="utf-8")), source=str(path))
