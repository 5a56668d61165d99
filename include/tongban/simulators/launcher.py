"""Start the simulators as subprocesses and stop them again, for ``make run`` and tests.

``running_simulators(state_dir)`` starts the partner and platform simulators on free loopback
ports, waits until both answer ``/healthz`` and yields their base URLs; on exit it always stops
them (SIGTERM, then kill). Each one's stderr goes to ``state_dir/<kind>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0
STOP_GRACE = 5.0
_TAIL_LINES = 30


@dataclass(frozen=True)
class SimulatorURLs:
    partners: str
    platform: str
    state_dir: Path | None = None  # where their state (and secrets, .credentials) live
    pids: dict[str, int] = field(default_factory=dict)  # kind -> process id (its workers are its children)


class SimulatorStartError(RuntimeError):
    """A simulator did not come up; the message carries the end of its stderr."""


def partner_base_url(urls: SimulatorURLs, division: str) -> str:
    """The base URL of one partner's API (append its wire format's path)."""
    return f"{urls.partners.rstrip('/')}/partners/{division}"


@dataclass
class _Simulator:
    kind: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    log_file: Path

    def stderr_tail(self) -> str:
        try:
            lines = self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-_TAIL_LINES:]) or "(empty)"


def _start(kind: str, state_dir: Path, registry_path: Path | None, host: str = "127.0.0.1") -> _Simulator:
    state_dir.mkdir(parents=True, exist_ok=True)
    ready_file = state_dir / f"{kind}.ready"
    ready_file.unlink(missing_ok=True)
    log_file = state_dir / f"{kind}.log"
    command = [
        sys.executable,
        "-m",
        "tongban.simulators",
        kind,
        "--host",
        host,
        "--port",
        "0",
        "--state-dir",
        str(state_dir),
        "--ready-file",
        str(ready_file),
    ]
    if registry_path is not None:
        command += ["--registry", str(registry_path)]
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return _Simulator(kind, process, ready_file, log_file)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_ready(sim: _Simulator, deadline: float, timeout: float) -> str:
    while True:
        code = sim.process.poll()
        if code is not None:
            raise SimulatorStartError(
                f"{sim.kind} simulator exited with code {code} before it was ready; "
                f"its output ({sim.log_file}):\n{sim.stderr_tail()}"
            )
        if sim.ready_file.exists():
            url = sim.ready_file.read_text(encoding="utf-8").strip()
            if url and _healthy(url):
                return url
        if time.monotonic() > deadline:
            raise SimulatorStartError(
                f"{sim.kind} simulator not ready after {timeout:.0f} s; its output ({sim.log_file}):\n"
                f"{sim.stderr_tail()}"
            )
        time.sleep(0.05)


def _stop(sim: _Simulator, grace: float = STOP_GRACE) -> None:
    if sim.process.poll() is None:
        sim.process.send_signal(signal.SIGTERM)
        try:
            sim.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            sim.process.kill()
            sim.process.wait()


@contextmanager
def _running(
    kinds: tuple[str, ...], state_dir: Path, registry_path: Path | None, timeout: float, host: str = "127.0.0.1"
) -> Iterator[dict[str, tuple[str, int]]]:
    sims: list[_Simulator] = []
    try:
        for kind in kinds:
            sims.append(_start(kind, Path(state_dir), registry_path, host))
        deadline = time.monotonic() + timeout
        yield {sim.kind: (_wait_ready(sim, deadline, timeout), sim.process.pid) for sim in sims}
    finally:
        for sim in sims:
            with contextlib.suppress(OSError):
                _stop(sim)


@contextmanager
def running_simulator(
    kind: str, state_dir: Path, registry_path: Path | None = None, timeout: float = START_TIMEOUT
) -> Iterator[str]:
    """One simulator (``partners`` or ``platform``) as a subprocess; yields its base URL."""
    with _running((kind,), state_dir, registry_path, timeout) as urls:
        yield urls[kind][0]


@contextmanager
def running_simulators(
    state_dir: Path, registry_path: Path | None = None, timeout: float = START_TIMEOUT, host: str = "127.0.0.1"
) -> Iterator[SimulatorURLs]:
    """Both simulators as subprocesses sharing ``state_dir``, listening on ``host`` (loopback by default; the
    host side of the workers' network in ``make celery-e2e``); yields their base URLs."""
    with _running(("partners", "platform"), state_dir, registry_path, timeout, host) as urls:
        yield SimulatorURLs(
            partners=urls["partners"][0],
            platform=urls["platform"][0],
            state_dir=Path(state_dir),
            pids={kind: pid for kind, (_, pid) in urls.items()},
        )
