"""Environment and volumes that reach the artifact store from builder and serving pods."""

from __future__ import annotations

from typing import Any

from optimodel.operator import api


def s3_env(s3: api.S3Storage) -> list[dict[str, Any]]:
    """aws-cli environment: region, endpoint, and keys from the Secret when one is named."""
    env: list[dict[str, Any]] = []
    if s3.region:
        env += [
            {"name": "AWS_REGION", "value": s3.region},
            {"name": "AWS_DEFAULT_REGION", "value": s3.region},
        ]
    if s3.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint})
    secret = s3.credentials_secret
    if secret is not None:
        for variable, key in (
            ("AWS_ACCESS_KEY_ID", secret.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", secret.secret_access_key_key),
        ):
            env.append(
                {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
            )
    return env
