"""Worker hosts on one machine for ``make celery-e2e``: one network namespace per Celery worker (root only).

``worker_hosts(names)`` builds a private network that exists only for the run: a bridge ``tongban-br`` on
the machine with :data:`HOST_IP` (``10.213.0.1/24``) and, per worker, a network namespace ``tongban-<name>``
joined to the bridge by a veth pair, holding ``10.213.0.<11+i>`` and its own loopback. A process started with
:meth:`Topology.exec` runs inside that namespace: it sees no interface of the machine (not its loopback,
where PostgreSQL and Redis listen) and reaches the machine only at ``HOST_IP``. Everything is deleted on
exit (the namespaces take their veth ends with them), and left-overs of a run that was killed are removed
before a new one starts. No address outside ``10.213.0.0/24`` and loopback is touched.

The services the workers need listen on ``HOST_IP``: SeaweedFS, the simulators and the api-server are started
bound to it. PostgreSQL and Redis are the machine's own, started before the session and listening on
127.0.0.1 only; rather than reconfigure and restart services shared with everything else on the machine
(or DNAT to loopback, which needs ``route_localnet`` and firewall rules on the machine), ``forward`` relays
``HOST_IP:port`` to ``127.0.0.1:port`` in user space: a small asyncio process owned by the run and stopped
with it (``python -m scripts.netns forward 10.213.0.1:5432=127.0.0.1:5432 …``).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

PREFIX = "tongban"
BRIDGE = f"{PREFIX}-br"
SUBNET = "10.213.0"
HOST_IP = f"{SUBNET}.1"
PREFIX_LEN = 24


@dataclass(frozen=True)
class Topology:
    host_ip: str  # the machine, as the workers see it
    addresses: dict[str, str]  # worker name -> its address in its namespace

    @staticmethod
    def namespace(name: str) -> str:
        return f"{PREFIX}-{name}"

    def exec(self, name: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run as a process of worker ``name``'s host (its network namespace; none: this machine's)."""
        return ["ip", "netns", "exec", self.namespace(name), *argv] if name in self.addresses else list(argv)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _veth(name: str) -> tuple[str, str]:
    """Interface names of the pair (at most 15 characters): machine side, namespace side."""
    return f"tbv-{name}"[:15], f"tbp-{name}"[:15]


def _remove(names: Sequence[str]) -> None:
    for name in names:
        _ip("netns", "delete", Topology.namespace(name), check=False)
        _ip("link", "delete", _veth(name)[0], check=False)
    _ip("link", "delete", BRIDGE, check=False)


@contextmanager
def worker_hosts(names: Sequence[str]) -> Iterator[Topology]:
    _remove(names)  # a previous run killed before it could clean up
    taken = _ip("-4", "route", "show", f"{SUBNET}.0/{PREFIX_LEN}").stdout.strip()
    if taken:
        raise RuntimeError(f"{SUBNET}.0/{PREFIX_LEN} is already routed on this machine ({taken}); not touching it")
    addresses = {name: f"{SUBNET}.{11 + i}" for i, name in enumerate(names)}
    try:
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{HOST_IP}/{PREFIX_LEN}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for name, address in addresses.items():
            ns, (outside, inside) = Topology.namespace(name), _veth(name)
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", outside, "master", BRIDGE, "up")
            _ip("link", "set", inside, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield Topology(HOST_IP, addresses)
    finally:
        _remove(names)


# --- the user-space TCP relay for services that listen on loopback only --------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _relay(listen: tuple[str, int], target: tuple[str, int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(handle, *listen)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _forward(pairs: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
    servers = [await _relay(listen, target) for listen, target in pairs]
    print("forwarding " + ", ".join(f"{a[0]}:{a[1]} -> {b[0]}:{b[1]}" for a, b in pairs), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def forward_command(pairs: dict[int, int], listen_host: str = HOST_IP) -> list[str]:
    """The relay as a command: ``listen_host:port`` -> ``127.0.0.1:port`` for each (listen port, target port)."""
    return [
        sys.executable,
        "-m",
        "scripts.netns",
        "forward",
        *(f"{listen_host}:{src}=127.0.0.1:{dst}" for src, dst in pairs.items()),
    ]


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "forward":
        sys.exit("usage: python -m scripts.netns forward HOST:PORT=HOST:PORT …")
    asyncio.run(_forward([(_address(a), _address(b)) for a, b in (arg.split("=", 1) for arg in sys.argv[2:])]))
