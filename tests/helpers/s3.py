"""A real S3-compatible server on loopback for the tests: moto's server (``moto[server]``) in its
own process on a free port, with one bucket, a read-write IAM user and a read-only IAM user.

Inside ``with s3.authenticated():`` the server enforces IAM authentication (signed requests,
known access keys, the users' policies): a wrong secret or a read-only user is refused as by
AWS. Outside it, requests are not checked: moto 5.2's server computes a different signature for
signed requests whose query has a ``/`` (e.g. ListObjectsV2 with ``prefix=a/``, which s3fs sends
on every ``info``/``exists`` of a missing key) and refuses them, so whole jobs run unauthenticated.

``with MotoS3() as s3:`` starts it; ``s3.storage_options(s3.rw)`` are the job spec's
``storage_options`` for a user (s3fs keyword arguments), ``s3.fs(s3.rw)`` an s3fs filesystem,
``s3.gdal_env(s3.rw)`` a rasterio environment in which GDAL's ``/vsis3/`` reads from the server.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request

REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    bucket = "landslide-jobs"

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.rw: tuple[str, str] = ("", "")
        self.ro: tuple[str, str] = ("", "")

    def __enter__(self) -> MotoS3:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait()
            self._setup()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _wait(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on {self.endpoint} did not answer in {timeout:g} s") from None
                time.sleep(0.1)

    def _setup(self) -> None:
        import boto3

        admin = {
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "aws_access_key_id": "admin",
            "aws_secret_access_key": "admin",
        }
        iam = boto3.client("iam", **admin)

        def user(name: str, actions: list[str]) -> tuple[str, str]:
            iam.create_user(UserName=name)
            iam.put_user_policy(
                UserName=name,
                PolicyName=f"{name}-s3",
                PolicyDocument=json.dumps(
                    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
                ),
            )
            key = iam.create_access_key(UserName=name)["AccessKey"]
            return key["AccessKeyId"], key["SecretAccessKey"]

        self.rw = user("jobs-rw", ["s3:*"])
        self.ro = user("jobs-ro", ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"])
        boto3.client("s3", **admin).create_bucket(Bucket=self.bucket)

    def _set_auth(self, no_auth_requests: str) -> None:
        req = urllib.request.Request(
            self.endpoint + "/moto-api/reset-auth",
            data=no_auth_requests.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(req, timeout=10).read()

    @contextlib.contextmanager
    def authenticated(self):
        """Every request in this block must be signed by a known key and allowed by its policy."""
        self._set_auth("0")
        try:
            yield self
        finally:
            self._set_auth("inf")

    # -- clients ------------------------------------------------------------------------------------
    def storage_options(self, keys: tuple[str, str] | None = None, endpoint: str | None = None, **extra) -> dict:
        key, secret = keys or self.rw
        return {
            "key": key,
            "secret": secret,
            "client_kwargs": {"endpoint_url": endpoint or self.endpoint, "region_name": REGION},
            **extra,
        }

    def fs(self, keys: tuple[str, str] | None = None):
        import s3fs

        opts = self.storage_options(keys)
        return s3fs.S3FileSystem(skip_instance_cache=True, **opts)

    def gdal_env(self, keys: tuple[str, str] | None = None):
        import rasterio
        from rasterio.session import AWSSession

        key, secret = keys or self.rw
        session = AWSSession(
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name=REGION,
            endpoint_url=f"127.0.0.1:{self.port}",
        )
        return rasterio.Env(
            session=session, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE", GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"
        )
