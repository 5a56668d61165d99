"""The raw-response archive: every partner answer, compressed and content-addressed.

A body is stored once under ``<storage root>/archive/<sha256[:2]>/<sha256>.gz`` (gzip with a zero
mtime, so the same bytes always give the same file) before anything parses it. The run's fetch
manifest (``runs/<run>/<division>/raw/manifest.json``) lists each request with its metadata and the
sha256 of its answer; normalising reads the bodies back from here only, so any run can be replayed
offline. Reading verifies the sha256.
"""

from __future__ import annotations

import gzip
import hashlib

from upath import UPath

from tongban.layout import ARCHIVE


class ArchiveError(RuntimeError):
    """A body is missing from the archive or does not match its address."""


class Archive:
    def __init__(self, root: UPath) -> None:
        """``root``: the storage root (the archive is its ``archive/`` folder)."""
        self.base = root / ARCHIVE

    def path(self, sha256: str) -> UPath:
        return self.base / sha256[:2] / f"{sha256}.gz"

    def put(self, body: bytes) -> str:
        """Store ``body`` (idempotent); returns its sha256."""
        digest = hashlib.sha256(body).hexdigest()
        path = self.path(digest)
        if path.exists():
            try:
                if self.get(digest) == body:
                    return digest
            except ArchiveError:
                pass  # a half-written file from a crash: write it again
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(body, compresslevel=6, mtime=0))
        return digest

    def get(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            body = gzip.decompress(path.read_bytes())
        except FileNotFoundError as exc:
            raise ArchiveError(f"raw response {sha256} is not in the archive ({path})") from exc
        except (OSError, EOFError) as exc:
            raise ArchiveError(f"raw response {sha256} in the archive is damaged ({path}): {exc}") from exc
        if hashlib.sha256(body).hexdigest() != sha256:
            raise ArchiveError(f"raw response {path} does not match its sha256")
        return body
