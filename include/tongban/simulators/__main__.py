"""Run one simulator: ``python -m tongban.simulators {partners,platform} --state-dir DIR [options]``.

Binds the socket itself (``--port 0`` picks a free port), writes the base URL to ``--ready-file``
once it serves, and exits cleanly (code 0) on SIGTERM or SIGINT. The partner simulator generates
every partner's catalogue before it serves (in worker processes for a large registry).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

KINDS = ("partners", "platform")


def build_app(kind: str, state_dir: Path, registry_path: Path | None = None) -> FastAPI:
    """The app of one simulator kind (imports only what that kind needs)."""
    if kind == "partners":
        from tongban.registry import load_registry
        from tongban.simulators.partners import create_partner_app

        app = create_partner_app(load_registry(registry_path), state_dir)
        # every catalogue before the first request, as a real partner holds its own already
        app.state.store.pregenerate(os.cpu_count() or 1)
        return app
    if kind == "platform":
        from tongban.registry import load_registry
        from tongban.simulators.platform import create_platform_app

        return create_platform_app(state_dir, load_registry(registry_path))
    raise ValueError(f"unknown simulator {kind!r}; expected one of {', '.join(KINDS)}")


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class ReadyServer(uvicorn.Server):
    """A uvicorn server that calls ``on_ready`` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.on_ready()


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tongban.simulators", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS, help="which simulator to run")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--state-dir", type=Path, required=True, help="folder for persistent state")
    parser.add_argument("--registry", type=Path, help="partner registry file (default: $TONGBAN_REGISTRY or packaged)")
    parser.add_argument("--ready-file", type=Path, help="file to write the base URL to once serving")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    args = parser.parse_args(argv)

    args.state_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(args.kind, args.state_dir, args.registry)
    gc.freeze()  # what the app holds (every catalogue) lives as long as the process: out of full collections
    sock = bind(args.host, args.port)
    url = base_url(args.host, sock.getsockname()[1])

    def ready() -> None:
        if args.ready_file:
            write_atomically(args.ready_file, url + "\n")
        print(f"{args.kind} simulator serving at {url}", file=sys.stderr, flush=True)

    config = uvicorn.Config(app, log_level=args.log_level, lifespan="off", access_log=False)
    server = ReadyServer(config, ready)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler that
    # was there before it: make that one exit with code 0, so a stop on request counts as success.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
