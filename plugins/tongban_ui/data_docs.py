"""GX Data Docs of a stored validation result, rendered on demand and served under the artifact CSP.

A validation stores only GX's result (``gx_validation_result.json``); the page is rendered from it when
asked for, with GX's own renderer and page view (``tongban.validation.data_docs``, which imports GX), and
kept in a small in-process cache keyed by the result's content. GX's page inlines GX's stylesheet (from the
installed package) but loads Bootstrap, Font Awesome, jQuery and bootstrap-table from CDNs and its logo from
S3 (also in its stylesheet), and links a favicon, a site index and a suite page that no longer exist. Under
the artifact CSP (no script, nothing from elsewhere) each page is served with its ``<link>`` and ``<script>``
tags and remote images taken out, a small inline stylesheet for the Bootstrap classes and icons GX uses (which
also hides GX's top bar and its newsletter footer, and does what GX's script did for its "Failed Only" filter and
its "Show more info..." link), its links to the site index pointed at the run page and
those to the suite page taken out, and a bar of ours on top saying in Chinese what the page is.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
from collections import OrderedDict

DATA_DOCS_PAGE = "data_docs.html"  # the page's name in the plugin's URLs, next to the result it renders
CACHE_SIZE = 32  # rendered pages kept per API-server worker (each some 100 kB)

TAGS = re.compile(  # GX's stylesheets, favicon and scripts; its logo from S3
    r"<link\b[^>]*>|<script\b[^>]*>.*?</script\s*>|<img\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>",
    re.IGNORECASE | re.DOTALL,
)
REMOTE_URL = re.compile(r"""url\((["']?)(?:https?:)?//[^)]*\)""")  # in GX's stylesheet: its logo, in dark mode
SITE_LINK = re.compile(r"""\shref=(["'])(?:\.\./)*([\w./-]*\.html)\1""")  # to other pages of a built site
STYLE = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 0; color: #212529; font-size: 14px; }
.container-fluid { padding: 1em 2em; } .row { display: flex; flex-wrap: wrap; }
.col-md-2 { flex: 0 0 16%; max-width: 16%; } .col-md-10, .col-lg-10 { flex: 1 1 0; min-width: 0; }
.col-12 { flex: 0 0 100%; } .d-none { display: none; } .sticky-top { position: sticky; top: 0; }
.nav { list-style: none; padding-left: 0; } .nav-link { display: block; padding: 2px 0; }
.navbar, footer { display: none; }  /* GX's top bar (its logo, its site's index) and its newsletter footer */
.card { border: 1px solid #dee2e6; border-radius: 4px; margin-bottom: 1em; }
.card-header { background: #f7f7f9; border-bottom: 1px solid #dee2e6; padding: 0.5em; }
.card-body { padding: 0.6em; }
table, .table { border-collapse: collapse; width: 100%; margin-bottom: 1em; }
.table td, .table th, table td, table th { border: 1px solid #dee2e6; padding: 4px 6px; vertical-align: top; }
.table th, table th { background: #f0f3f7; text-align: left; }
.badge { display: inline-block; padding: 1px 5px; border-radius: 3px; font-size: 85%; }
.badge-secondary { background: #6c757d; color: #fff; } .badge-info { background: #17a2b8; color: #fff; }
.alert { padding: 0.5em; border: 1px solid #d6d8db; background: #e2e3e5; border-radius: 3px; margin: 0.4em 0; }
.text-success { color: #198754; } .text-danger { color: #dc3545; } .lead { font-size: 1.15em; }
.fas { font-style: normal; font-weight: bold; }
.fa-check-circle::before { content: "✔"; } .fa-times::before, .fa-times-circle::before { content: "✘"; }
.fa-exclamation-triangle::before { content: "⚠"; } .fa-info-circle::before { content: "ℹ"; }
.tongban-nav { border-bottom: 1px solid #90a4ae; padding: 0.5em 2em; background: #f5f7f9; }
/* GX's "Failed Only" filter and "Show more info..." without its script: the radio button and the link's target */
body:has(#option2:checked) tr:has(> .hide-succeeded-validation-target-child),
body:has(#option2:checked) .hide-succeeded-validation-target,
body:has(#option2:checked) :has(> * > .hide-succeeded-validations-column-section-target-child) { display: none; }
.collapse:not(:target) { display: none; }
"""

_pages: OrderedDict[bytes, str] = OrderedDict()
_lock = threading.Lock()


class Unreadable(ValueError):
    """A stored GX result that cannot be rendered; the message says why, in Chinese, for the error page."""


def gx_page(result: bytes) -> str:
    """GX's validation page of a stored result (the file's bytes), from the cache when rendered before;
    Unreadable when the file is not JSON or not GX's result."""
    key = hashlib.sha256(result).digest()
    with _lock:
        if key in _pages:
            _pages.move_to_end(key)
            return _pages[key]
    from tongban.validation.data_docs import NotAValidationResult, validation_page  # GX: on the first page

    try:
        stored = json.loads(result)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise Unreadable("文件内容不是有效的 JSON（可能已损坏或未写完）") from exc
    try:
        page = validation_page(stored)
    except NotAValidationResult as exc:
        raise Unreadable("文件内容不是 GX 校验结果") from exc
    with _lock:
        _pages[key] = page
        while len(_pages) > CACHE_SIZE:
            _pages.popitem(last=False)
    return page


def localise(page: str, title: str, home: str) -> bytes:
    """GX's page with local assets only (see the module), ``title`` (Chinese) in a bar on top with a link back
    to ``home`` (the run page, relative), which GX's links to its site index also point at (and those to other
    pages of the site, none of which exist, are plain text)."""
    page = REMOTE_URL.sub("none", TAGS.sub("", page))
    page = SITE_LINK.sub(lambda m: f' href="{html.escape(home)}"' if m.group(2) == "index.html" else "", page)
    page = re.sub(r"</head\s*>", lambda _: f"<style>{STYLE}</style></head>", page, count=1, flags=re.IGNORECASE)
    bar = (
        f'<nav class="tongban-nav"><a href="{html.escape(home)}">← 返回运行</a> · '
        f"<strong>GX 校验结果（Data Docs）</strong>：{html.escape(title)}</nav>"
    )
    page = re.sub(r"(<body\b[^>]*>)", lambda m: m.group(1) + bar, page, count=1, flags=re.IGNORECASE)
    return page.encode()
