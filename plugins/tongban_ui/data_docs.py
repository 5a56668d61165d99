"""GX Data Docs served under the plugin's Content-Security-Policy: local assets only.

GX writes its pages to load Bootstrap, Font Awesome, jQuery and bootstrap-table from CDNs, and builds the
index's table of validation runs with script. Under the artifact CSP (no script, nothing from elsewhere)
that leaves unstyled text without status icons and an index with no way to the validation pages. Each
HTML page is therefore served with the CDN tags taken out, GX's own stylesheet (``static/styles/`` of the
Data Docs folder) linked, a small inline stylesheet for the Bootstrap classes and icons GX uses, and, on the
index, links to the validation pages found in the folder.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

REMOTE = re.compile(
    rb"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>|<script\b[^>]*>.*?</script\s*>", re.IGNORECASE | re.DOTALL
)
GX_STYLES = "static/styles/data_docs_default_styles.css"
STYLE = """
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", sans-serif; margin: 0; color: #212529; font-size: 14px; }
.container-fluid { padding: 1em 2em; } .row { display: flex; flex-wrap: wrap; }
.col-md-2 { flex: 0 0 16%; max-width: 16%; } .col-md-10, .col-lg-10 { flex: 1 1 0; min-width: 0; }
.col-12 { flex: 0 0 100%; } .d-none { display: none; } .sticky-top { position: sticky; top: 0; }
.navbar { display: flex; align-items: center; padding: 0.4em 1em; background: #f8f9fa; }
.navbar img { height: 28px; } .nav { list-style: none; padding-left: 0; } .nav-link { display: block; padding: 2px 0; }
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
.tongban-runs { border: 1px solid #90a4ae; padding: 0.5em 1em; margin: 1em 2em; background: #f5f7f9; }
"""


def localise(body: bytes, depth: int, validations: Sequence[str] = ()) -> bytes:
    """A Data Docs page with its CDN assets replaced by local ones; ``depth``: folders below the Data Docs
    root; ``validations``: paths (from the root) of the validation pages, listed on the index."""
    up = "../" * depth
    page = REMOTE.sub(b"", body)
    head = f'<link rel="stylesheet" href="{up}{GX_STYLES}"><style>{STYLE}</style>'.encode()
    page = re.sub(rb"</head\s*>", head + b"</head>", page, count=1, flags=re.IGNORECASE)
    if validations:
        links = "".join(
            f'<li><a href="{html.escape(path)}">{html.escape(_label(path))}</a></li>' for path in validations
        )
        nav = f'<nav class="tongban-runs"><strong>校验结果（validation results）</strong><ul>{links}</ul></nav>'
        page = re.sub(rb"(<body\b[^>]*>)", lambda m: m.group(1) + nav.encode(), page, count=1, flags=re.IGNORECASE)
    return page


def _label(path: str) -> str:
    """``validations/<suite>/<run name>/<time>/<asset>.html`` -> ``<suite> · <time>``."""
    parts = path.split("/")
    return " · ".join(p for p in (parts[1] if len(parts) > 1 else path, parts[-2] if len(parts) > 3 else "") if p)
