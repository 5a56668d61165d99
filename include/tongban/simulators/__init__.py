"""Simulators for local runs and tests: partner catalogue APIs and the provincial platform.

``generate_catalogue``, ``defects`` and ``province_quirks`` (from :mod:`.catalogue`) are importable from here; they load
lazily so that running the platform simulator does not import the generator. The HTTP apps
(:mod:`.partners`, :mod:`.platform`) and the process launcher (:mod:`.launcher`) are imported from
their own modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tongban.simulators.catalogue import (
        DEFECT_KINDS,
        defects,
        generate_catalogue,
        province_quirks,
        reference_time,
    )

__all__ = ["DEFECT_KINDS", "defects", "generate_catalogue", "province_quirks", "reference_time"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tongban.simulators import catalogue

        return getattr(catalogue, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
