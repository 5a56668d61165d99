"""Measuring helpers shared by the benchmarks (imported as a sibling module: run them as scripts)."""

from __future__ import annotations

import threading
from pathlib import Path


def peak_rss_gb() -> float:
    """This process's peak resident set size (``VmHWM``), in GB.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over ``execve``, so a phase started from a
    big parent process would report the parent's peak as its own.
    """
    return _status_kb("VmHWM") / 1024**2


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class AnonPeak:
    """Peak anonymous memory (``RssAnon``: what the process allocated, not file pages it maps),
    sampled every 2 ms by a thread while the block runs.

    Memory-mapped files show in ``VmHWM`` with every page the kernel maps around a touched one
    (fault-around), though those pages stay in the page cache, shared and reclaimable; this
    figure is the memory the work itself needs.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
            self._stop.wait(self.interval)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))

    @property
    def gb(self) -> float:
        return self.peak_kb / 1024**2


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and every process below it, including
    children that have ended and been waited for."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def tree_rss_gb(pid: int) -> float:
    """Resident memory of a process and every process below it now, in GB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for process in (root, *root.children(recursive=True)):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 1024**3
