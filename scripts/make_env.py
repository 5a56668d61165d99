"""`make env`: write .env for the docker-compose deployment from .env.example.

A new Fernet key for AIRFLOW_FERNET_KEY (Airflow encrypts Connections and Variables with it), a random
value for every `change-me`, AIRFLOW_UID set to the current user. An existing .env is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = "change-me"


def render(example: str, uid: int) -> str:
    lines = []
    for line in example.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            if key == "AIRFLOW_FERNET_KEY" and not value:
                value = Fernet.generate_key().decode()
            elif key == "AIRFLOW_UID":
                value = str(uid)
            elif value == PLACEHOLDER:
                value = secrets.token_urlsafe(30)
            line = f"{key}={value}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--example", type=Path, default=REPO / ".env.example")
    parser.add_argument("--out", type=Path, default=REPO / ".env")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; not overwritten (delete it to start over)", file=sys.stderr)
        return 1
    text = render(args.example.read_text(encoding="utf-8"), os.getuid())
    args.out.touch(mode=0o600)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: a new Fernet key and random secrets; put the real partners' secrets in it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
