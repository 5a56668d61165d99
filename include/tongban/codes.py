"""Item and organisation codes: USCC (GB 32100-2015), 组织机构代码 (GB 11714), 实施编码 layout.

See shared/DOMAIN.md. The check characters are computed here; whether a code is right is judged
in one place, vectorised, by validation (:func:`tongban.validation.derived.uscc_checks`), which calls
these once per distinct code. They never raise on bad input, they answer ``None`` so validation can
report every problem at once.
"""

from __future__ import annotations

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

USCC_LENGTH = 18
USCC_PATTERN = f"[{USCC_ALPHABET}]{{{USCC_LENGTH}}}"  # the shape of a USCC (its check characters aside)
TASK_CODE_LENGTH = 31  # 实施编码 = USCC (18) + 行使层级 (1) + 基本编码 (12)
CATALOG_CODE_LENGTH = 12


def uscc_check_char(first17: str) -> str | None:
    """The GB 32100 check character for the first 17 characters, or None if any is invalid."""
    if len(first17) != 17:
        return None
    total = 0
    for ch, weight in zip(first17, _USCC_WEIGHTS, strict=True):
        value = _USCC_VALUE.get(ch)
        if value is None:
            return None
        total += value * weight
    return USCC_ALPHABET[(31 - total % 31) % 31]


def org_code_check_char(first8: str) -> str | None:
    """The GB 11714 check character of a 组织机构代码 body (8 characters), or None if invalid."""
    if len(first8) != 8:
        return None
    total = 0
    for ch, weight in zip(first8, _ORG_WEIGHTS, strict=True):
        if ch.isdigit():
            value = int(ch)
        elif "A" <= ch <= "Z":
            value = ord(ch) - 55
        else:
            return None
        total += value * weight
    c = 11 - total % 11
    return {10: "X", 11: "0"}.get(c, str(c))


def make_uscc(authority: str, category: str, division: str, org_body: str) -> str:
    """Build a valid USCC from its parts (org_body: the 8-character 组织机构代码 body)."""
    org = org_body + (org_code_check_char(org_body) or "")
    first17 = authority + category + division + org
    check = uscc_check_char(first17)
    if check is None or len(org) != 9:
        raise ValueError(f"cannot build a USCC from {authority!r}, {category!r}, {division!r}, {org_body!r}")
    return first17 + check


def make_task_code(uscc: str, level: str, catalog_code: str) -> str:
    return f"{uscc}{level}{catalog_code}"
