"""Fixtures shared by the validation tests."""

from __future__ import annotations

import pytest
from item_fixtures import GUANGZHOU

from tongban.registry import Partner, load_registry


@pytest.fixture(scope="session")
def partner() -> Partner:
    return load_registry().partner(GUANGZHOU)
