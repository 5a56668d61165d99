"""The launcher and the CLI: real subprocesses, ready files, clean stops, readable start failures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tongban.simulators.launcher import SimulatorStartError, SimulatorURLs, partner_base_url, running_simulator


def test_launched_servers_listen_on_loopback(live: SimulatorURLs) -> None:
    for url in (live.partners, live.platform):
        assert url.startswith("http://127.0.0.1:") and requests.get(f"{url}/healthz", timeout=10).ok
    assert partner_base_url(live, "440100") == f"{live.partners}/partners/440100"


def test_start_failure_carries_the_simulator_stderr(tmp_path: Path) -> None:
    registry = tmp_path / "partners.yaml"
    registry.write_text(
        "home: {division: '430981', name: 沅江市}\nseed: 1\n"
        "partners:\n  - {division: '999999', name: 不存在市, items: 1, format: national_json}\n",
        encoding="utf-8",
    )
    with pytest.raises(SimulatorStartError) as failed, running_simulator("partners", tmp_path, registry, timeout=20):
        pass
    message = str(failed.value)
    assert "exited with code" in message and "999999" in message  # the registry error, from its stderr


def test_cli_writes_ready_file_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    command = [
        sys.executable,
        "-m",
        "tongban.simulators",
        "partners",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path),
        "--ready-file",
        str(ready),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, "simulator did not get ready"
            time.sleep(0.05)
        url = ready.read_text(encoding="utf-8").strip()
        assert url.startswith("http://127.0.0.1:") and requests.get(f"{url}/healthz", timeout=10).ok
        process.terminate()
        assert process.wait(timeout=10) == 0
        assert not ready.exists()  # removed on the way out, so it never points at a dead server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
