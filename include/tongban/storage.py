"""Files that stages pass to each other, addressed by path objects of any filesystem.

Stages take a ``upath.UPath`` (Airflow's ``ObjectStoragePath`` is one), so the same code writes to a
local folder or to an S3-compatible store and no task relies on a worker's local disk. Where each file
lies under the storage root is ``tongban.layout``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar, overload

import msgspec
from pydantic import BaseModel
from upath import UPath

T = TypeVar("T")


def write_json(path: UPath, value: Any) -> UPath:
    """Write JSON whole: a reader never sees a half-written file on object stores (one PUT)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(_encode(value), indent=1))
    return path


@overload
def read_json(path: UPath) -> Any: ...
@overload
def read_json(path: UPath, file_type: type[T]) -> T: ...


def read_json(path: UPath, file_type: type[Any] | None = None) -> Any:
    """A JSON file: plain values, or ``file_type`` (a dataclass of ``tongban.files``: the fields its readers use,
    decoded and checked by msgspec; other fields are ignored). A file without a field the type requires, or with
    one of another type, raises ``msgspec.ValidationError`` naming the file."""
    if file_type is None:
        return msgspec.json.decode(path.read_bytes())
    try:
        return msgspec.json.decode(path.read_bytes(), type=file_type)
    except msgspec.ValidationError as exc:
        raise msgspec.ValidationError(f"{path}: does not match {file_type.__name__}: {exc}") from exc


def _encode(value: Any) -> bytes:
    """UTF-8 JSON (msgspec: many times the standard library's speed on large files); a pydantic model
    (``tongban.results``) as its JSON form, other values JSON has no type for as their ``str()``."""
    return msgspec.json.encode(value, enc_hook=_plain)


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)


def write_jsonl(path: UPath, rows: Iterable[Any]) -> int:
    """Write rows (dicts, or a stage's record dataclasses) as JSON Lines; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("wb") as fh:
        for row in rows:
            fh.write(_encode(row))
            fh.write(b"\n")
            count += 1
    return count


@overload
def read_jsonl(path: UPath) -> Iterator[dict[str, Any]]: ...
@overload
def read_jsonl(path: UPath, row_type: type[T]) -> Iterator[T]: ...


def read_jsonl(path: UPath, row_type: type[Any] | None = None) -> Iterator[Any]:
    """The rows of a JSON Lines file: dicts, or ``row_type`` (a dataclass of the stage that wrote the file,
    decoded and checked by msgspec)."""
    decoder = msgspec.json.Decoder(row_type) if row_type is not None else msgspec.json.Decoder()
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield decoder.decode(line)
