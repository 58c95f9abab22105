"""A real S3 API for tests: moto's server mode (ThreadedMotoServer) on 127.0.0.1, with IAM
enforcement switched on after setup, so wrong or too narrow credentials get the answers AWS
gives (AccessDenied, InvalidAccessKeyId), not a silent success."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REGION = "us-east-1"


@dataclass(frozen=True)
class Keys:
    """An IAM user's access key pair (environment variables as the builder reads them)."""

    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


class S3Server:
    """moto serving S3 (and IAM, for the keys) over HTTP."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._admin = Keys("AKIAADMIN0000000000", "admin-secret")  # until IAM is enforced
        self._admin = self.user("admin", buckets=["*"])

    def client(self, service: str = "s3", keys: Keys | None = None) -> Any:
        import boto3

        keys = keys or self._admin
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def env(self, keys: Keys) -> dict[str, str]:
        """What the builder Job's environment holds to reach this store with `keys`."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, **keys.env()}

    def user(self, name: str, *, buckets: list[str]) -> Keys:
        """An IAM user allowed everything on `buckets` (and nothing else)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        resources = [f"arn:aws:s3:::{b}" for b in buckets] + [
            f"arn:aws:s3:::{b}/*" for b in buckets
        ]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": resources}],
        }
        iam.put_user_policy(UserName=name, PolicyName="buckets", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def upload_folder(self, bucket: str, prefix: str, folder: Path) -> list[str]:
        s3 = self.client()
        keys = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            s3.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys

    def keys_under(self, bucket: str, prefix: str) -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def enforce_iam(self, on: bool) -> None:
        """From now on every request must be signed by an IAM user whose policy allows it."""
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0" if on else b"inf",
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        self.enforce_iam(False)
        self._server.stop()


@contextmanager
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()
