"""GX's Data Docs page views with their Jinja templates compiled once per machine, not once per build.

GX gives every view it instantiates a Jinja environment of its own, so each Data Docs build (one per
validation: every partner's, the library's, every province's) compiled GX's page templates anew: most of
the build's time. These views are GX's own (``DefaultJinjaPageView``, ``DefaultJinjaIndexPageView``) with a
Jinja bytecode cache in the user's temporary folder (``jinja2.FileSystemBytecodeCache``, keyed by template
and checked against its source, so an upgraded GX recompiles), named in the Data Docs site config
(``runner._docs_site``). The pages are the same; only their compilation is shared between builds and task
processes. The UI's Data Docs pages, rendered on demand from a stored result (``tongban.validation.data_docs``),
use ``CachedPageView`` too.

Imports GX at its top: GX instantiates these classes by name while it builds Data Docs.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from great_expectations.render.view.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import FileSystemBytecodeCache


@cache
def bytecode_cache() -> FileSystemBytecodeCache:
    return FileSystemBytecodeCache()  # a private folder of this user's under the temporary folder


class CachedPageView(DefaultJinjaPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = bytecode_cache()


class CachedIndexPageView(DefaultJinjaIndexPageView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = bytecode_cache()
