"""Partner registry, wire formats, canonical dictionaries and division codes, loaded from data files.

The registry file is ``data/partners.yaml`` unless ``TONGBAN_REGISTRY`` names another one.
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

IDENTITY = "identity"


def _data_file(name: str) -> Any:
    return yaml.safe_load(resources.files("tongban").joinpath("data", name).read_text(encoding="utf-8"))


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
    model_config = ConfigDict(extra="forbid")

    kind: Literal["page", "cursor"]
    page_size: int = Field(gt=0)
    items_field: str
    size_param: str
    page_param: str | None = None
    first_page: int = 1
    total_field: str | None = None
    cursor_param: str | None = None
    next_field: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Paging:
        needed = ("page_param", "total_field") if self.kind == "page" else ("cursor_param", "next_field")
        missing = [n for n in needed if getattr(self, n) is None]
        if missing:
            raise ValueError(f"{self.kind} paging needs {', '.join(missing)}")
        return self


class WireFormat(BaseModel):
    """How one family of partner systems names, codes and pages its items."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    path: str
    paging: Paging
    multi_value_separator: str
    datetime_format: str
    fields: dict[str, str]
    material_fields: dict[str, str]
    dictionaries: dict[str, dict[str, Any] | Literal["identity"]]

    def to_canonical(self, dictionary: str) -> dict[str, Any]:
        """wire code -> canonical code for one dictionary."""
        mapping = self.dictionaries[dictionary]
        if mapping == IDENTITY:
            return {code: code for code in dictionaries()[dictionary]}
        return {str(k): v for k, v in mapping.items()}

    def to_wire(self, dictionary: str) -> dict[Any, str]:
        """canonical code -> wire code (used by the partner simulator)."""
        return {v: k for k, v in self.to_canonical(dictionary).items()}


class Partner(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    division: str = Field(pattern=r"^\d{6}$")
    name: str
    items: int = Field(ge=0)
    format: str

    @property
    def province(self) -> str:
        return self.division[:2] + "0000"

    @property
    def conn_id(self) -> str:
        """The Airflow Connection holding this partner's base URL and secrets."""
        return f"partner_{self.division}"


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: dict[str, str]
    seed: int
    partners: list[Partner]
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
        return Registry(**_data_file("partners.yaml"), source="tongban/data/partners.yaml")
    return Registry(**yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path))
