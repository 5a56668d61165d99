"""GX's Data Docs page view with its Jinja templates compiled once per machine, not once per view.

GX gives every view it instantiates a Jinja environment of its own, which compiles GX's page templates anew:
most of the time a page takes. ``CachedPageView`` is GX's own ``DefaultJinjaPageView`` with a Jinja bytecode
cache in the user's temporary folder (``jinja2.FileSystemBytecodeCache``, keyed by template and checked against
its source, so an upgraded GX recompiles). The UI's Data Docs pages, rendered on demand from a stored result
(``tongban.validation.data_docs``), use it: a new API-server worker does not compile the templates again.

Imports GX at its top: import it only inside functions, after ``tongban.validation.gx_import``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from great_expectations.render.view.view import DefaultJinjaPageView
from jinja2 import FileSystemBytecodeCache


@cache
def bytecode_cache() -> FileSystemBytecodeCache:
    return FileSystemBytecodeCache()  # a private folder of this user's under the temporary folder


class CachedPageView(DefaultJinjaPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = bytecode_cache()
