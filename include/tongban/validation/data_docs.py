"""GX's Data Docs page of one stored validation result, rendered on demand (by the UI plugin).

A validation stores GX's result as JSON (``ExpectationSuiteValidationResult.to_json_dict()``, the
``gx_validation_result.json`` of ``tongban.layout``); :func:`validation_page` turns it back into GX's result
and renders it as GX's site builder renders a validation page: ``ValidationResultsPageRenderer``, then GX's
page view (``docs_views.CachedPageView``: its Jinja templates compiled once). GX is imported when it first runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

import tongban.validation.gx_import  # noqa: F401  (before any GX import: GX without what it would load unused)

if TYPE_CHECKING:
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    from tongban.validation.docs_views import CachedPageView


class NotAValidationResult(ValueError):
    """JSON that GX cannot load as a validation result (a stored file damaged or of another kind)."""


def validation_page(result: object) -> str:
    """The HTML page GX's Data Docs show for this validation result (one whole page: GX's inline stylesheet,
    its CDN links and scripts; serve it through ``tongban_ui.data_docs.localise``). ``result`` is the stored
    JSON, parsed; NotAValidationResult when it is not GX's result."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema
    from marshmallow import ValidationError

    if not isinstance(result, Mapping):
        raise NotAValidationResult(f"a JSON {type(result).__name__}, not an object")
    try:
        validation = ExpectationSuiteValidationResultSchema().load(dict(result))
    except ValidationError as exc:
        raise NotAValidationResult(str(exc.messages)) from exc
    renderer, view = _renderer_and_view()
    return str(view.render(renderer.render(validation), show_how_to_buttons=False))


@cache
def _renderer_and_view() -> tuple[ValidationResultsPageRenderer, CachedPageView]:
    """One of each per process: both keep no state between pages."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    from tongban.validation import five_level  # noqa: F401  (registers the custom expectation: its results render)
    from tongban.validation.docs_views import CachedPageView

    return ValidationResultsPageRenderer(), CachedPageView()
