"""s3://bucket/prefix: models, adapters and data in an S3-compatible store, and the upload of
built repositories to the artifact store (boto3).

Endpoint, region and credentials come from the standard AWS environment (AWS_ENDPOINT_URL,
AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or workload identity), which the builder
Job sets from the operator's settings. Downloads land in $OPTIMODEL_MODEL_CACHE/s3/<bucket>/
<key>; a file whose size and ETag match the object is reused, so a second build of the same
prefix downloads nothing.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from optimodel.model_builder.errors import (
    BuildError,
    SourceAccessDeniedError,
    SourceNotFoundError,
    SourceUnavailableError,
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
)
from optimodel.model_builder.sources.base import Fetched, FetchSettings, SourceRequest
from optimodel.model_builder.sources.files import missing_files, select_files
from optimodel.model_builder.sources.retry import RetryPolicy, TransientFetchError, with_retries

T = TypeVar("T")
NOT_FOUND = frozenset({"NoSuchBucket", "NoSuchKey", "404", "NotFound"})
ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "401",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
    }
)
TRANSIENT = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "500",
        "502",
        "503",
        "504",
    }
)
ETAGS_FILE = ".optimodel-etags.json"
CREDENTIALS_FIX = (
    "the credentials the builder gets (operator setting sources.s3.credentialsSecret, or the "
    "build ServiceAccount's workload identity; AWS_* locally) must allow s3:ListBucket and "
    "s3:GetObject on it"
)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str, *, field: str) -> S3Location:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise SourceNotFoundError(
                f"{uri!r} is not an s3://bucket/key URI",
                field=field,
                fix="write s3://bucket/prefix",
            )
        return cls(parts.netloc, parts.path.lstrip("/"))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def s3_client(settings: FetchSettings) -> Any:
    """A boto3 S3 client for the configured endpoint; retries are ours (with_retries)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=60,
        # Path-style addressing works on every S3-compatible store (MinIO, Ceph, moto).
        s3={"addressing_style": "path"} if settings.s3_endpoint else {},
    )
    # A fresh session reads the credentials from the environment now (boto3's default
    # session would keep the first ones it found for the life of the process).
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region, config=config
    )


def _error_code(error: Exception) -> str | None:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    if code is None:
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None if code is None else str(code)


def _classify(
    error: Exception,
    on_missing: Callable[[str], BuildError],
    on_denied: Callable[[str], BuildError],
) -> BuildError | TransientFetchError:
    """A boto3 failure as a verdict or a retryable failure."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(error, ClientError):
        code = _error_code(error) or "Unknown"
        message = error.response.get("Error", {}).get("Message") or code
        if code in NOT_FOUND:
            return on_missing(code)
        if code in ACCESS_DENIED:
            return on_denied(f"{code}: {message}")
        if code in TRANSIENT:
            return TransientFetchError(f"the store answered {code}: {message}")
        return on_denied(f"{code}: {message}")
    if isinstance(error, NoCredentialsError):
        return on_denied("no credentials found")
    if isinstance(error, EndpointConnectionError | ConnectionError | ReadTimeoutError):
        return TransientFetchError(f"cannot reach the store: {error}")
    if isinstance(error, BotoCoreError):
        return TransientFetchError(f"{type(error).__name__}: {error}")
    raise error


def _retrying(
    call: Callable[[], T],
    policy: RetryPolicy,
    classify: Callable[[Exception], BuildError | TransientFetchError],
    unavailable: Callable[[str], BuildError],
) -> T:
    def attempt() -> T:
        try:
            return call()
        except Exception as error:
            raise classify(error) from error

    try:
        return with_retries(attempt, policy)
    except TransientFetchError as error:
        raise unavailable(f"{error.what} ({policy.attempts} attempts with backoff)") from error


class S3Source:
    """Objects under an s3:// prefix (model, adapter) or one object (data)."""

    def fetch(self, request: SourceRequest, settings: FetchSettings) -> Fetched:
        location = S3Location.parse(request.uri, field=request.field)
        client = s3_client(settings)
        where = f" at {settings.s3_endpoint}" if settings.s3_endpoint else ""

        def missing(code: str) -> BuildError:
            what = (
                f"bucket {location.bucket!r} does not exist{where}"
                if code == "NoSuchBucket"
                else f"no object {location.uri!r}{where}"
            )
            return SourceNotFoundError(
                f"{request.uri!r}: {what} ({code})",
                field=request.field,
                fix="check the bucket and key (and sources.s3.endpoint for non-AWS stores)",
            )

        def denied(detail: str) -> BuildError:
            return SourceAccessDeniedError(
                f"{request.uri!r}: access denied ({detail})",
                field=request.field,
                fix=CREDENTIALS_FIX,
            )

        def unavailable(detail: str) -> BuildError:
            return SourceUnavailableError(
                f"{request.uri!r}: {detail}",
                field=request.field,
                fix="check sources.s3.endpoint and that the builder can reach it",
            )

        def classify(error: Exception) -> BuildError | TransientFetchError:
            return _classify(error, missing, denied)

        def run(call: Callable[[], T]) -> T:
            return _retrying(call, settings.retry, classify, unavailable)

        target = settings.cache_dir / "s3" / location.bucket
        if request.kind == "data":
            head = run(lambda: client.head_object(Bucket=location.bucket, Key=location.key))
            objects = {location.key: (int(head["ContentLength"]), str(head.get("ETag", "")))}
            names = {location.key: location.key}
            selected = [location.key]
        else:
            prefix = location.key.rstrip("/") + "/" if location.key else ""
            objects = run(lambda: _list(client, location.bucket, prefix))
            names = {key.removeprefix(prefix): key for key in objects}
            selected = select_files(names, request.kind)
            problem = missing_files(selected, request.kind) if objects else "no objects"
            if problem is not None:
                raise SourceNotFoundError(
                    f"{request.uri!r}{where}: the prefix has {problem}",
                    field=request.field,
                    fix="upload the model folder (config.json, weights, tokenizer) under it"
                    if request.kind == "model"
                    else "upload the adapter folder (adapter_config.json, adapter weights)",
                )
        downloaded = reused = 0
        etags = _read_etags(target)
        for name in selected:
            key = names[name]
            size, etag = objects[key]
            local = target / key
            if local.is_file() and local.stat().st_size == size and etags.get(key) == etag:
                reused += 1
                continue
            local.parent.mkdir(parents=True, exist_ok=True)
            run(functools.partial(_download_atomically, client, location.bucket, key, local))
            etags[key] = etag
            downloaded += 1
        _write_etags(target, etags)
        return Fetched(
            target / location.key,
            request.uri,
            origin=f"{location.uri}{where}",
            files=tuple(selected),
            downloaded=downloaded,
            reused=reused,
        )


def _list(client: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    objects: dict[str, tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = str(item["Key"])
            if not key.endswith("/"):
                objects[key] = (int(item["Size"]), str(item.get("ETag", "")))
    return objects


def _download_atomically(client: Any, bucket: str, key: str, local: Path) -> None:
    # A concurrent build of the same prefix may read the cache: never show a partial file.
    handle, temporary = tempfile.mkstemp(prefix=".part-", dir=local.parent)
    os.close(handle)
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with Path(temporary).open("wb") as stream:
            shutil.copyfileobj(body, stream, 1 << 20)
        Path(temporary).replace(local)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _put(client: Any, bucket: str, key: str, path: Path) -> None:
    with path.open("rb") as stream:
        client.put_object(Bucket=bucket, Key=key, Body=stream)


def _read_etags(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / ETAGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_etags(folder: Path, etags: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".part-", dir=folder)
    with os.fdopen(handle, "w") as stream:
        json.dump(etags, stream, sort_keys=True)
    Path(temporary).replace(folder / ETAGS_FILE)


def upload_folder(
    folder: Path, destination: str, settings: FetchSettings, *, field: str, last: str
) -> list[str]:
    """Upload every file under `folder` to the s3:// prefix `destination`; the files named
    `last` (e.g. report.json) go after all others, so their presence marks a complete upload.
    Returns the keys written."""
    location = S3Location.parse(destination, field=field)
    client = s3_client(settings)
    prefix = location.key.rstrip("/")

    def missing(code: str) -> BuildError:
        return StorageNotFoundError(
            f"{destination!r}: bucket {location.bucket!r} does not exist ({code})",
            field=field,
            fix="create the bucket, or point the artifact store at an existing one",
        )

    def denied(detail: str) -> BuildError:
        return StorageAccessDeniedError(
            f"{destination!r}: the store refused the upload ({detail})",
            field=field,
            fix="the upload's credentials (storage.s3.credentialsSecret or the operator's "
            "artifactStore.s3) must allow s3:PutObject on the prefix",
        )

    def unavailable(detail: str) -> BuildError:
        return StorageError(
            f"{destination!r}: {detail}",
            field=field,
            fix="check the store's endpoint and that the Job can reach it",
        )

    def classify(error: Exception) -> BuildError | TransientFetchError:
        return _classify(error, missing, denied)

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)
    written = []
    for path in files:
        key = "/".join(part for part in (prefix, path.relative_to(folder).as_posix()) if part)
        _retrying(
            functools.partial(_put, client, location.bucket, key, path),
            settings.retry,
            classify,
            unavailable,
        )
        written.append(key)
    return written
