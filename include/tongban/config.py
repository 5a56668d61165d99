"""Where runtime state lives. Everything is under one folder, ``$TONGBAN_HOME`` (default ``./var``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

CHINA_TZ = ZoneInfo("Asia/Shanghai")  # partner systems keep local time without an offset


def home(env: Mapping[str, str] | None = None) -> Path:
    """``$TONGBAN_HOME`` of ``env`` (default: this process's environment)."""
    return Path((os.environ if env is None else env).get("TONGBAN_HOME", "var")).resolve()


def storage_url() -> str:
    """Root of the object store that tasks pass files through (``file://`` by default, or ``s3://``)."""
    return os.environ.get("TONGBAN_STORAGE_URL", home().as_uri())


def max_critical_rate() -> float:
    """Above this share of records failing a critical check, a partner is held back whole for the run."""
    return float(os.environ.get("TONGBAN_MAX_CRITICAL_RATE", "0.2"))


def max_removal_rate() -> float:
    """Above this share of a partner's published items removed by one pull (or its declared total shrinking
    by more than this share against the last published full pull), the removals wait for a person to confirm."""
    return float(os.environ.get("TONGBAN_MAX_REMOVAL_RATE", "0.2"))
