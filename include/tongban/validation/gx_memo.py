"""Two GX hot spots inside a validation, removed: ``Expectation.configuration`` rebuilt on every read, and metric
ids hashed from a slow generic JSON conversion.

GX 1.x's ``Expectation.configuration`` is a property that builds a new ``ExpectationConfiguration`` from the
expectation's pydantic fields (``.dict()`` and a deep JSON conversion) on every read. ``Validator.graph_validate``
turns each configuration of the suite into a fresh Expectation (``to_domain_obj()``), asks it for its metric
dependencies and then validates it, and on that path GX reads ``configuration`` about 120 times per expectation:
some 4,000 times in a validation of our 33-expectation suite, 40 % of GX's CPU for the handful of rows a partner
delivers on an ordinary night (profiled; docs/scaling.md).

:func:`install` makes ``graph_validate`` build each of those Expectations' configurations once. The memo lives
for one ``graph_validate`` call only (a ``ContextVar``, so another thread's validation is unaffected), and holds
only the Expectations that call reads; ``graph_validate`` creates them itself from deep copies, uses them and drops
them, and neither it nor the expectations' methods assign to an Expectation's fields in between, so the
configuration read once is the one every later read would have built. Outside ``graph_validate`` the property
behaves as GX wrote it. tests/validation/test_gx_memo.py checks that validation results are identical with and
without the memo, and that it still takes effect (so a GX upgrade that moves this code shows up there).

The second: every ``MetricConfiguration`` GX creates while it builds a validation's metric graph (some 1,900 for
our suite) hashes its kwargs twice with ``IDDict.to_id``, which runs them through ``convert_to_json_serializable``
(a chain of ``isinstance`` and numpy ``issubdtype`` checks per value) before ``json.dumps``: a quarter of a small
validation's CPU. Inside ``graph_validate`` the conversion is skipped for values that are plain JSON already
(``str``, ``int``, ``bool``, ``None``, a float that is not NaN, lists, tuples and dicts with ``str`` keys of
those): for them it returns an equal value (a tuple as a list, which ``json.dumps`` writes alike), so the id is
the same text hashed. Anything else still goes through GX's conversion.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

# id(expectation) -> (expectation, its configuration); the expectation is held so that its id is not reused
_MEMO: ContextVar[dict[int, tuple[Any, Any]] | None] = ContextVar("tongban_gx_configuration_memo", default=None)
_installed = False


def install() -> None:
    """Patch GX once per process (idempotent)."""
    global _installed
    from great_expectations.core import id_dict
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.validator.validator import Validator

    if _installed:
        return
    built: Callable[[Any], Any] = Expectation.configuration.fget  # type: ignore[attr-defined]

    def configuration(self: Any) -> Any:
        memo = _MEMO.get()
        if memo is None:
            return built(self)
        entry = memo.get(id(self))
        if entry is None:
            entry = memo[id(self)] = (self, built(self))
        return entry[1]

    converted: Callable[[Any], Any] = id_dict.convert_to_json_serializable

    def convert(data: Any) -> Any:
        return data if _MEMO.get() is not None and _plain(data) else converted(data)

    original = Validator.graph_validate

    @functools.wraps(original)
    def graph_validate(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _MEMO.set({})
        try:
            return original(self, *args, **kwargs)
        finally:
            _MEMO.reset(token)

    Expectation.configuration = property(configuration, doc=Expectation.configuration.__doc__)  # type: ignore[method-assign,assignment]
    Validator.graph_validate = graph_validate  # type: ignore[method-assign]
    id_dict.convert_to_json_serializable = convert  # the name IDDict.to_id calls
    _installed = True


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON as it is, so that GX's conversion would return an equal value."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return not math.isnan(value)  # NaN: GX writes None
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False
